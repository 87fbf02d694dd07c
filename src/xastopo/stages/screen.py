"""DVC stage `screen`: rank unlabeled candidates, and predict the literature Weyl/Dirac semimetals.

1. Every material that has spectra but no usable label (``data/interim/unlabeled.parquet``: not in the
   labels, or labeled unknown/conflict) is predicted by the exported champion with its formula (labels,
   CIF or POSCAR; the spectra's elements when none) and ranked by P(topological) → ``reports/screen.csv``
   and the top N as ``reports/screen_top.md`` (the paper's Table S1: formula, space group, elements,
   probability ± uncertainty).
2. The literature Weyl/Dirac semimetals (``labels/weyl_dirac_literature.csv``) that the symmetry-indicator
   labels call trivial, matched by reduced composition (and space group where the list gives one), with
   their spectra where we have them, else their formula → ``reports/weyl_dirac.{csv,md}`` (the paper's
   Table 2). Their split is reported: a material in the training split was learned as trivial.

Predictions go through :func:`xastopo.screening.predict_materials` (in process, or over Dask when
``screen.distributed``), the path of ``xastopo predict``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xastopo.config import load_params, model_dir, predict_options, raw_path
from xastopo.data.composition import material_formulas
from xastopo.inference import InputError, MaterialSites
from xastopo.preprocessing.dataset import record_sites
from xastopo.screening import predict_materials, reduced_composition
from xastopo.stages.common import run_stage, write_json

OUT = Path("reports")


def records_materials(records: pd.DataFrame, formulas: dict[str, str]) -> list[MaterialSites]:
    """Assembled records (one row per material and element) → materials with their formula, id order."""
    out = []
    for mp, g in records.groupby("mp_id", sort=True):
        spectra = {r.absorbing_element: record_sites(r) for r in g.itertuples(index=False)}
        formula = formulas.get(mp)
        if formula is not None:
            try:
                MaterialSites(mp, spectra, formula=formula).composition(0)
            except InputError:  # a formula that disagrees with the spectra: trust the spectra's elements
                formula = None
        out.append(MaterialSites(str(mp), spectra, formula=formula))
    return out


def unc(u: float | None) -> str:
    """' ± 0.012', or '' for a champion without an uncertainty output."""
    return "" if u is None or pd.isna(u) else f" ± {u:.3f}"


def answer_rows(materials: list[MaterialSites], answers: list) -> pd.DataFrame:
    rows = []
    for m, a in zip(materials, answers, strict=True):
        if isinstance(a, InputError):
            rows.append({"mp_id": m.material_id, "formula": m.formula, "error": a.message})
            continue
        rows.append({"mp_id": m.material_id, "formula": m.formula, "probability_topological": a.probability_topological,
                     "uncertainty": a.uncertainty, "label": a.label,
                     "elements_with_spectrum": " ".join(a.elements_with_spectrum),
                     "elements_by_type": " ".join(a.elements_by_type), "warnings": " | ".join(a.warnings)})
    cols = ["mp_id", "formula", "probability_topological", "uncertainty", "label", "elements_with_spectrum",
            "elements_by_type", "warnings", "error"]
    return pd.DataFrame(rows, columns=cols)  # every column, also when every material was refused


def spacegroup(structure: str | None, fmt: str, symprec: float) -> str:
    """International symbol (number) of a POSCAR or CIF, '' when there is none or it cannot be analysed."""
    if not structure:
        return ""
    try:
        from pymatgen.core import Structure
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        sga = SpacegroupAnalyzer(Structure.from_str(structure, fmt=fmt), symprec=symprec)
        return f"{sga.get_space_group_symbol()} ({sga.get_space_group_number()})"
    except Exception:  # pymatgen raises many types on odd cells; a blank cell in a table is the answer
        return ""


def pretty_formula(formula: str) -> str:
    """'Cu2 O1' (CIF formula_sum) → 'Cu2O' for the tables; the input when pymatgen cannot read it."""
    try:
        from pymatgen.core import Composition

        return Composition(formula).reduced_formula
    except Exception:  # a table cell, not a decision: keep what we have
        return formula


def structure_spacegroups(params: dict, ids: list[str], symprec: float) -> list[str]:
    """Space groups of ``ids`` from the POSCAR the spectra were computed on, else the material's CIF."""
    poscars = pd.read_parquet(raw_path(params, "site_structures"), columns=["mp_id", "poscar"])
    poscar = dict(zip(poscars["mp_id"], poscars["poscar"], strict=False))
    cifs = pd.read_parquet(raw_path(params, "structures"), columns=["mp_id", "cif"],
                           filters=[("mp_id", "in", list(ids))])
    cif = dict(zip(cifs["mp_id"], cifs["cif"], strict=False))
    return [spacegroup(poscar[m], "poscar", symprec) if m in poscar else spacegroup(cif.get(m), "cif", symprec)
            for m in ids]


