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
from xastopo.data.quality import WhiteLineRule, drop_verdict

RECORD_COLUMNS = [
    "mp_id", "absorbing_element", "spectrum_ids", "sources", "sites", "weights", "energy", "mu",
    "weighting", "n_classes_present", "n_classes_total",
]


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
    white_line: WhiteLineRule | None = None,
    keep_partial: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Return (labeled records, unlabeled records, experimental rows, report).

    Materials made only of ``simulated_sources`` records must have every element in
    ``simulated_required_elements[mp_id]`` with all its unique sites, or they are dropped; with
    ``keep_partial`` their labeled records stay, marked False in a ``complete`` column (True for every
    other record): the model that reads any subset of edges trains on them, the paper's families not.
    """
    drop: Counter = Counter()
    experimental, s = select_sites(sites, exclude_elements, train_sources, drop)
    s = drop_unphysical(s, max_negative_jump_threshold, post_edge_ev, flat_run_tol, drop, white_line)
    s = one_source_per_site(s, source_priority, drop)
    rec, stats = build_records(s, equivalence)
    drop["symmetry_equivalent_duplicate_site"] = stats.pop("symmetry_duplicates")
    n_incomplete = 0
    partial = rec.iloc[:0]
    if simulated_sources:
        kept, incomplete = drop_incomplete_simulated(rec, simulated_required_elements or {}, simulated_sources)
        if keep_partial:  # of the incomplete materials, the elements with every unique site
            partial = rec[rec["mp_id"].isin(incomplete) & every_site_present(rec)]
        rec, n_incomplete = kept, len(incomplete)
    labeled, unlabeled, label_drops = join_labels(rec, labels)
    report = {
        "site_rows_dropped": dict(sorted(drop.items())),
        "labels_dropped": label_drops,
        "records": {
            "element_records": int(len(rec)),
            "by_weighting": dict(sorted(stats["weighting"].items())),
            "partial_sites_records": int(stats["partial"]),
            "simulated_materials_incomplete_dropped": int(n_incomplete),
            "partial_sites_note": "records whose structure has more symmetry-unique sites of the element than "
            "spectra present; the present sites are weighted by multiplicity and the rest are missing",
        },
        "materials": material_counts(labeled, unlabeled, simulated_sources or []),
    }
    if keep_partial:
        labeled = pd.concat([labeled.assign(complete=True), join_labels(partial, labels)[0].assign(complete=False)],
                            ignore_index=True)
    return labeled, unlabeled, experimental, report


def select_sites(
    sites: pd.DataFrame, exclude_elements: list[str], train_sources: list[str], drop: Counter
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measured rows, kept for the experimental path; rows of usable elements from training sources)."""
    experimental = sites[sites["source"].isin(EXPERIMENTAL_SOURCES)].reset_index(drop=True)
    s = sites[~sites["source"].isin(EXPERIMENTAL_SOURCES)]
    drop["experimental_kept_for_experimental_path"] = len(experimental)
    excl = s["absorbing_element"].isin(exclude_elements)
    drop["excluded_element"] = int(excl.sum())
    s = s[~excl]
    not_train = ~s["source"].isin(train_sources)
    drop["source_not_in_train_sources"] = int(not_train.sum())
    return experimental, s[~not_train].copy()


def drop_unphysical(
    s: pd.DataFrame, threshold: float, post_edge_ev: float, flat_run_tol: float, drop: Counter,
    white_line: WhiteLineRule | None = None,
) -> pd.DataFrame:
    """Drop spectra without an edge step or with a drop larger than ``threshold`` edge steps, unless
    (for ``white_line.sources``) every such drop is a white line decaying (:func:`drop_verdict`)."""
    verdicts = unphysical_verdicts(s, threshold, post_edge_ev, flat_run_tol, white_line)
    bad = ~verdicts.isin(["ok", "white_line"])
    drop["unphysical_negative_jump_or_no_edge"] = int(bad.sum())
    return s[~bad].copy()


def unphysical_verdicts(s: pd.DataFrame, threshold: float, post_edge_ev: float, flat_run_tol: float,
                        white_line: WhiteLineRule | None = None) -> pd.Series:
    """:func:`~xastopo.data.quality.drop_verdict` of every row (the rule only for its sources)."""
    out = []
    for e, m, src in zip(s["energy"], s["mu"], s["source"], strict=True):
        rule = white_line if white_line is not None and src in white_line.sources else None
        out.append(drop_verdict(np.asarray(e, float), np.asarray(m, float), post_edge_ev, flat_run_tol,
                                threshold, rule))
    return pd.Series(out, index=s.index, dtype=object)


def unphysical_summary(sites: pd.DataFrame, threshold: float, post_edge_ev: float, flat_run_tol: float,
                       white_line: WhiteLineRule) -> dict:
    """Per source: spectra the strict threshold rejects, how many the white-line rule recovers and why
    the rest stay rejected, computed on every site (also sources that do not train) for the report."""
    rule = WhiteLineRule(white_line.window_ev, white_line.min_start, white_line.max_dip,
                         tuple(sorted(set(sites["source"]))))
    v = unphysical_verdicts(sites, threshold, post_edge_ev, flat_run_tol, rule)
    out: dict = {}
    for src, g in v.groupby(sites["source"]):
        counts = g.value_counts()
        rejected = int(len(g) - counts.get("ok", 0))
        out[str(src)] = {"spectra": int(len(g)), "rejected_by_threshold": rejected,
                         "white_line_recovered": int(counts.get("white_line", 0)),
                         "rule_applies": src in white_line.sources,
                         "still_rejected": {k: int(n) for k, n in counts.items() if k not in ("ok", "white_line")}}
    return out


