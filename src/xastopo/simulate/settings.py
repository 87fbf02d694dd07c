"""FEFF simulation settings: defaults, loading from params.yaml, FEFF card strings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

#: Defaults for the ``simulate:`` block of params.yaml.  Every key can be overridden there.
DEFAULTS: dict[str, Any] = {
    # inputs (relative to data.raw_dir of params.yaml)
    "structures": "structures/structures.parquet",
    "labels_csv": "labels/topology_labels.csv",
    # outputs
    "out_dir": "data/simulated",
    # FEFF physics (these keys, and only these, enter the cache key)
    "edge": "K",
    "radius": 8.0,
    "scf": [3.5, 0, 30, 0.2, 1],
    "fms": [5.0, 0],
    "xanes": [4.0, 0.04, 0.1],
    "retry_scf": [3.5, 0, 30, 0.05, 3],
    "extra_tags": {},
    # element handling
    "skip_elements": ["H", "He"],
    "exclude_elements": ["He", "Ne", "Ar", "Kr", "Xe", "Pa"],
    # planner
    "max_sites": 30,
    "seed": 14,
    "n_materials": None,
    "budget_cpu_hours": None,
    "cost_c0_s": 25.0,
    "cost_c1_s": 1.5,
    # execution
    "workers": 0,
    "scheduler": None,
    "site_timeout_s": 1800,
    "prefer_elements": [],
    "prefer_weight": 0.0,
    "flush_every": 25,
    "malloc_env": {
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_MMAP_MAX_": "0",
        "MALLOC_TRIM_THRESHOLD_": "4294967296",
        "MALLOC_TOP_PAD_": "268435456",
    },
}

#: Keys whose values change the spectrum; they (plus the FEFF version) define the cache key.
PHYSICS_KEYS = ("edge", "radius", "scf", "fms", "xanes", "retry_scf", "extra_tags")


def load_params(path: str | os.PathLike | None) -> tuple[dict[str, Any], Path]:
    """Return (simulate settings merged over DEFAULTS, data raw dir) from a params.yaml.

    Relative paths in the file are taken relative to the file's folder.
    """
    cfg = dict(DEFAULTS)
    base = Path.cwd()
    raw_dir = Path("../shared/data")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"params file not found: {p}")
        doc = yaml.safe_load(p.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{p}: top level must be a mapping")
        base = p.resolve().parent
        sim = doc.get("simulate") or {}
        if not isinstance(sim, dict):
            raise ValueError(f"{p}: 'simulate' must be a mapping")
        unknown = set(sim) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"{p}: unknown simulate keys: {', '.join(sorted(unknown))}")
        cfg.update(sim)
        raw_dir = Path((doc.get("data") or {}).get("raw_dir", raw_dir))
    if not raw_dir.is_absolute():
        raw_dir = (base / raw_dir).resolve()
    if not Path(cfg["out_dir"]).is_absolute():
        cfg["out_dir"] = str(base / cfg["out_dir"])
    return cfg, raw_dir


def physics(cfg: dict[str, Any]) -> dict[str, Any]:
    """The subset of settings that determines the spectrum (JSON-normalised)."""
    return json.loads(json.dumps({k: cfg[k] for k in PHYSICS_KEYS}, sort_keys=True))


def card(value: Any) -> str:
    """A FEFF card value from a list (``[3.5, 0, 30]`` -> ``"3.5 0 30"``) or a string."""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)