def screen(params: dict, cfg: dict, formulas: dict[str, str]) -> dict:
    unlabeled = pd.read_parquet("data/interim/unlabeled.parquet")
    materials = records_materials(unlabeled, formulas)
    answers = predict_materials(model_dir(params), materials, batch_size=int(cfg["batch_size"]),
                                distributed=bool(cfg["distributed"]), scheduler=cfg.get("scheduler"),
                                workers=int(cfg.get("workers") or 0), options=predict_options(params))
    table = answer_rows(materials, answers)
    status = unlabeled.groupby("mp_id")["label_status"].first()
    table["label_status"] = table["mp_id"].map(status)
    table = table.sort_values(["probability_topological", "mp_id"], ascending=[False, True], na_position="last")
    # a material without a known formula is read as its spectra's elements alone (a Cr compound as if it
    # were Cr metal): it stays in the CSV, flagged, but is not ranked in the table
    table["formula_known"] = table["formula"].notna()
    ranked = table[table["probability_topological"].notna() & table["formula_known"]]
    top = ranked.head(int(cfg["top_n"])).copy()
    top["spacegroup"] = structure_spacegroups(params, list(top["mp_id"]), float(cfg["symprec"]))
    table.to_csv(OUT / "screen.csv", index=False, float_format="%.6g")
    lines = [f"# Screening: top {len(top)} of {len(ranked)} unlabeled materials with spectra and a known formula",
             "", f"Model: the exported champion; space group from the POSCAR the spectra were computed on, else the "
             f"material's CIF (symprec {cfg['symprec']}). {int((~table['formula_known']).sum())} more candidates have "
             "no known formula: they are in reports/screen.csv (formula_known false), read as their spectra's "
             "elements alone, and not ranked here.", "",
             "| rank | mp_id | formula | space group | elements (spectrum / type) | P(topological) ± unc. |",
             "|---:|---|---|---|---|---|"]
    for i, r in enumerate(top.itertuples(index=False), 1):
        used = r.elements_with_spectrum + (f" / {r.elements_by_type}" if r.elements_by_type else "")
        lines.append(f"| {i} | {r.mp_id} | {pretty_formula(r.formula)} | {r.spacegroup} | {used} | "
                     f"{r.probability_topological:.3f}{unc(r.uncertainty)} |")
    (OUT / "screen_top.md").write_text("\n".join(lines) + "\n")
    predicted = table["probability_topological"].notna()
    return {"candidates": int(len(table)), "predicted": int(predicted.sum()), "refused": int((~predicted).sum()),
            "with_formula": int(table["formula_known"].sum()),
            "predicted_topological": int((table["label"] == "topological").sum()),
            "predicted_topological_with_formula": int((ranked["label"] == "topological").sum()),
            "label_status": {k: int(v) for k, v in table["label_status"].value_counts().items()}}


def literature_matches(params: dict, labels: pd.DataFrame) -> pd.DataFrame:
    """Literature rows matched to labeled materials by reduced composition (+ space group when given)."""
    lit = pd.read_csv(raw_path(params, "weyl_dirac_csv"), dtype={"spacegroup": str})
    lab = labels[labels["formula"].notna()].copy()
    lab["key"] = lab["formula"].map(reduced_composition)
    rows = []
    for i, r in enumerate(lit.itertuples(index=False)):
        key = reduced_composition(r.formula)
        hits = lab[lab["key"] == key]
        sg = None if str(r.spacegroup).strip().lower() in ("unknown", "nan", "") else int(float(r.spacegroup))
        if sg is not None:
            hits = hits[hits["spacegroup"] == sg]
        for h in hits.itertuples(index=False):
            rows.append({"literature_row": i, "literature_formula": r.formula,
                         "literature_spacegroup": "" if sg is None else sg, "mp_id": h.mp_id,
                         "formula": h.formula, "spacegroup": int(h.spacegroup), "tqc_label": h.label})
    return pd.DataFrame(rows)


