"""Label rules: which materials count as topological / trivial, and their 3-class label."""

from __future__ import annotations

import pandas as pd

BINARY = ("trivial", "topological")
LABEL3 = ("trivial", "TI", "TSM")
LABEL3_INDEX = {k: i for i, k in enumerate(LABEL3)}


def usable_labels(labels: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep ids with an unambiguous binary label and a consistent 3-class label.

    ``conflict`` (sources disagree) and ``unknown`` (no vote) are not labels; a topological id must
    be TI or TSM and a trivial id must have label3 ``trivial``. Returns the usable rows (mp_id,
    label, label3, y, y3) and the count of rows dropped per reason.
    """
    reasons: dict[str, int] = {}
    lab = labels.copy()
    lab["label"] = lab["label"].fillna("").astype(str)
    lab["label3"] = lab["label3"].fillna("").astype(str)
    dup = lab["mp_id"].duplicated(keep=False)
    if dup.any():
        reasons["duplicate_mp_id"] = int(dup.sum())
        lab = lab[~dup]
    for name in ("conflict", "unknown"):
        reasons[f"label_{name}"] = int((lab["label"] == name).sum())
    other = ~lab["label"].isin(BINARY + ("conflict", "unknown"))
    reasons["label_invalid_value"] = int(other.sum())
    lab = lab[lab["label"].isin(BINARY)]
    consistent = ((lab["label"] == "trivial") & (lab["label3"] == "trivial")) | (
        (lab["label"] == "topological") & lab["label3"].isin(["TI", "TSM"])
    )
    reasons["label3_inconsistent"] = int((~consistent).sum())
    lab = lab[consistent]
    out = lab[["mp_id", "label", "label3"]].copy()
    out["y"] = (out["label"] == "topological").astype("int64")
    out["y3"] = out["label3"].map(LABEL3_INDEX).astype("int64")
    return out.reset_index(drop=True), reasons
