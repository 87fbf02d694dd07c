"""FEFF simulation settings: the ``simulate:`` block of params.yaml, FEFF card strings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xastopo import config
from xastopo.config import ConfigError

#: The simulate settings params.yaml may leave out (not in the project's params.yaml either).
OPTIONAL: dict[str, Any] = {
    "malloc_env": {
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_MMAP_MAX_": "0",
        "MALLOC_TRIM_THRESHOLD_": "4294967296",
        "MALLOC_TOP_PAD_": "268435456",
    },
}

#: Every simulate setting. The values live in the ``simulate:`` block of params.yaml only (no second
#: set of defaults here): a params file that leaves some out gets them from the project's params.yaml
#: (found by :func:`xastopo.config.params_path`), and a key given nowhere is an error naming it.
KEYS: tuple[str, ...] = (
    "structures", "labels_csv", "out_dir",  # inputs relative to data.raw_dir; out_dir to the params file
    "edge", "radius", "scf", "fms", "xanes", "retry_scf", "extra_tags",  # FEFF physics
    "skip_elements", "exclude_elements",
    "max_sites", "seed", "n_materials", "budget_cpu_hours", "cost_c0_s", "cost_c1_s",  # planner
    "prefer_elements", "prefer_weight",
    "workers", "scheduler", "site_timeout_s", "flush_every", "malloc_env",  # execution
)

#: Keys whose values change the spectrum; they (plus the FEFF version) define the cache key.
PHYSICS_KEYS = ("edge", "radius", "scf", "fms", "xanes", "retry_scf", "extra_tags")


def _block(params: dict[str, Any], name: str) -> dict[str, Any]:
    block = params.get(name) or {}
    if not isinstance(block, dict):
        raise ConfigError(f"params.yaml: '{name}' must be a mapping")
    return block


def _project_params() -> dict[str, Any]:
    """The params.yaml the defaults come from (the path rule's), or {} where there is none."""
    try:
        return config.load_params()
    except ConfigError:
        return {}


def defaults() -> dict[str, Any]:
    """The simulate settings of the project's params.yaml over :data:`OPTIONAL`."""
    return {**OPTIONAL, **_block(_project_params(), "simulate")}


def __getattr__(name: str) -> Any:
    # ``DEFAULTS`` (the full settings of params.yaml) is read when asked for, not at import.
    if name == "DEFAULTS":
        return defaults()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_params(path: str | os.PathLike | None = None) -> tuple[dict[str, Any], Path]:
    """Return (simulate settings, data raw dir) from a params.yaml (:func:`xastopo.config.load_params`).

    The file's ``simulate:`` block goes over the project's params.yaml (for the keys it leaves out)
    and :data:`OPTIONAL`; so does its ``data.raw_dir``. A relative ``simulate.out_dir`` or
    ``data.raw_dir`` is taken relative to the folder of the file that gives it.
    """
    params = config.load_params(path)
    base = _project_params()
    own = _block(params, "simulate")
    unknown = set(own) - set(KEYS)
    if unknown:
        raise ConfigError(f"{params.path}: unknown simulate keys: {', '.join(sorted(unknown))}")
    cfg = {**OPTIONAL, **_block(base, "simulate"), **own}
    for key in KEYS:
        if key not in cfg:
            raise ConfigError(f"params.yaml: missing key 'simulate.{key}'")
    # a relative path is relative to the folder of the file that gives it
    cfg["out_dir"] = str(config.resolve_path(params if "out_dir" in own else base, cfg["out_dir"]))
    return cfg, config.raw_dir(params if "raw_dir" in _block(params, "data") else base)


def physics(cfg: dict[str, Any]) -> dict[str, Any]:
    """The subset of settings that determines the spectrum (JSON-normalised)."""
    return json.loads(json.dumps({k: cfg[k] for k in PHYSICS_KEYS}, sort_keys=True))


def card(value: Any) -> str:
    """A FEFF card value from a list (``[3.5, 0, 30]`` -> ``"3.5 0 30"``) or a string."""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)