def weyl_dirac(params: dict, cfg: dict, labels: pd.DataFrame, formulas: dict[str, str]) -> dict:
    matches = literature_matches(params, labels)
    trivial = matches[matches["tqc_label"] == "trivial"].drop_duplicates("mp_id").sort_values("mp_id")
    records = pd.read_parquet("data/interim/materials.parquet")
    records = records[records["mp_id"].isin(trivial["mp_id"])]
    with_spectra = {m.material_id: m for m in records_materials(records, formulas)}
    materials = [with_spectra.get(m, MaterialSites(m, {}, formula=formulas.get(m))) for m in trivial["mp_id"]]
    answers = predict_materials(model_dir(params), materials, batch_size=int(cfg["batch_size"]),
                                options=predict_options(params))
    table = trivial.merge(answer_rows(materials, answers).drop(columns=["formula"]), on="mp_id")
    split = pd.read_csv("data/interim/split.csv")
    table["split"] = table["mp_id"].map(dict(zip(split["mp_id"], split["split"], strict=True))).fillna("")
    table = table.sort_values("probability_topological", ascending=False)
    table.to_csv(OUT / "weyl_dirac.csv", index=False, float_format="%.6g")
    n_top = int((table["label"] == "topological").sum())
    held = table[table["split"].isin(["val", "test"])]
    lines = ["# Literature Weyl/Dirac semimetals that the symmetry-indicator labels call trivial", "",
             f"{len(lit_rows := matches['literature_row'].unique())} literature rows matched a labeled material; "
             f"{len(table)} distinct materials are labeled trivial. The model calls {n_top} of them topological "
             f"({int((held['label'] == 'topological').sum())} of the {len(held)} in validation/test, which it never "
             "trained on; a training-split material was learned as trivial).", "",
             "| mp_id | formula | space group | split | elements (spectrum / type) | P(topological) ± unc. | label |",
             "|---|---|---:|---|---|---|---|"]
    for r in table.itertuples(index=False):
        if pd.isna(r.probability_topological):
            lines.append(f"| {r.mp_id} | {r.formula} | {r.spacegroup} | {r.split} | | refused: {r.error} | |")
            continue
        used = r.elements_with_spectrum + (f" / {r.elements_by_type}" if r.elements_by_type else "")
        lines.append(f"| {r.mp_id} | {r.formula} | {r.spacegroup} | {r.split} | {used} | "
                     f"{r.probability_topological:.3f}{unc(r.uncertainty)} | {r.label} |")
    (OUT / "weyl_dirac.md").write_text("\n".join(lines) + "\n")
    return {"literature_rows_matched": int(len(lit_rows)), "trivial_materials": int(len(table)),
            "with_spectra": int((table["elements_with_spectrum"].fillna("") != "").sum()),
            "predicted_topological": n_top, "held_out": int(len(held)),
            "held_out_predicted_topological": int((held["label"] == "topological").sum()),
            "mean_probability": float(np.nanmean(table["probability_topological"])) if len(table) else None}


def main() -> None:
    params = load_params()
    cfg = params["screen"]
    labels = pd.read_csv(raw_path(params, "labels_csv"))
    f = material_formulas(labels, raw_path(params, "structures"), raw_path(params, "site_structures"))
    formulas = dict(zip(f["mp_id"], f["formula"], strict=True))
    OUT.mkdir(exist_ok=True)
    report = {"screen": screen(params, cfg, formulas), "weyl_dirac": weyl_dirac(params, cfg, labels, formulas)}
    write_json(OUT / "screen.json", report)
    print(report)


if __name__ == "__main__":
    run_stage(main)
