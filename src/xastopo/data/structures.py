"""Symmetry-equivalent sites of a structure, for multiplicity weighting of site spectra."""

from __future__ import annotations

import warnings

import pandas as pd
from tqdm import tqdm


def equivalent_sites(text: str, fmt: str = "poscar", symprec: float = 0.01) -> dict[int, tuple[int, int, str]]:
    """Map site index → (equivalence class id, class size, element) for one structure.

    The class id is the smallest site index in the class, so it is stable and readable.
    """
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = Structure.from_str(text, fmt=fmt)
        sym = SpacegroupAnalyzer(s, symprec=symprec).get_symmetrized_structure()
    out: dict[int, tuple[int, int, str]] = {}
    for idx in sym.equivalent_indices:
        cls = min(idx)
        for i in idx:
            out[i] = (cls, len(idx), s[i].specie.symbol if hasattr(s[i].specie, "symbol") else str(s[i].specie))
    return out


def equivalence_table(structures: pd.DataFrame, mp_ids: set[str], text_col: str = "poscar",
                      fmt: str = "poscar") -> dict[str, dict[int, tuple[int, int, str]]]:
    """Equivalent sites for the structures of ``mp_ids`` (others are skipped)."""
    rows = structures[structures["mp_id"].isin(mp_ids)]
    table: dict[str, dict[int, tuple[int, int, str]]] = {}
    for mp, text in tqdm(zip(rows["mp_id"], rows[text_col], strict=True), total=len(rows),
                         desc="symmetry", unit="struct", mininterval=2.0):
        try:
            table[mp] = equivalent_sites(text, fmt=fmt)
        except Exception:  # an unparsable structure falls back to equal weights, reported
            continue
    return table
