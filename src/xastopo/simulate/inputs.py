"""Structures -> symmetry-unique absorbing sites -> feff.inp text (pymatgen MPXANESSet)."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import xraydb
from pymatgen.core import Element, Structure

from .settings import card


@dataclass(frozen=True)
class SiteJob:
    """One symmetry-unique absorbing site of one material."""

    mp_id: str
    element: str
    site: int  # index into the structure as parsed from its text (CIF / POSCAR)
    multiplicity: int  # number of symmetry-equivalent sites in the cell
    n_classes: int  # number of unique sites of this element in the material

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_structure(text: str, fmt: str = "cif") -> Structure:
    """Parse CIF/POSCAR text, silencing pymatgen's rounding warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(text, fmt=fmt)


def structure_sha256(structure: Structure) -> str:
    """Hash of lattice, species and fractional coordinates (rounded), independent of file format."""
    doc = {
        "lattice": [[round(x, 6) for x in row] for row in structure.lattice.matrix.tolist()],
        "sites": [
            [site.species_string, [round(float(x) % 1.0, 6) % 1.0 for x in site.frac_coords]]
            for site in structure
        ],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def element_skip_reason(symbol: str, cfg: dict[str, Any]) -> str | None:
    """Why FEFF is not run for this element's K edge, or None if it is run."""
    if symbol in cfg["exclude_elements"]:
        return "excluded element (as in the paper: Ar He Kr Ne Pa Xe)"
    if symbol in cfg["skip_elements"]:
        return "no K-edge XANES computed for this element (H/He: no core levels below valence)"
    try:
        z = Element(symbol).Z
    except ValueError:
        return "not a chemical element"
    if z > 98:
        return "beyond FEFF's atomic data (Z > 98)"
    edge = xraydb.xray_edge(symbol, cfg.get("edge", "K"))
    if edge is None:
        return f"no tabulated {cfg.get('edge', 'K')} edge in xraydb"
    return None


_ELEMENT = re.compile(r"([A-Z][a-z]?)")


def formula_elements(formula_sum: str) -> set[str]:
    """Element symbols of a formula such as 'Cu2 O1'."""
    return set(_ELEMENT.findall(formula_sum or ""))


def computable_elements(formula_sum: str, cfg: dict[str, Any]) -> set[str]:
    """The elements of a formula whose K edge is simulated: what a complete material must have."""
    return {e for e in formula_elements(formula_sum) if element_skip_reason(e, cfg) is None}


def unique_sites(
    mp_id: str, structure: Structure, cfg: dict[str, Any]
) -> tuple[list[SiteJob], list[dict[str, str]]]:
    """Symmetry-unique absorbing sites of every element, plus the skipped elements with reasons."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if not structure.is_ordered:
        raise ValueError("disordered structure (partial occupancies)")
    try:
        groups = SpacegroupAnalyzer(structure).get_symmetrized_structure().equivalent_indices
    except Exception:  # symmetry search failed: every site is its own class
        groups = [[i] for i in range(len(structure))]
    by_el: dict[str, list[list[int]]] = {}
    for g in groups:
        el = structure[g[0]].specie.symbol
        by_el.setdefault(el, []).append(sorted(g))
    jobs: list[SiteJob] = []
    skipped: list[dict[str, str]] = []
    for el in sorted(by_el):
        reason = element_skip_reason(el, cfg)
        if reason:
            skipped.append({"mp_id": mp_id, "element": el, "reason": reason})
            continue
        classes = sorted(by_el[el])
        for g in classes:
            jobs.append(SiteJob(mp_id, el, int(g[0]), len(g), len(classes)))
    return jobs, skipped


def feff_inp(structure: Structure, site: int, cfg: dict[str, Any], retry: bool = False) -> str:
    """feff.inp text for the K edge of ``structure[site]`` (MPXANESSet, LDOS dropped)."""
    from pymatgen.io.feff.sets import MPXANESSet

    tags: dict[str, Any] = {}
    delete = ["LDOS"]
    scf = cfg["retry_scf"] if retry else cfg["scf"]
    if scf is None:
        delete.append("SCF")
    else:
        tags["SCF"] = card(scf)
    if cfg["fms"] is None:
        delete.append("FMS")
    else:
        tags["FMS"] = card(cfg["fms"])
    if cfg.get("xanes") is not None:
        tags["XANES"] = card(cfg["xanes"])
    for k, v in (cfg.get("extra_tags") or {}).items():
        tags[str(k).upper()] = card(v)
    tags["_del"] = delete
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = MPXANESSet(
            site, structure, edge=cfg.get("edge", "K"), radius=float(cfg["radius"]), user_tag_settings=tags
        )
        feff = s.all_input()
    return "\n\n".join(str(feff[k]) for k in ("HEADER", "PARAMETERS", "POTENTIALS", "ATOMS") if k in feff)
