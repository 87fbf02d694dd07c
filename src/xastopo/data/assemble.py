"""Assemble: site spectra → one record per (material, absorbing element), labels joined.

Sites of one element are combined weighted by multiplicity: with a structure, symmetry-equivalent
sites form one class whose single spectrum counts with the class size; a second spectrum of the same
class is a duplicate and counts once. Without a structure every present site weighs the same. The
weights are fixed here; the weighted average itself is taken after resampling by the Preprocessor
(the same code that combines sites in the CLI and the service).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from xastopo.data.ingest import EXPERIMENTAL_SOURCES
from xastopo.data.labels import usable_labels
from xastopo.data.validation import real_range
from xastopo.preprocessing.spectrum import max_negative_jump

RECORD_COLUMNS = [
    "mp_id", "absorbing_element", "spectrum_ids", "sources", "sites", "weights", "energy", "mu",
    "weighting", "n_classes_present", "n_classes_total",
]


def own_range_normalized(energy: np.ndarray, mu: np.ndarray, post_edge_ev: float, tol: float) -> np.ndarray:
    """Normalize a spectrum on its own real range (used only to judge it physical)."""
    lo, hi = real_range(energy, mu, tol)
    e, m = energy[lo : hi + 1], np.asarray(mu[lo : hi + 1], float)
    post = m[e >= e[-1] - post_edge_ev].mean()
    step = post - m[0]
    return (m - m[0]) / step if step > 0 else np.full_like(m, np.nan)


def assemble(
    sites: pd.DataFrame,
    labels: pd.DataFrame,
    equivalence: dict[str, dict[int, tuple[int, int, str]]],
    exclude_elements: list[str],
    max_negative_jump_threshold: float,
    train_sources: list[str],
    source_priority: list[str],
    post_edge_ev: float,
    flat_run_tol: float = 0.0,
    simulated_sources: list[str] | None = None,
    simulated_required_elements: dict[str, set[str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Return (labeled records, unlabeled records, experimental rows, report).

    Materials made only of ``simulated_sources`` records must have every element in
    ``simulated_required_elements[mp_id]`` with all its unique sites, or they are dropped.
    """
    report: dict = {}
    drop: Counter = Counter()
    experimental = sites[sites["source"].isin(EXPERIMENTAL_SOURCES)].reset_index(drop=True)
    s = sites[~sites["source"].isin(EXPERIMENTAL_SOURCES)]
    drop["experimental_kept_for_experimental_path"] = len(experimental)
    excl = s["absorbing_element"].isin(exclude_elements)
    drop["excluded_element"] = int(excl.sum())
    s = s[~excl]
    not_train = ~s["source"].isin(train_sources)
    drop["source_not_in_train_sources"] = int(not_train.sum())
    s = s[~not_train].copy()

    # unphysical spectra: a large drop anywhere in the edge-step-normalized spectrum
    jumps = np.array([
        max_negative_jump(own_range_normalized(e, m, post_edge_ev, flat_run_tol))
        for e, m in zip(s["energy"], s["mu"], strict=True)
    ])
    bad = ~(jumps <= max_negative_jump_threshold)  # NaN (no edge step) counts as bad
    drop["unphysical_negative_jump_or_no_edge"] = int(bad.sum())
    s = s[~bad].copy()

    # the same site from several sources: keep the highest-priority source
    rank = {src: i for i, src in enumerate(source_priority)}
    s["_rank"] = s["source"].map(lambda x: rank.get(x, len(rank)))
    s["_site"] = s["site"].fillna(-1).astype("int64")
    s = s.sort_values(["mp_id", "absorbing_element", "_site", "_rank", "spectrum_id"])
    has_site = s["_site"] >= 0
    dup = has_site & s.duplicated(["mp_id", "absorbing_element", "_site"], keep="first")
    drop["duplicate_site_lower_priority_source"] = int(dup.sum())
    s = s[~dup]
    # one method per (material, element): never mix, e.g., shipped FEFF9 and simulated FEFF10 sites
    # (their site indices refer to different structure files, and their energy scales differ)
    best = s.groupby(["mp_id", "absorbing_element"])["_rank"].transform("min")
    other = s["_rank"] > best
    drop["other_source_for_same_element"] = int(other.sum())
    s = s[~other]

    records = []
    weighting_counts: Counter = Counter()
    n_symmetry_duplicates = 0
    n_partial = 0
    for (mp, el), g in s.groupby(["mp_id", "absorbing_element"], sort=True):
        eq = equivalence.get(mp)
        sim_mult = "multiplicity" in g.columns and g["multiplicity"].notna().all()
        if sim_mult:
            # simulated shards carry their own symmetry analysis
            weights = g["multiplicity"].astype(float).tolist()
            keep = list(range(len(g)))
            n_total = int(g["n_equivalent_classes_element"].max())
            n_present = len(g)
            weighting = "multiplicity"
        elif eq is not None and (g["_site"] >= 0).all() and all(
            int(i) in eq and eq[int(i)][2] == el for i in g["_site"]
        ):
            seen: set[int] = set()
            keep, weights = [], []
            for j, i in enumerate(g["_site"]):
                cls, mult, _ = eq[int(i)]
                if cls in seen:
                    n_symmetry_duplicates += 1
                    continue
                seen.add(cls)
                keep.append(j)
                weights.append(float(mult))
            n_total = len({c for c, _, e in eq.values() if e == el})
            n_present = len(seen)
            weighting = "multiplicity"
        else:
            keep = list(range(len(g)))
            weights = [1.0] * len(g)
            n_total = -1
            n_present = len(g)
            weighting = "equal_no_structure"
        if n_total > 0 and n_present < n_total:
            n_partial += 1
        weighting_counts[weighting] += 1
        gg = g.iloc[keep]
        records.append({
            "mp_id": mp, "absorbing_element": el,
            "spectrum_ids": gg["spectrum_id"].astype(str).tolist(),
            "sources": sorted(set(gg["source"].astype(str))),
            "sites": gg["_site"].astype(int).tolist(), "weights": weights,
            "energy": [np.asarray(x, float) for x in gg["energy"]],
            "mu": [np.asarray(x, float) for x in gg["mu"]],
            "weighting": weighting, "n_classes_present": n_present, "n_classes_total": n_total,
        })
    rec = pd.DataFrame(records, columns=RECORD_COLUMNS)
    drop["symmetry_equivalent_duplicate_site"] = n_symmetry_duplicates
    n_incomplete = 0
    if simulated_sources:
        rec, incomplete = drop_incomplete_simulated(rec, simulated_required_elements or {}, simulated_sources)
        n_incomplete = len(incomplete)

    lab, label_drops = usable_labels(labels)
    merged = rec.merge(lab, on="mp_id", how="left")
    labeled = merged[merged["label"].notna()].reset_index(drop=True)
    unlabeled = merged[merged["label"].isna()].drop(columns=["label", "label3", "y", "y3"])
    raw_label = labels.set_index("mp_id")["label"]
    unlabeled = unlabeled.assign(
        label_status=unlabeled["mp_id"].map(raw_label).fillna("not_in_labels")
    ).reset_index(drop=True)

    report["site_rows_dropped"] = dict(sorted(drop.items()))
    report["labels_dropped"] = label_drops
    report["records"] = {
        "element_records": int(len(rec)),
        "by_weighting": dict(sorted(weighting_counts.items())),
        "partial_sites_records": int(n_partial),
        "simulated_materials_incomplete_dropped": int(n_incomplete),
        "partial_sites_note": "records whose structure has more symmetry-unique sites of the element than "
        "spectra present; the present sites are weighted by multiplicity and the rest are missing",
    }
    report["materials"] = {
        "labeled": int(labeled["mp_id"].nunique()),
        "labeled_records": int(len(labeled)),
        "labeled_by_origin": {k: int(v) for k, v in only_from(labeled["sources"], simulated_sources or [])
                              .groupby(labeled["mp_id"]).all().map({True: "simulated_only", False: "shipped"})
                              .value_counts().sort_index().items()},
        "unlabeled_for_screening": int(unlabeled["mp_id"].nunique()),
        "unlabeled_by_status": {k: int(v) for k, v in
                                unlabeled.drop_duplicates("mp_id")["label_status"].value_counts().items()},
        "labeled_by_label3": {k: int(v) for k, v in
                              labeled.drop_duplicates("mp_id")["label3"].value_counts().sort_index().items()},
        "labeled_absorbers_per_material": {str(k): int(v) for k, v in
                                           labeled.groupby("mp_id").size().value_counts().sort_index().items()},
    }
    return labeled, unlabeled, experimental, report


def only_from(sources: pd.Series, allowed: list[str]) -> pd.Series:
    """Per record: are all its spectra from ``allowed`` sources (e.g. only simulated)?"""
    return sources.map(lambda s: set(s) <= set(allowed))


def drop_incomplete_simulated(
    records: pd.DataFrame, required: dict[str, set[str]], simulated_sources: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Drop materials made only of simulated records that miss an element or a unique site.

    The model sums over a material's absorbers, so a material with one edge missing is a different
    input, not a smaller one. ``required``: mp_id → elements FEFF is run for (from the formula).
    Shipped materials are left alone (most have one edge; that is the data as published).
    """
    only_sim = only_from(records["sources"], simulated_sources).groupby(records["mp_id"]).transform("all")
    dropped = []
    for mp, g in records[only_sim].groupby("mp_id"):
        need = required.get(mp)
        whole = (g["n_classes_total"] > 0) & (g["n_classes_present"] >= g["n_classes_total"])
        if need is None or not need <= set(g["absorbing_element"]) or not whole.all():
            dropped.append(mp)
    return records[~records["mp_id"].isin(dropped)].reset_index(drop=True), sorted(dropped)
