"""Batch orchestration: sites -> cache lookups -> Dask tasks -> cache -> shards."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pymatgen.core import Structure

from .cache import SiteCache, cache_key
from .inputs import SiteJob, feff_inp, parse_structure, structure_sha256, unique_sites
from .runner import feff_version, method_string, run_site_task
from .settings import physics
from .shards import SOURCE, now, shard_keys, write_shard


@dataclass
class Material:
    mp_id: str
    structure: Structure
    sha256: str = ""
    jobs: list[SiteJob] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def load_structures(path: str | Path, mp_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows (mp_id, n_sites, cif) of the structures parquet, optionally restricted to ``mp_ids``."""
    cols = ["mp_id", "n_sites", "formula_sum", "cif"]
    if mp_ids is None:
        return pd.read_parquet(path, columns=cols)
    ids = list(dict.fromkeys(mp_ids))
    df = pd.read_parquet(path, columns=cols, filters=[("mp_id", "in", ids)])
    return df.set_index("mp_id").loc[[i for i in ids if i in set(df.mp_id)]].reset_index()


def prepare_materials(
    texts: dict[str, str], cfg: dict[str, Any], fmt: str = "cif"
) -> tuple[list[Material], list[dict[str, str]]]:
    """Parse structures and find their unique absorbing sites; problems become skipped records."""
    mats, skipped = [], []
    for mp_id, text in texts.items():
        try:
            s = parse_structure(text, fmt)
            jobs, sk = unique_sites(mp_id, s, cfg)
        except Exception as exc:
            skipped.append({"mp_id": mp_id, "element": "*", "reason": f"structure not usable: {exc}"})
            continue
        m = Material(mp_id, s, structure_sha256(s), jobs, sk)
        skipped.extend(sk)
        mats.append(m)
    return mats, skipped


def site_key(m: Material, job: SiteJob, cfg: dict[str, Any]) -> str:
    return cache_key(m.sha256, job.site, physics(cfg), feff_version())


def make_task(m: Material, job: SiteJob, cfg: dict[str, Any], key: str) -> dict[str, Any]:
    retry = None
    if cfg.get("retry_scf") is not None and cfg.get("retry_scf") != cfg.get("scf"):
        retry = feff_inp(m.structure, job.site, cfg, retry=True)
    return {
        "key": key,
        "job": job.as_dict(),
        "structure_sha256": m.sha256,
        "feff_inp": feff_inp(m.structure, job.site, cfg),
        "retry_inp": retry,
        "env": dict(cfg.get("malloc_env") or {}),
        "timeout_s": float(cfg.get("site_timeout_s", 1800)),
    }


