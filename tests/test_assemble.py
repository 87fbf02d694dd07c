"""Assemble: multiplicity weights, duplicates, experimental rows, exclusions, unphysical spectra, labels."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from xastopo.data.assemble import assemble
from xastopo.data.labels import usable_labels
from xastopo.data.quality import max_negative_jump, own_range_normalized
from xastopo.data.structures import equivalent_sites


def all_ids(df: pd.DataFrame) -> set[str]:
    return {s for ids in df["spectrum_ids"] for s in ids}


def _site_count(poscar: str, element: str) -> int:
    s = Structure.from_str(poscar, fmt="poscar")
    return sum(1 for site in s if site.specie.symbol == element)


# --------------------------------------------------------------- multiplicity


def test_equivalent_sites_on_fixture_poscars(fixtures_dir, expected_fixtures):
    for fx in expected_fixtures:
        text = (fixtures_dir / fx["mp_id"] / "POSCAR").read_text()
        eq = equivalent_sites(text)
        s = Structure.from_str(text, fmt="poscar")
        assert sorted(eq) == list(range(len(s)))
        classes = {cls: size for cls, size, _ in eq.values()}
        assert sum(classes.values()) == len(s)  # class sizes partition the atoms
        for i, (cls, size, el) in eq.items():
            assert el == s[i].specie.symbol
            assert cls <= i and eq[cls][0] == cls
            assert size == sum(1 for c, _, _ in eq.values() if c == cls)
        # against spglib's equivalent_atoms through pymatgen, independently of the symmetrized structure
        ds = SpacegroupAnalyzer(s, symprec=0.01).get_symmetry_dataset()
        ref = Counter(int(a) for a in ds.equivalent_atoms)
        mine = {min(j for j in eq if eq[j][0] == cls): size for cls, size, _ in eq.values()}
        assert sorted(mine.values()) == sorted(ref.values())
        for i in eq:
            same_mine = {j for j in eq if eq[j][0] == eq[i][0]}
            same_ref = {j for j, a in enumerate(ds.equivalent_atoms) if a == ds.equivalent_atoms[i]}
            assert same_mine == same_ref
        # the spectrum's absorbing site is a Cu atom
        assert eq[fx["site"]][2] == "Cu"


def test_multiplicity_weights_sum_to_element_atoms(assembled_slice, structures):
    labeled, unlabeled, _, _ = assembled_slice
    rec = pd.concat([labeled, unlabeled])
    full = rec[(rec["weighting"] == "multiplicity") & (rec["n_classes_present"] == rec["n_classes_total"])]
    assert len(full) >= 10
    poscar = structures.set_index("mp_id")["poscar"]
    for r in full.itertuples(index=False):
        assert sum(r.weights) == _site_count(poscar[r.mp_id], r.absorbing_element), r.mp_id
    no_struct = rec[rec["weighting"] == "equal_no_structure"]
    assert len(no_struct) > 0
    assert all(set(w) == {1.0} for w in no_struct["weights"])
    assert not no_struct["mp_id"].isin(set(structures["mp_id"])).all()


def _material_with_shared_class(validated_slice, slice_equivalence):
    """A raw Cu row whose site shares its symmetry class with another Cu site."""
    raw = validated_slice[validated_slice["source"] == "omnixas_feff_raw"]
    for r in raw.itertuples(index=False):
        eq = slice_equivalence.get(r.mp_id)
        if eq is None:
            continue
        cls, size, _ = eq[int(r.site)]
        if size >= 2:
            other = next(j for j, (c, _, _) in eq.items() if c == cls and j != int(r.site))
            return r.mp_id, int(r.site), other, size
    pytest.fail("no raw Cu site with multiplicity >= 2 in the slice")


def test_symmetry_duplicate_site_counted_once(validated_slice, labels, slice_equivalence, assemble_kwargs):
    mp, site, other, size = _material_with_shared_class(validated_slice, slice_equivalence)
    rows = validated_slice[(validated_slice["mp_id"] == mp) & (validated_slice["absorbing_element"] == "Cu")]
    base_lab, base_unl, _, base_rep = assemble(rows, labels, slice_equivalence, **assemble_kwargs())
    base = pd.concat([base_lab, base_unl]).iloc[0]
    dup = rows[(rows["site"] == site) & (rows["source"] == "omnixas_feff_raw")].copy()
    dup["site"] = float(other)
    dup["spectrum_id"] = dup["spectrum_id"] + "-equivalent-copy"
    lab, unl, _, rep = assemble(pd.concat([rows, dup]), labels, slice_equivalence, **assemble_kwargs())
    rec = pd.concat([lab, unl])
    assert len(rec) == 1
    r = rec.iloc[0]
    assert rep["site_rows_dropped"]["symmetry_equivalent_duplicate_site"] == 1
    assert base_rep["site_rows_dropped"]["symmetry_equivalent_duplicate_site"] == 0
    assert r["weights"] == base["weights"] and r["sites"] == base["sites"]  # counted once, same weight
    assert size in r["weights"]
    assert r["n_classes_present"] == base["n_classes_present"]


def test_partial_sites_reported(validated_slice, labels, slice_equivalence, assemble_kwargs):
    raw = validated_slice[validated_slice["source"] == "omnixas_feff_raw"]
    for mp, g in raw.groupby("mp_id"):
        eq = slice_equivalence.get(mp)
        if eq is None or len({eq[int(s)][0] for s in g["site"]}) < 2:
            continue
        lab, unl, _, rep_all = assemble(g, labels, slice_equivalence, **assemble_kwargs())
        r_all = pd.concat([lab, unl]).iloc[0]
        lab, unl, _, rep = assemble(g.iloc[1:], labels, slice_equivalence, **assemble_kwargs())
        r = pd.concat([lab, unl]).iloc[0]
        assert r["n_classes_present"] == r_all["n_classes_present"] - 1
        assert r["n_classes_total"] == r_all["n_classes_total"]
        assert rep["records"]["partial_sites_records"] == rep_all["records"]["partial_sites_records"] + 1
        return
    pytest.fail("no material with two Cu classes in the slice")


# ------------------------------------------------------------------ sources


def test_processed_cu_duplicates_dropped_in_favour_of_raw(validated_slice, assembled_slice):
    labeled, unlabeled, _, rep = assembled_slice
    rec = pd.concat([labeled, unlabeled])
    v = validated_slice
    raw_keys = set(zip(v.loc[v["source"] == "omnixas_feff_raw", "mp_id"],
                       v.loc[v["source"] == "omnixas_feff_raw", "site"], strict=True))
    proc_cu = v[(v["source"] == "omnixas_feff_processed") & (v["absorbing_element"] == "Cu")]
    shadowed = proc_cu[[k in raw_keys for k in zip(proc_cu["mp_id"], proc_cu["site"], strict=True)]]
    assert len(shadowed) >= 8
    kept = all_ids(rec)
    assert not set(shadowed["spectrum_id"]) & kept
    for mp in set(shadowed["mp_id"]):
        cu = rec[(rec["mp_id"] == mp) & (rec["absorbing_element"] == "Cu")]
        if len(cu):  # (a material whose raw rows were all unphysical has no record)
            assert cu.iloc[0]["sources"] == ["omnixas_feff_raw"]
    assert rep["site_rows_dropped"]["duplicate_site_lower_priority_source"] == len(shadowed)


def test_experimental_rows_never_labeled(site_slice, validated_slice, assembled_slice, labels):
    labeled, unlabeled, experimental, rep = assembled_slice
    exp_ids = set(site_slice.loc[site_slice["source"] == "veidt_experiment", "spectrum_id"])
    assert len(exp_ids) == 30  # PROVENANCE: 30 rows from experiment.csv
    assert set(experimental["spectrum_id"]) == exp_ids
    assert set(experimental["source"]) == {"veidt_experiment"}
    assert not exp_ids & all_ids(labeled) and not exp_ids & all_ids(unlabeled)
    assert rep["site_rows_dropped"]["experimental_kept_for_experimental_path"] == 30
    assert not any("veidt_experiment" in s for s in labeled["sources"])
    # even when the experiment's material has a usable label and no computed spectrum
    usable, _ = usable_labels(labels)
    exp_only = set(experimental["mp_id"]) & set(usable["mp_id"])
    exp_only -= set(validated_slice.loc[validated_slice["source"] != "veidt_experiment", "mp_id"])
    assert exp_only, "expected an experiment of a labeled material"
    assert not exp_only & set(labeled["mp_id"])


def test_excluded_elements_dropped_and_counted(validated_slice, labels, assemble_kwargs):
    v = validated_slice
    comp = v[v["source"] != "veidt_experiment"]
    kr = comp[comp["source"] == "omnixas_feff_processed"].head(2).copy()
    kr["absorbing_element"] = "Kr"
    kr["spectrum_id"] = kr["spectrum_id"] + "-as-Kr"
    rows = pd.concat([v, kr], ignore_index=True)
    lab, unl, _, rep = assemble(rows, labels, {}, **assemble_kwargs())
    assert rep["site_rows_dropped"]["excluded_element"] == 2
    assert "Kr" not in set(lab["absorbing_element"]) | set(unl["absorbing_element"])
    # the list is a parameter: excluding V too drops every computed V row
    n_v = int((comp["absorbing_element"] == "V").sum())
    assert n_v > 0
    more = ["He", "Ne", "Ar", "Kr", "Xe", "Pa", "V"]
    lab, unl, _, rep = assemble(rows, labels, {}, **assemble_kwargs(exclude_elements=more))
    assert rep["site_rows_dropped"]["excluded_element"] == 2 + n_v
    assert "V" not in set(lab["absorbing_element"]) | set(unl["absorbing_element"])


# --------------------------------------------------------------- unphysical


def _with_dip(energy: np.ndarray, mu: np.ndarray, depth_steps: float) -> np.ndarray:
    """mu with one point, mid-spectrum, lowered by ``depth_steps`` edge steps."""
    n = own_range_normalized(energy, mu, 5.0, 0.0)
    step = (mu[0] - mu[-1]) / (n[0] - n[-1])
    out = mu.astype(float).copy()
    k = int(np.searchsorted(energy, energy[0] + 0.6 * (energy[-1] - energy[0])))
    out[k] -= depth_steps * step
    return out


def test_unphysical_spectrum_rejected_and_counted(validated_slice, labels, assemble_kwargs):
    v = validated_slice
    raw = v[v["source"] == "omnixas_feff_raw"]
    # a material whose real spectra all pass, so the count below is the injected one only
    for _mp, g in raw.groupby("mp_id"):
        jumps = [max_negative_jump(own_range_normalized(np.asarray(e), np.asarray(m, float), 5.0, 0.0))
                 for e, m in zip(g["energy"], g["mu"], strict=True)]
        if len(g) >= 2 and max(jumps) < 0.3:
            break
    else:
        pytest.fail("no suitable material")
    rows = g.copy()
    e0, m0 = np.asarray(rows.iloc[0]["energy"]), np.asarray(rows.iloc[0]["mu"], float)
    bad = _with_dip(e0, m0, 1.0)
    assert max_negative_jump(own_range_normalized(e0, bad, 5.0, 0.0)) > 0.9
    rows["mu"] = [bad] + list(rows["mu"].iloc[1:])
    bad_id = rows.iloc[0]["spectrum_id"]

    lab, unl, _, rep = assemble(g, labels, {}, **assemble_kwargs())
    assert rep["site_rows_dropped"]["unphysical_negative_jump_or_no_edge"] == 0
    assert bad_id in all_ids(pd.concat([lab, unl]))
    lab, unl, _, rep = assemble(rows, labels, {}, **assemble_kwargs())
    assert rep["site_rows_dropped"]["unphysical_negative_jump_or_no_edge"] == 1
    rec = pd.concat([lab, unl])
    assert bad_id not in all_ids(rec)
    assert len(rec.iloc[0]["spectrum_ids"]) == len(g) - 1
    # the threshold is a parameter
    _, _, _, rep = assemble(rows, labels, {}, **assemble_kwargs(max_negative_jump_threshold=2.0))
    assert rep["site_rows_dropped"]["unphysical_negative_jump_or_no_edge"] == 0


def test_no_edge_step_normalizes_to_nan(validated_slice):
    r = validated_slice[validated_slice["source"] == "omnixas_feff_raw"].iloc[0]
    falling = np.asarray(r["mu"], float)[::-1].copy()  # falls instead of rising
    assert np.isnan(own_range_normalized(np.asarray(r["energy"]), falling, 5.0, 0.0)).all()


def test_spectrum_without_edge_rejected(validated_slice, labels, assemble_kwargs):
    row = validated_slice[validated_slice["source"] == "omnixas_feff_raw"].head(1).copy()
    row["mu"] = [np.asarray(row.iloc[0]["mu"], float)[::-1].copy()]  # falls instead of rising
    _, _, _, rep = assemble(row, labels, {}, **assemble_kwargs())
    assert rep["site_rows_dropped"]["unphysical_negative_jump_or_no_edge"] == 1


# ------------------------------------------------------------------- labels


def _labels(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["mp_id", "label", "label3"])


def test_usable_labels_rules_on_hand_made_rows():
    lab, reasons = usable_labels(_labels([
        ("mp-1", "trivial", "trivial"),
        ("mp-2", "topological", "TI"),
        ("mp-3", "topological", "TSM"),
        ("mp-4", "conflict", None),
        ("mp-5", "unknown", None),
        ("mp-6", "topological", "trivial"),   # inconsistent
        ("mp-7", "trivial", "TI"),            # inconsistent
        ("mp-8", "topological", None),        # topological without TI/TSM
        ("mp-9", "maybe", "TI"),              # not a label value
        ("mp-10", "trivial", "trivial"),
        ("mp-10", "topological", "TI"),       # duplicated id: ambiguous, both dropped
    ]))
    assert lab.set_index("mp_id")[["label", "label3", "y", "y3"]].to_dict("index") == {
        "mp-1": {"label": "trivial", "label3": "trivial", "y": 0, "y3": 0},
        "mp-2": {"label": "topological", "label3": "TI", "y": 1, "y3": 1},
        "mp-3": {"label": "topological", "label3": "TSM", "y": 1, "y3": 2},
    }
    assert reasons == {"duplicate_mp_id": 2, "label_conflict": 1, "label_unknown": 1,
                       "label_invalid_value": 1, "label3_inconsistent": 3}


def test_usable_labels_on_real_csv(labels):
    lab, reasons = usable_labels(labels)
    # PROVENANCE: 17,671 trivial / 11,706 topological before withholding 39 / 40 of them
    assert len(lab) == (17_671 - 39) + (11_706 - 40)
    assert reasons["label_conflict"] == 740 and reasons["label_unknown"] == 924
    assert reasons["label3_inconsistent"] == 0 and reasons["label_invalid_value"] == 0
    assert set(lab["label3"]) == {"trivial", "TI", "TSM"}
    assert (lab["y"] == (lab["label"] == "topological")).all()


def test_label_join_on_real_slice(assembled_slice, labels):
    labeled, unlabeled, _, rep = assembled_slice
    raw = labels.set_index("mp_id")
    assert set(labeled["label3"]) == {"trivial", "TI", "TSM"}  # all three kept
    for r in labeled.itertuples(index=False):
        assert raw.loc[r.mp_id, "label"] == r.label and raw.loc[r.mp_id, "label3"] == r.label3
    assert not set(labeled["mp_id"]) & set(unlabeled["mp_id"])
    status = unlabeled.drop_duplicates("mp_id").set_index("mp_id")["label_status"]
    assert {"conflict", "unknown", "not_in_labels"} <= set(status)
    for mp, st in status.items():
        if st == "not_in_labels":
            assert mp not in raw.index
        else:
            assert raw.loc[mp, "label"] == st and st in ("conflict", "unknown")
    assert rep["materials"]["labeled"] == labeled["mp_id"].nunique()
    assert rep["materials"]["unlabeled_for_screening"] == unlabeled["mp_id"].nunique()


def test_inconsistent_label3_moves_material_out_of_labeled(validated_slice, assembled_slice, labels,
                                                           assemble_kwargs):
    labeled, _, _, _ = assembled_slice
    mp = sorted(labeled.loc[labeled["label"] == "topological", "mp_id"])[0]
    bad = labels.copy()
    bad.loc[bad["mp_id"] == mp, "label3"] = "trivial"
    lab, unl, _, rep = assemble(validated_slice, bad, {}, **assemble_kwargs())
    assert mp not in set(lab["mp_id"]) and mp in set(unl["mp_id"])
    assert rep["labels_dropped"]["label3_inconsistent"] == 1
    assert lab["mp_id"].nunique() == labeled["mp_id"].nunique() - 1


# ------------------------------------------------------- simulated materials (committed shards)

@pytest.fixture(scope="module")
def simulated_rows(shared_data):
    """Validated FEFF10 site rows of the committed shards, with the elements each material needs."""
    from xastopo.config import load_params
    from xastopo.data.ingest import simulated_sites, validate_sites
    from xastopo.simulate.inputs import computable_elements

    repo = Path(__file__).resolve().parents[1]
    sim = simulated_sites(repo / "data" / "simulated")
    if sim is None:
        pytest.skip("no committed simulated shards")
    valid, _ = validate_sites(sim, min_points=20, flat_run_tol=0.0)
    cfg = load_params(repo / "params.yaml")["simulate"]
    meta = pd.read_parquet(shared_data / cfg["structures"], columns=["mp_id", "formula_sum"])
    meta = meta[meta["mp_id"].isin(set(valid["mp_id"]))]
    need = {m: computable_elements(f, cfg) for m, f in zip(meta["mp_id"], meta["formula_sum"], strict=True)}
    return valid, need


def test_incomplete_simulated_material_dropped(simulated_rows, labels, assemble_kwargs):
    valid, need = simulated_rows
    kw = assemble_kwargs(simulated_sources=["feff10_sim"], simulated_required_elements=need)
    full, _, _, rep = assemble(valid, labels, {}, **kw)
    kept = full.groupby("mp_id")["absorbing_element"].agg(set)
    assert len(kept) >= 100
    assert all(need[m] <= els for m, els in kept.items())  # every kept material has all its edges
    multi = [m for m, els in kept.items() if len(els) >= 2][:3]
    assert len(multi) == 3
    # remove one element's sites from one material and one site from another: both go, the rest stay
    a, b = multi[0], multi[1]
    el_a = sorted(kept[a])[0]
    rows_b = valid.index[valid["mp_id"] == b]
    cut = valid.drop(index=valid.index[(valid["mp_id"] == a) & (valid["absorbing_element"] == el_a)])
    many_b = valid.loc[rows_b].groupby("absorbing_element").size()
    if (many_b > 1).any():  # a missing unique site also counts
        el_b = many_b[many_b > 1].index[0]
        cut = cut.drop(index=valid.index[(valid["mp_id"] == b) & (valid["absorbing_element"] == el_b)][:1])
    else:
        cut = cut.drop(index=rows_b[:1])
    part, _, _, rep2 = assemble(cut, labels, {}, **kw)
    assert set(part["mp_id"]) == set(full["mp_id"]) - {a, b}
    n0 = rep["records"]["simulated_materials_incomplete_dropped"]
    assert rep2["records"]["simulated_materials_incomplete_dropped"] == n0 + 2
    assert rep2["materials"]["labeled_by_origin"] == {"simulated_only": len(kept) - 2}
    # without the rule (no required elements given) the incomplete materials would train
    loose, _, _, _ = assemble(cut, labels, {}, **assemble_kwargs())
    assert {a, b} <= set(loose["mp_id"])
    # keep_partial: the same materials come back marked incomplete, with only their whole elements
    kp, _, _, rep3 = assemble(cut, labels, {}, **kw, keep_partial=True)
    assert rep3["materials"] == rep2["materials"]  # the report counts the complete materials only
    whole = kp[kp["complete"]]
    assert set(whole["mp_id"]) == set(part["mp_id"])
    partial = kp[~kp["complete"]]
    assert not set(partial["mp_id"]) & set(whole["mp_id"])  # a material is complete or partial, never both
    assert {a, b} <= set(partial["mp_id"]) and el_a not in set(partial.loc[partial["mp_id"] == a,
                                                                           "absorbing_element"])
    assert (partial["n_classes_present"] >= partial["n_classes_total"]).all()
    assert set(partial["absorbing_element"][partial["mp_id"] == a]) == kept[a] - {el_a}
