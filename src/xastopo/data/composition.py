"""The composition of every usable labeled material: the input the any-edge model always has.

A formula comes from the labels file, else the structures file's CIF ``formula_sum``, else the POSCAR
the shipped spectra were computed on. Elements are parsed by :func:`xastopo.elements.parse_formula`,
the same parser the request schema uses, so training and serving read a formula the same way.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xastopo.data.labels import usable_labels
from xastopo.elements import N_TYPES, atomic_number, formula_elements


def material_formulas(labels: pd.DataFrame, structures: str | Path, poscars: str | Path) -> pd.DataFrame:
    """(mp_id, formula) of every material any of the three sources names, labeled or not: the labels'
    formula, else the CIF's ``formula_sum``, else the POSCAR's formula (one precedence for training,
    screening and the literature table)."""
    structs = pd.read_parquet(structures, columns=["mp_id", "formula_sum"]).drop_duplicates("mp_id")
    pos = pd.read_parquet(poscars, columns=["mp_id", "formula"]).rename(columns={"formula": "formula_poscar"})
    ids = pd.DataFrame({"mp_id": pd.concat([labels["mp_id"], structs["mp_id"], pos["mp_id"]]).unique()})
    out = (ids.merge(labels[["mp_id", "formula"]].drop_duplicates("mp_id"), on="mp_id", how="left")
           .merge(structs, on="mp_id", how="left").merge(pos.drop_duplicates("mp_id"), on="mp_id", how="left"))
    out["formula"] = out["formula"].fillna(out["formula_sum"]).fillna(out["formula_poscar"])
    return out.loc[out["formula"].notna(), ["mp_id", "formula"]].reset_index(drop=True)


def labeled_compositions(labels: pd.DataFrame, structures: str | Path, poscars: str | Path) -> pd.DataFrame:
    """Rows (mp_id, formula, elements, label, label3, y, y3) of every usable labeled material with a
    formula; ``elements`` is a space-separated list sorted by Z. Materials whose formula cannot be
    read or that hold an element beyond the model's atom types (Z > 92) are left out."""
    lab, _ = usable_labels(labels)
    lab = lab.merge(material_formulas(labels, structures, poscars), on="mp_id", how="inner")
    lab["elements"] = lab["formula"].map(_elements_or_empty)
    return lab[lab["elements"] != ""].reset_index(drop=True)


def _elements_or_empty(formula: str) -> str:
    try:
        els = formula_elements(str(formula))
    except ValueError:
        return ""
    return " ".join(els) if all(atomic_number(e) < N_TYPES for e in els) else ""


def element_rows(comp: pd.DataFrame) -> pd.DataFrame:
    """One row per (mp_id, element) with the material's label3: the split's balancing input."""
    rows = comp[["mp_id", "elements", "label3"]].assign(absorbing_element=comp["elements"].str.split())
    return rows.explode("absorbing_element")[["mp_id", "absorbing_element", "label3"]].reset_index(drop=True)