def result_to_row(res: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    job = res["job"]
    return {
        "mp_id": job["mp_id"],
        "absorbing_element": job["element"],
        "site": int(job["site"]),
        "multiplicity": int(job["multiplicity"]),
        "n_equivalent_classes_element": int(job["n_classes"]),
        "energy": res["energy"],
        "mu": res["mu"],
        "source": SOURCE,
        "method": method_string(),
        "normalized": True,
        "cache_key": res["key"],
        "settings_json": json.dumps(physics(cfg), sort_keys=True),
        "structure_sha256": res["structure_sha256"],
        "seconds": float(res["seconds"]),
        "retried": bool(res.get("retried", False)),
        "created_at": now(),
    }


def failure_record(res: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    job = res["job"]
    return {
        "mp_id": job["mp_id"],
        "element": job["element"],
        "site": int(job["site"]),
        "cache_key": res["key"],
        "errors": res.get("errors", []),
        "seconds": float(res.get("seconds", 0.0)),
        "settings_json": json.dumps(physics(cfg), sort_keys=True),
        "feff_version": feff_version(),
        "recorded_at": now(),
    }


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def run_batch(
    materials: list[Material],
    cfg: dict[str, Any],
    out: str | Path,
    client: Any,
    *,
    budget_cpu_hours: float | None = None,
    retry_failed: bool = False,
    extra_skipped: list[dict[str, str]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute every not-yet-done site of ``materials`` on ``client``; write cache entries and shards.

    Resume rules: a site whose cache key is in a shard is skipped; a cached success is written to the
    next shard without recomputation; a cached failure is skipped unless ``retry_failed``.
    """
    from dask.distributed import as_completed
    from tqdm import tqdm

    out = Path(out)
    cache = SiteCache(out / "cache")
    in_shards = shard_keys(out)
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    skipped = list(extra_skipped or [])
    tasks: list[dict[str, Any]] = []
    n_in_shards = n_cached = n_cached_failed = 0
    for m in materials:
        skipped.extend(m.skipped)
        for job in m.jobs:
            key = site_key(m, job, cfg)
            if key in in_shards:
                n_in_shards += 1
                continue
            hit = cache.get(key)
            if hit is not None and hit.get("ok"):
                rows.append(hit["row"])
                n_cached += 1
                continue
            if hit is not None and not retry_failed:
                failures.append(hit["failure"])
                n_cached_failed += 1
                continue
            tasks.append(make_task(m, job, cfg, key))
    summary: dict[str, Any] = {
        "materials": len(materials),
        "sites_total": n_in_shards + n_cached + n_cached_failed + len(tasks),
        "sites_in_shards": n_in_shards,
        "sites_cached": n_cached,
        "sites_cached_failed": n_cached_failed,
        "sites_to_compute": len(tasks),
        "computed": 0,
        "failed": 0,
        "retried_ok": 0,
        "cancelled": 0,
        "cpu_seconds": 0.0,
        "shards": [],
    }
    _log(
        f"{len(materials)} materials, {summary['sites_total']} sites: {n_in_shards} in shards, "
        f"{n_cached} cached, {n_cached_failed} failed before, {len(tasks)} to compute"
    )
    flush_every = int(cfg.get("flush_every", 25))
    pending_rows = rows
    rows = []

    def flush() -> None:
        nonlocal pending_rows, failures
        p = write_shard(out, pending_rows, failures, skipped)
        if p is not None:
            summary["shards"].append(p.name)
            _log(f"wrote {p} ({len(pending_rows)} rows)")
        pending_rows, failures = [], []

    if len(pending_rows) >= flush_every or not tasks:
        flush()
    budget_s = None if budget_cpu_hours is None else float(budget_cpu_hours) * 3600.0
    t0 = time.time()
    if tasks:
        futures = [client.submit(run_site_task, t, key=f"feff-{t['key']}", pure=False) for t in tasks]
        task_of = {f.key: t for f, t in zip(futures, tasks, strict=True)}
        bar = tqdm(
            total=len(futures),
            unit="site",
            desc="FEFF",
            disable=not progress,
            mininterval=1.0 if sys.stderr.isatty() else 60.0,
            file=sys.stderr,
        )
        ac = as_completed(futures)
        try:
            for fut in ac:
                if fut.cancelled():
                    continue
                try:
                    res = fut.result()
                except Exception as exc:  # the worker itself died (not a FEFF failure): record, go on
                    t = task_of[fut.key]
                    res = {**t, "ok": False, "seconds": 0.0, "errors": [f"dask: {type(exc).__name__}: {exc}"]}
                summary["cpu_seconds"] += float(res.get("seconds", 0.0))
                job = res["job"]
                if res["ok"]:
                    row = result_to_row(res, cfg)
                    cache.put(res["key"], {"ok": True, "row": row})
                    pending_rows.append(row)
                    summary["computed"] += 1
                    summary["retried_ok"] += int(bool(res.get("retried")))
                    _log(
                        f"ok   {job['mp_id']} {job['element']} site {job['site']} "
                        f"{res['seconds']:.0f} s{' (retry)' if res.get('retried') else ''}"
                    )
                else:
                    rec = failure_record(res, cfg)
                    if not rec["errors"][-1].startswith("dask:"):  # FEFF failures are final; lost workers not
                        cache.put(res["key"], {"ok": False, "failure": rec})
                    failures.append(rec)
                    summary["failed"] += 1
                    _log(
                        f"FAIL {job['mp_id']} {job['element']} site {job['site']}: {rec['errors'][-1][:160]}"
                    )
                bar.update(1)
                if len(pending_rows) >= flush_every:
                    flush()
                if budget_s is not None and summary["cpu_seconds"] >= budget_s:
                    left = [f for f in futures if not f.done()]
                    if left:
                        _log(f"CPU budget of {budget_cpu_hours} h spent: cancelling {len(left)} sites")
                        client.cancel(left)
                        summary["cancelled"] = len(left)
                    break
        finally:
            bar.close()
            flush()
    summary["wall_seconds"] = time.time() - t0
    return summary
