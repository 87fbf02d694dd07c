"""params.yaml → settings, in one place.

Stages and the CLI read parameters only through :func:`load_params`, so a missing file or key is
reported the same way everywhere and paths are resolved against the project root, not the caller's
working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A parameter or a file it points to is missing or invalid."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml as a nested dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"parameter file not found: {p} (run from the project root or pass --params)")
    with p.open() as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return params


def get(params: dict[str, Any], dotted: str) -> Any:
    """Look up ``a.b.c`` in nested params with an error that names the key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"params.yaml: missing key '{dotted}'")
        node = node[part]
    return node


def raw_path(params: dict[str, Any], key: str, base: str | Path = ".") -> Path:
    """Absolute path of a raw data file ``data.<key>`` under ``data.raw_dir``.

    A missing file is one clear error naming the path and the parameter to change.
    """
    raw_dir = Path(base) / str(get(params, "data.raw_dir"))
    rel = str(get(params, f"data.{key}"))
    p = (raw_dir / rel).resolve()
    if not p.exists():
        raise ConfigError(
            f"raw data file not found: {p} (set data.raw_dir or data.{key} in params.yaml)"
        )
    return p
