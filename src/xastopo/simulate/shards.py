"""Append-only parquet shards of simulated site spectra plus a manifest.

Layout (``out`` = ``data/simulated`` by default)::

    out/shards/shard-<UTC time>-<content hash>.parquet   one file per flush, never rewritten
    out/manifest.json                                    shards, failures, skipped elements
    out/cache/                                           per-site cache (not needed by readers)

A shard that exists but is missing from the manifest (a run killed between the two writes) is picked
up by :func:`reconcile`; readers glob the folder, so they never miss one.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .cache import atomic_write_bytes, atomic_write_json

SCHEMA = pa.schema(
    [
        ("mp_id", pa.string()),
        ("absorbing_element", pa.string()),
        ("site", pa.int64()),
        ("multiplicity", pa.int64()),
        ("n_equivalent_classes_element", pa.int64()),
        ("energy", pa.list_(pa.float64())),
        ("mu", pa.list_(pa.float32())),
        ("source", pa.string()),
        ("method", pa.string()),
        ("normalized", pa.bool_()),
        ("cache_key", pa.string()),
        ("settings_json", pa.string()),
        ("structure_sha256", pa.string()),
        ("seconds", pa.float64()),
        ("retried", pa.bool_()),
        ("created_at", pa.string()),
    ]
)
SOURCE = "feff10_sim"


def shards_dir(out: str | Path) -> Path:
    out = Path(out)
    return out if out.name == "shards" else out / "shards"


def _out_root(out: str | Path) -> Path:
    out = Path(out)
    return out.parent if out.name == "shards" else out


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_manifest(out: str | Path) -> dict[str, Any]:
    p = _out_root(out) / "manifest.json"
    if p.is_file():
        return json.loads(p.read_text())
    return {"format": 1, "source": SOURCE, "shards": [], "failures": [], "skipped": []}


def save_manifest(out: str | Path, manifest: dict[str, Any]) -> None:
    manifest["updated_at"] = now()
    atomic_write_json(_out_root(out) / "manifest.json", manifest)


def _shard_entry(path: Path) -> dict[str, Any]:
    t = pq.read_table(path, columns=["mp_id", "cache_key", "settings_json"])
    return {
        "file": f"shards/{path.name}",
        "rows": t.num_rows,
        "materials": len(set(t.column("mp_id").to_pylist())),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "settings_json": sorted(set(t.column("settings_json").to_pylist())),
    }


def reconcile(out: str | Path) -> dict[str, Any]:
    """Add any shard file not yet listed to the manifest (after a kill between the two writes)."""
    m = load_manifest(out)
    listed = {s["file"] for s in m["shards"]}
    changed = False
    for p in sorted(shards_dir(out).glob("shard-*.parquet")):
        if f"shards/{p.name}" not in listed:
            m["shards"].append({**_shard_entry(p), "created_at": now(), "note": "reconciled"})
            changed = True
    if changed:
        save_manifest(out, m)
    return m


def write_shard(
    out: str | Path,
    rows: list[dict[str, Any]],
    failures: list[dict[str, Any]] | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> Path | None:
    """Write ``rows`` as a new shard (never touching old ones) and update the manifest.

    Rows whose cache_key is already in a shard are dropped. Returns the shard path (None if no new row).
    """
    out_root = _out_root(out)
    m = reconcile(out_root)
    have = shard_keys(out_root)
    seen: set[str] = set()
    new = []
    for r in rows:
        if r["cache_key"] in have or r["cache_key"] in seen:
            continue
        seen.add(r["cache_key"])
        new.append({k: r.get(k) for k in SCHEMA.names})
    path = None
    if new:
        new.sort(key=lambda r: (r["mp_id"], r["site"]))
        table = pa.Table.from_pylist(new, schema=SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = shards_dir(out_root) / f"shard-{stamp}-{hashlib.sha256(data).hexdigest()[:10]}.parquet"
        atomic_write_bytes(path, data)
        m["shards"].append({**_shard_entry(path), "created_at": now()})
    _merge_records(m, "failures", failures or [], ("cache_key",))
    _merge_records(m, "skipped", skipped or [], ("mp_id", "element"))
    # a site that has since succeeded is no longer a failure
    done = have | seen
    m["failures"] = [f for f in m["failures"] if f.get("cache_key") not in done]
    m["n_rows"] = sum(s["rows"] for s in m["shards"])
    save_manifest(out_root, m)
    return path


def _merge_records(m: dict[str, Any], name: str, recs: list[dict[str, Any]], key: tuple[str, ...]) -> None:
    index = {tuple(r.get(k) for k in key): i for i, r in enumerate(m.setdefault(name, []))}
    for r in recs:
        k = tuple(r.get(kk) for kk in key)
        if k in index:
            m[name][index[k]] = r
        else:
            index[k] = len(m[name])
            m[name].append(r)


def read_shards(folder: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """All shard rows (``folder`` = the output dir or its ``shards/`` subfolder), one row per cache_key."""
    files = sorted(shards_dir(folder).glob("shard-*.parquet"))
    if not files:
        return SCHEMA.empty_table().to_pandas() if columns is None else pd.DataFrame(columns=columns)
    cols = None if columns is None else list(dict.fromkeys([*columns, "cache_key"]))
    df = pd.concat([pq.read_table(f, columns=cols).to_pandas() for f in files], ignore_index=True)
    df = df.drop_duplicates("cache_key", keep="first").reset_index(drop=True)
    return df if columns is None else df[columns]


def shard_keys(folder: str | Path) -> set[str]:
    files = sorted(shards_dir(folder).glob("shard-*.parquet"))
    keys: set[str] = set()
    for f in files:
        keys.update(pq.read_table(f, columns=["cache_key"]).column("cache_key").to_pylist())
    return keys
