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
    texts: dict[str, str],
    cfg: dict[str, Any],
    fmt: str = "cif",
    only_elements: Iterable[str] | None = None,
) -> tuple[list[Material], list[dict[str, str]]]:
    """Parse structures and find their unique absorbing sites; problems become skipped records.

    ``only_elements`` keeps the sites of those absorbing elements alone (every unique site of each):
    the edges the model is tested on can be grown for many materials before their other edges.
    """
    keep = set(only_elements) if only_elements else None
    mats, skipped = [], []
    for mp_id, text in texts.items():
        try:
            s = parse_structure(text, fmt)
            jobs, sk = unique_sites(mp_id, s, cfg)
        except Exception as exc:
            skipped.append({"mp_id": mp_id, "element": "*", "reason": f"structure not usable: {exc}"})
            continue
        if keep is not None:
            jobs = [j for j in jobs if j.element in keep]
            sk = [r for r in sk if r["element"] in keep]
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


def _triage(
    materials: list[Material], cfg: dict[str, Any], out: Path, retry_failed: bool
) -> tuple[list[dict], list[dict], list[dict], list[dict], dict[str, int]]:
    """Sort every site into: already in a shard, cached success (row), cached failure, or to compute.

    Returns (cached rows, cached failures, skipped records, tasks, counts).
    """
    cache = SiteCache(out / "cache")
    in_shards = shard_keys(out)
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    tasks: list[dict[str, Any]] = []
    n = {"in_shards": 0, "cached": 0, "cached_failed": 0}
    for m in materials:
        skipped.extend(m.skipped)
        for job in m.jobs:
            key = site_key(m, job, cfg)
            if key in in_shards:
                n["in_shards"] += 1
                continue
            hit = cache.get(key)
            if hit is not None and hit.get("ok"):
                rows.append(hit["row"])
                n["cached"] += 1
            elif hit is not None and not retry_failed:
                failures.append(hit["failure"])
                n["cached_failed"] += 1
            else:
                tasks.append(make_task(m, job, cfg, key))
    return rows, failures, skipped, tasks, n


def _new_summary(n_materials: int, n: dict[str, int], n_tasks: int) -> dict[str, Any]:
    return {
        "materials": n_materials,
        "sites_total": n["in_shards"] + n["cached"] + n["cached_failed"] + n_tasks,
        "sites_in_shards": n["in_shards"],
        "sites_cached": n["cached"],
        "sites_cached_failed": n["cached_failed"],
        "sites_to_compute": n_tasks,
        "computed": 0,
        "failed": 0,
        "retried_ok": 0,
        "cancelled": 0,
        "cpu_seconds": 0.0,
        "shards": [],
    }


class _ShardWriter:
    """Collects result rows and failures and writes them as one new shard every ``flush_every`` rows."""

    def __init__(self, out: Path, rows: list, failures: list, skipped: list, flush_every: int, summary: dict):
        self.out, self.rows, self.failures, self.skipped = out, rows, failures, skipped
        self.flush_every, self.summary = flush_every, summary

    def flush(self) -> None:
        p = write_shard(self.out, self.rows, self.failures, self.skipped)
        if p is not None:
            self.summary["shards"].append(p.name)
            _log(f"wrote {p} ({len(self.rows)} rows)")
        self.rows, self.failures = [], []

    def maybe_flush(self) -> None:
        if len(self.rows) >= self.flush_every:
            self.flush()


def _record_result(res: dict, cfg: dict[str, Any], cache: SiteCache, writer: _ShardWriter, summary: dict) -> None:
    """One finished site: success → cache + next shard; FEFF failure → cache + manifest; lost worker → manifest."""
    summary["cpu_seconds"] += float(res.get("seconds", 0.0))
    job = res["job"]
    if res["ok"]:
        row = result_to_row(res, cfg)
        cache.put(res["key"], {"ok": True, "row": row})
        writer.rows.append(row)
        summary["computed"] += 1
        summary["retried_ok"] += int(bool(res.get("retried")))
        _log(f"ok   {job['mp_id']} {job['element']} site {job['site']} "
             f"{res['seconds']:.0f} s{' (retry)' if res.get('retried') else ''}")
        return
    rec = failure_record(res, cfg)
    if not rec["errors"][-1].startswith("dask:"):  # FEFF failures are final; lost workers are not
        cache.put(res["key"], {"ok": False, "failure": rec})
    writer.failures.append(rec)
    summary["failed"] += 1
    _log(f"FAIL {job['mp_id']} {job['element']} site {job['site']}: {rec['errors'][-1][:160]}")


def _compute(tasks: list[dict], cfg: dict[str, Any], out: Path, client: Any, writer: _ShardWriter,
             summary: dict, budget_cpu_hours: float | None, progress: bool) -> None:
    """Submit every task to Dask and record results as they complete, within the CPU budget."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    cache = SiteCache(out / "cache")
    budget_s = None if budget_cpu_hours is None else float(budget_cpu_hours) * 3600.0
    futures = [client.submit(run_site_task, t, key=f"feff-{t['key']}", pure=False) for t in tasks]
    task_of = {f.key: t for f, t in zip(futures, tasks, strict=True)}
    bar = tqdm(total=len(futures), unit="site", desc="FEFF", disable=not progress,
               mininterval=1.0 if sys.stderr.isatty() else 60.0, file=sys.stderr)
    try:
        for fut in as_completed(futures):
            if fut.cancelled():
                continue
            try:
                res = fut.result()
            except Exception as exc:  # the worker itself died (not a FEFF failure): record, go on
                t = task_of[fut.key]
                res = {**t, "ok": False, "seconds": 0.0, "errors": [f"dask: {type(exc).__name__}: {exc}"]}
            _record_result(res, cfg, cache, writer, summary)
            bar.update(1)
            writer.maybe_flush()
            if budget_s is not None and summary["cpu_seconds"] >= budget_s:
                left = [f for f in futures if not f.done()]
                if left:
                    _log(f"CPU budget of {budget_cpu_hours} h spent: cancelling {len(left)} sites")
                    client.cancel(left)
                    summary["cancelled"] = len(left)
                break
    finally:
        bar.close()
        writer.flush()


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
    out = Path(out)
    rows, failures, skipped, tasks, n = _triage(materials, cfg, out, retry_failed)
    skipped = list(extra_skipped or []) + skipped
    summary = _new_summary(len(materials), n, len(tasks))
    _log(
        f"{len(materials)} materials, {summary['sites_total']} sites: {n['in_shards']} in shards, "
        f"{n['cached']} cached, {n['cached_failed']} failed before, {len(tasks)} to compute"
    )
    writer = _ShardWriter(out, rows, failures, skipped, int(cfg.get("flush_every", 25)), summary)
    if len(writer.rows) >= writer.flush_every or not tasks:
        writer.flush()
    t0 = time.time()
    if tasks:
        _compute(tasks, cfg, out, client, writer, summary, budget_cpu_hours, progress)
    summary["wall_seconds"] = time.time() - t0
    return summary
