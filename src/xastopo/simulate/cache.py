"""Per-site result cache: key = sha256(structure hash, site, physics settings, FEFF version).

Each entry is one JSON file written atomically (temp file in the same folder, then ``os.replace``),
so a killed run leaves either a complete entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_key(structure_sha256: str, site: int, settings: dict[str, Any], feff_version: str) -> str:
    doc = {"structure": structure_sha256, "site": int(site), "settings": settings, "feff": feff_version}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, sort_keys=True).encode())


class SiteCache:
    """A folder of ``<key[:2]>/<key>.json`` entries (successes and recorded failures)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):  # cannot happen with atomic writes; treat as absent
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        atomic_write_json(self.path(key), entry)

    def keys(self) -> set[str]:
        return {p.stem for p in self.root.glob("*/*.json")} if self.root.is_dir() else set()
