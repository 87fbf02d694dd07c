"""A trained family's outputs: val/test scores → ``metrics/<name>.json``, ``plots/<name>/``, MLflow.

``metrics/<name>.json`` is a DVC metrics file; under ``plots/<name>/`` are the ROC points and the
confusion pairs (DVC plots), the per-material predictions, the per-element F1 periodic tables and
the ROC figure of the test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xastopo.training import metrics, plots, tracking

SPLITS = ("val", "test")


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o)}")


def write_json(path: str | Path, obj: Any) -> None:
    """Sorted, indented JSON (the format of every metrics and report file), numpy values as numbers."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_plain) + "\n")


def write_split(name: str, split: str, a: dict, prob: np.ndarray, threshold: float) -> tuple[dict, list]:
    """Scores of one split (logged to the active run) and its DVC plot files; (evaluation, ROC points)."""
    import mlflow

    ev = metrics.evaluate(a["y"], prob, threshold, a["Z"], a["mask"])
    mlflow.log_metrics(tracking.flat_metrics(split, ev))
    pdir = Path("plots") / name
    roc = metrics.roc_points(a["y"], prob)
    write_json(pdir / f"roc_{split}.json", {"roc": roc})
    pd.DataFrame({"actual": [metrics.CLASSES[int(v)] for v in a["y"]],
                  "predicted": [metrics.CLASSES[int(v >= threshold)] for v in prob]}
                 ).to_csv(pdir / f"confusion_{split}.csv", index=False)
    pd.DataFrame({"mp_id": a["ids"], "y": a["y"], "prob": prob}).to_csv(pdir / f"predictions_{split}.csv",
                                                                       index=False)
    return ev, roc


def write_test_figures(name: str, ev: dict, roc: list) -> None:
    """Per-element F1 periodic tables of both classes and the ROC figure (test), logged as artifacts."""
    import mlflow

    pdir = Path("plots") / name
    pe = ev["per_element"]
    counts = {k: v["n"] for k, v in pe.items()}
    for cls in ("topological", "trivial"):
        png = pdir / f"per_element_f1_{cls}_test.png"
        plots.periodic_table_heatmap({k: v[f"f1_{cls}"] for k, v in pe.items()},
                                     f"{name}: per-element F1 ({cls}), test", png, counts)
        mlflow.log_artifact(str(png), "plots")
    plots.roc_figure({name: roc}, f"{name}: ROC (test)", pdir / "roc_test.png")
    mlflow.log_artifact(str(pdir / "roc_test.png"), "plots")


def write_outputs(name: str, run, data: dict, probs: dict, threshold: float, extra: dict) -> dict:
    """Evaluate val and test, write the plots and ``metrics/<name>.json``; return the metrics dict."""
    res = {"model": name, "threshold": threshold, **extra}
    for split in SPLITS:
        res[split], roc = write_split(name, split, data[split], probs[split], threshold)
        if split == "test":
            write_test_figures(name, res[split], roc)
    res["mlflow_run_id"] = run.info.run_id
    write_json(Path("metrics") / f"{name}.json", res)
    return res