def one_source_per_site(s: pd.DataFrame, source_priority: list[str], drop: Counter) -> pd.DataFrame:
    """The same site from several sources: keep the highest-priority one; never mix methods in a record."""
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
    return s[~other]


def site_weights(
    el: str, g: pd.DataFrame, eq: dict[int, tuple[int, int, str]] | None
) -> tuple[list[int], list[float], int, int, str, int]:
    """(rows kept, their weights, classes present, classes total, weighting, symmetry duplicates)."""
    if "multiplicity" in g.columns and g["multiplicity"].notna().all():
        # simulated shards carry their own symmetry analysis
        n_total = int(g["n_equivalent_classes_element"].max())
        return list(range(len(g))), g["multiplicity"].astype(float).tolist(), len(g), n_total, "multiplicity", 0
    if eq is not None and (g["_site"] >= 0).all() and all(int(i) in eq and eq[int(i)][2] == el for i in g["_site"]):
        seen: set[int] = set()
        keep, weights, dups = [], [], 0
        for j, i in enumerate(g["_site"]):
            cls, mult, _ = eq[int(i)]
            if cls in seen:
                dups += 1
                continue
            seen.add(cls)
            keep.append(j)
            weights.append(float(mult))
        n_total = len({c for c, _, e in eq.values() if e == el})
        return keep, weights, len(seen), n_total, "multiplicity", dups
    return list(range(len(g))), [1.0] * len(g), len(g), -1, "equal_no_structure", 0


def build_records(
    s: pd.DataFrame, equivalence: dict[str, dict[int, tuple[int, int, str]]]
) -> tuple[pd.DataFrame, dict]:
    """One record per (material, element) with its sites' weights; counts of weighting kinds."""
    records = []
    stats: dict = {"weighting": Counter(), "symmetry_duplicates": 0, "partial": 0}
    for (mp, el), g in s.groupby(["mp_id", "absorbing_element"], sort=True):
        keep, weights, n_present, n_total, weighting, dups = site_weights(el, g, equivalence.get(mp))
        stats["symmetry_duplicates"] += dups
        stats["partial"] += int(0 < n_total and n_present < n_total)
        stats["weighting"][weighting] += 1
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
    return pd.DataFrame(records, columns=RECORD_COLUMNS), stats


def join_labels(rec: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(labeled records, unlabeled records with their label status, label rows dropped by reason)."""
    lab, label_drops = usable_labels(labels)
    merged = rec.merge(lab, on="mp_id", how="left")
    labeled = merged[merged["label"].notna()].reset_index(drop=True)
    unlabeled = merged[merged["label"].isna()].drop(columns=["label", "label3", "y", "y3"])
    raw_label = labels.set_index("mp_id")["label"]
    unlabeled = unlabeled.assign(
        label_status=unlabeled["mp_id"].map(raw_label).fillna("not_in_labels")
    ).reset_index(drop=True)
    return labeled, unlabeled, label_drops


def material_counts(labeled: pd.DataFrame, unlabeled: pd.DataFrame, simulated_sources: list[str]) -> dict:
    """The report's material counts: labeled by origin and class, unlabeled by status, absorbers per material."""
    origin = only_from(labeled["sources"], simulated_sources).groupby(labeled["mp_id"]).all()
    return {
        "labeled": int(labeled["mp_id"].nunique()),
        "labeled_records": int(len(labeled)),
        "labeled_by_origin": {k: int(v) for k, v in origin.map({True: "simulated_only", False: "shipped"})
                              .value_counts().sort_index().items()},
        "unlabeled_for_screening": int(unlabeled["mp_id"].nunique()),
        "unlabeled_by_status": {k: int(v) for k, v in
                                unlabeled.drop_duplicates("mp_id")["label_status"].value_counts().items()},
        "labeled_by_label3": {k: int(v) for k, v in
                              labeled.drop_duplicates("mp_id")["label3"].value_counts().sort_index().items()},
        "labeled_absorbers_per_material": {str(k): int(v) for k, v in
                                           labeled.groupby("mp_id").size().value_counts().sort_index().items()},
    }


def only_from(sources: pd.Series, allowed: list[str]) -> pd.Series:
    """Per record: are all its spectra from ``allowed`` sources (e.g. only simulated)?"""
    return sources.map(lambda s: set(s) <= set(allowed))


def every_site_present(records: pd.DataFrame) -> pd.Series:
    """Per record: does it hold a spectrum for every symmetry-unique site of its element?"""
    return (records["n_classes_total"] > 0) & (records["n_classes_present"] >= records["n_classes_total"])


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
        if need is None or not need <= set(g["absorbing_element"]) or not every_site_present(g).all():
            dropped.append(mp)
    return records[~records["mp_id"].isin(dropped)].reset_index(drop=True), sorted(dropped)
