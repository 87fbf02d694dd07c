"""Split materials 70/15/15, balanced per absorbing element and 3-class label (the paper's rule).

Elements are visited from rarest to most common. For each element and class the target counts are
the fractions of all materials with that element and class; materials already placed (through a
rarer element) count toward them, and the unplaced ones fill what is left, in a seeded random
order. A material is placed once, so all its absorbers land in the same split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xastopo.data.assemble import only_from

SPLITS = ("train", "val", "test")


def targets(n: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """Integer targets summing to n, rounding the validation and test shares (train gets the rest)."""
    val = int(round(n * fractions[1]))
    test = int(round(n * fractions[2]))
    if val + test > n:
        test = max(0, n - val)
    return np.array([n - val - test, val, test])


def split_materials(
    records: pd.DataFrame,
    fractions: tuple[float, float, float],
    seed: int,
    train_only_sources: list[str] | None = None,
) -> pd.DataFrame:
    """``records``: one row per (mp_id, absorbing_element) with ``label3`` (and ``sources`` when
    ``train_only_sources`` is given). Returns mp_id → split.

    Records made only of ``train_only_sources`` spectra take no part in the balancing: materials
    with nothing else go to train, and a material that also has other records is placed by those
    (its extra absorbers follow it), so the other materials are split exactly as without them.
    """
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    train_only: list[str] = []
    if train_only_sources:
        only = only_from(records["sources"], train_only_sources)
        train_only = sorted(set(records.loc[only, "mp_id"]) - set(records.loc[~only, "mp_id"]))
        records = records[~only]
    rng = np.random.default_rng(seed)
    mat_label = records.drop_duplicates("mp_id").set_index("mp_id")["label3"]
    placed: dict[str, str] = {}
    counts = records.groupby("absorbing_element")["mp_id"].nunique().sort_values(kind="stable")
    order = sorted(counts.index, key=lambda el: (counts[el], el))
    for el in order:
        mats = sorted(records.loc[records["absorbing_element"] == el, "mp_id"].unique())
        for cls in sorted(mat_label.loc[mats].unique()):
            group = [m for m in mats if mat_label[m] == cls]
            t = targets(len(group), fractions)
            have = np.array([sum(placed.get(m) == s for m in group) for s in SPLITS])
            free = [m for m in group if m not in placed]
            free = [free[i] for i in rng.permutation(len(free))]
            need = np.maximum(t - have, 0)
            # fill val and test first (the small shares), then train
            for k in (1, 2, 0):
                take, free = free[: need[k]], free[need[k]:]
                for m in take:
                    placed[m] = SPLITS[k]
            for m in free:  # targets already met through rarer elements: the rest trains
                placed[m] = "train"
    for m in train_only:
        placed[m] = "train"
    out = pd.DataFrame({"mp_id": list(placed), "split": list(placed.values())})
    return out.sort_values("mp_id").reset_index(drop=True)


def split_all(
    records: pd.DataFrame,
    compositions: pd.DataFrame,
    fractions: tuple[float, float, float],
    seed: int,
    train_only_sources: list[str] | None = None,
) -> pd.DataFrame:
    """One split for every usable labeled material, whatever data it has: mp_id → split, pool.

    Pool ``spectra``: materials with shipped spectra (records not made only of ``train_only_sources``),
    split per absorbing element × 3-class exactly as :func:`split_materials` always did, so the shipped
    validation and test materials do not move. Pool ``composition``: every other labeled material
    (including those with only simulated spectra), split by the same rule over the elements of its
    formula (``compositions`` from :func:`xastopo.data.composition.labeled_compositions`).
    """
    from xastopo.data.composition import element_rows

    shipped = records
    if train_only_sources:
        shipped = records[~only_from(records["sources"], train_only_sources)]
    first = split_materials(shipped, fractions, seed).assign(pool="spectra")
    rest = compositions[~compositions["mp_id"].isin(set(first["mp_id"]))]
    second = split_materials(element_rows(rest), fractions, seed).assign(pool="composition")
    out = pd.concat([first, second], ignore_index=True)
    return out.sort_values("mp_id").reset_index(drop=True)


def split_table(records: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Materials per element × 3-class × split, with the target fractions' deviation."""
    r = records[["mp_id", "absorbing_element", "label3"]].merge(split, on="mp_id")
    t = (r.groupby(["absorbing_element", "label3", "split"])["mp_id"].nunique()
         .unstack("split", fill_value=0).reindex(columns=list(SPLITS), fill_value=0).reset_index())
    t["total"] = t[list(SPLITS)].sum(axis=1)
    return t
