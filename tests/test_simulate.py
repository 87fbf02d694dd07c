"""FEFF simulation: real FEFF10 runs on tiny structures (no mocks), cache keys, resume, Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from xastopo.simulate.cache import SiteCache, cache_key
from xastopo.simulate.inputs import parse_structure, unique_sites
from xastopo.simulate.pipeline import load_structures, prepare_materials, run_batch
from xastopo.simulate.settings import DEFAULTS, load_params, physics
from xastopo.simulate.shards import load_manifest, read_shards

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XASTOPO_RAW_DIR", REPO.parent / "shared" / "data")).resolve()
STRUCTURES = DATA / "structures" / "structures.parquet"
pytestmark = pytest.mark.skipif(not STRUCTURES.is_file(), reason="shared structure data not available")

SI = "mp-149"  # diamond Si, 2 atoms, one unique site: ~5 s of FEFF with the low settings below
SIC = "mp-1002206"  # SiC, 2 atoms, two unique sites
NACL = "mp-22851"  # rock salt, 2 atoms, two unique sites (Na, Cl): ~6 s each
LOW = {  # cheapest useful FEFF: no SCF, small clusters, coarse XANES grid
    "radius": 6.0,
    "scf": None,
    "fms": [4.0, 0],
    "xanes": [3.0, 0.07, 0.3],
    "workers": 1,
    "flush_every": 1,
}


def write_params(tmp: Path, **extra) -> Path:
    p = tmp / "params.yaml"
    p.write_text(yaml.safe_dump({"data": {"raw_dir": str(DATA)}, "simulate": {**LOW, **extra}}))
    return p


def materials(ids, cfg):
    df = load_structures(STRUCTURES, ids)
    mats, skipped = prepare_materials(dict(zip(df.mp_id, df.cif, strict=True)), cfg)
    return mats


def detached(*cmd: str) -> subprocess.Popen:
    """A background process in its own session (so killpg reaches its children), output discarded."""
    return subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "xastopo.cli_simulate", *args], capture_output=True, text=True, **kw
    )


# ---------------------------------------------------------------- fast checks


def test_cache_key_changes_with_settings():
    cfg = {**DEFAULTS, **LOW}
    k = cache_key("abc", 0, physics(cfg), "0.2.4")
    assert k == cache_key("abc", 0, physics(dict(cfg)), "0.2.4")
    assert k != cache_key("abc", 0, physics({**cfg, "fms": [5.0, 0]}), "0.2.4")
    assert k != cache_key("abc", 0, physics({**cfg, "scf": [3.5, 0, 30, 0.2, 1]}), "0.2.4")
    assert k != cache_key("abc", 1, physics(cfg), "0.2.4")
    assert k != cache_key("abd", 0, physics(cfg), "0.2.4")
    assert k != cache_key("abc", 0, physics(cfg), "0.2.5")
    # execution-only settings do not change the key
    assert k == cache_key("abc", 0, physics({**cfg, "workers": 7, "flush_every": 3}), "0.2.4")


def test_unique_sites_multiplicity_and_skips():
    df = load_structures(STRUCTURES, ["mp-23870", SIC])  # NaH (H skipped), SiC
    cfg = dict(DEFAULTS)
    s = parse_structure(df.set_index("mp_id").loc["mp-23870", "cif"])
    jobs, skipped = unique_sites("mp-23870", s, cfg)
    assert [j.element for j in jobs] == ["Na"]
    assert skipped and skipped[0]["element"] == "H" and skipped[0]["reason"]
    assert sum(j.multiplicity for j in jobs) == sum(1 for x in s if x.specie.symbol == "Na")


def test_planner_balances_classes_and_honours_preferred_elements(tmp_path):
    """Real labels and structures, an empty output folder: whole materials, half topological, and a
    preference for the elements of the shipped spectra moves materials with them into the plan."""
    from xastopo.simulate.planner import plan

    cfg, raw = load_params(write_params(tmp_path))
    cfg = {**cfg, "out_dir": str(tmp_path / "out")}
    base = plan({**cfg, "prefer_elements": [], "prefer_weight": 0.0}, raw, tmp_path / "out", n_materials=20)
    pref = plan({**cfg, "prefer_elements": ["Cu"], "prefer_weight": 5.0}, raw, tmp_path / "out", n_materials=20)
    for p in (base, pref):
        assert len(p.materials) == 20 and list(p.labels.values()).count("topological") == 10
        assert all(m.jobs for m in p.materials) and p.counts_before == {"topological": 0, "trivial": 0}
    has_cu = [sum("Cu" in {j.element for j in m.jobs} for m in p.materials) for p in (base, pref)]
    assert has_cu[1] > has_cu[0] and has_cu[1] >= 5, has_cu
    assert base.total_seconds < pref.total_seconds  # the preference costs CPU time


def test_planner_element_mode_plans_only_those_edges_first_element_first(tmp_path):
    """--elements Cu,Ti on real labels and structures: only Cu/Ti sites (every unique one), Cu materials
    first, classes balanced; sites already in the output's cache are not planned again."""
    from xastopo.simulate.cache import SiteCache
    from xastopo.simulate.inputs import formula_elements
    from xastopo.simulate.pipeline import site_key
    from xastopo.simulate.planner import plan

    cfg, raw = load_params(write_params(tmp_path))
    out = tmp_path / "out"
    cfg = {**cfg, "out_dir": str(out)}
    p = plan(cfg, raw, out, n_materials=12, elements=["Cu", "Ti"])
    assert len(p.materials) == 12 and list(p.labels.values()).count("topological") == 6
    for m in p.materials:
        els = {j.element for j in m.jobs}
        assert els == {"Cu"}, (m.mp_id, els)  # Cu first: 12 materials do not exhaust the Cu ones
        n_classes = {j.n_classes for j in m.jobs}
        assert len(n_classes) == 1 and len(m.jobs) == n_classes.pop()  # every unique Cu site
        assert {"Cu", "Ti"} & formula_elements(m.structure.composition.formula)
    # a material whose Cu sites are all computed (here: cached successes) is not planned again
    first = p.materials[0]
    for j in first.jobs:
        SiteCache(out / "cache").put(site_key(first, j, cfg), {"ok": True, "row": {}})
    again = plan(cfg, raw, out, n_materials=12, elements=["Cu", "Ti"])
    assert first.mp_id not in {m.mp_id for m in again.materials} and len(again.materials) == 12


def test_cli_help_and_bad_input(tmp_path):
    r = cli("--help")
    assert r.returncode == 0 and "--materials" in r.stdout
    for args in (["--materials", "not-an-id"], ["--materials", "mp-999999999"], ["--params", "nope.yaml"]):
        r = cli(
            *args,
            "--params" if "--params" not in args else "--out",
            str(write_params(tmp_path)) if "--params" not in args else str(tmp_path / "o"),
        )
        assert r.returncode != 0, args
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:"), r.stderr


# ---------------------------------------------------------------- real FEFF


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """mp-149 through FEFF on an embedded LocalCluster (1 worker)."""
    from xastopo.simulate.cluster import dask_client

    out = tmp_path_factory.mktemp("local")
    cfg = {**DEFAULTS, **LOW}
    t0 = time.time()
    with dask_client(None, 1) as client:
        summary = run_batch(materials([SI], cfg), cfg, out, client, progress=False)
    return out, summary, time.time() - t0


def test_end_to_end_small_structure(local_run):
    import xraydb

    out, summary, wall = local_run
    assert wall < 60
    assert summary["computed"] == 1 and summary["failed"] == 0
    df = read_shards(out)
    assert len(df) == 1
    row = df.iloc[0]
    assert (row.mp_id, row.absorbing_element, row.site) == (SI, "Si", 0)
    assert row.multiplicity == 2 and row.n_equivalent_classes_element == 1
    assert row.source == "feff10_sim" and row.method.startswith("FEFF10 (feff10-rs ") and row.normalized
    e, mu = np.asarray(row.energy), np.asarray(row.mu)
    assert e.dtype == np.float64 and mu.dtype == np.float32
    assert np.all(np.diff(e) > 0) and np.all(np.isfinite(mu))
    edge = xraydb.xray_edge("Si", "K").energy
    assert e[0] < edge + 5 < e[-1]
    assert 0.5 < float(mu[-5:].mean()) < 2.0  # FEFF normalisation: ~1 above the edge
    m = load_manifest(out)
    assert m["n_rows"] == 1 and len(m["shards"]) == 1 and m["failures"] == []


def test_rerun_adds_nothing_and_never_rewrites_shards(local_run):
    from xastopo.simulate.cluster import dask_client

    out, _, _ = local_run
    before = {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    cfg = {**DEFAULTS, **LOW}
    with dask_client(None, 1) as client:
        s = run_batch(materials([SI], cfg), cfg, out, client, progress=False)
    assert s["sites_in_shards"] == 1 and s["computed"] == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == before


def test_killed_run_resumes(tmp_path):
    params = write_params(tmp_path)
    out = tmp_path / "out"
    cfg, _ = load_params(params)
    cache = SiteCache(out / "cache")
    proc = detached(sys.executable, "-m", "xastopo.cli_simulate", "--materials", NACL, "--params", str(params),
                    "--out", str(out))
    try:
        t0 = time.time()
        while not cache.keys() and time.time() - t0 < 90:
            time.sleep(0.1)
        assert cache.keys(), "no site finished within 90 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its Dask workers and their FEFF children
        proc.wait()
    done = cache.keys()
    mtimes = {k: cache.path(k).stat().st_mtime_ns for k in done}
    # nothing half-written: no temp files, every entry parses
    assert not list((out / "cache").rglob("*.tmp"))
    for k in done:
        assert json.loads(cache.path(k).read_text())["ok"] is True
    r = cli("--materials", NACL, "--params", str(params), "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["sites_total"] == 2
    n_before = summary["sites_cached"] + summary["sites_in_shards"]
    assert n_before >= len(done) >= 1
    assert summary["computed"] == 2 - n_before
    assert {k: cache.path(k).stat().st_mtime_ns for k in done} == mtimes  # not recomputed
    df = read_shards(out)
    assert sorted(zip(df.mp_id, df.absorbing_element, strict=True)) == [(NACL, "Cl"), (NACL, "Na")]
    assert df.cache_key.is_unique


def test_external_scheduler_gives_same_spectra(local_run, tmp_path):
    from dask.distributed import Client

    dask_bin = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    procs = [detached(dask_bin, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                      "--scheduler-file", str(sched_file))]
    try:
        t0 = time.time()
        while not sched_file.exists() and time.time() - t0 < 30:
            time.sleep(0.2)
        assert sched_file.exists()
        addr = json.loads(sched_file.read_text())["address"]
        assert addr.startswith("tcp://127.0.0.1:")
        procs.append(detached(dask_bin, "worker", addr, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                              "--host", "127.0.0.1"))
        cfg = {**DEFAULTS, **LOW}
        with Client(addr, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
            s = run_batch(materials([SI], cfg), cfg, tmp_path / "remote", client, progress=False)
        assert s["computed"] == 1
    finally:
        for p in procs[::-1]:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
    local = read_shards(local_run[0]).iloc[0]
    remote = read_shards(tmp_path / "remote").iloc[0]
    assert remote.cache_key == local.cache_key
    np.testing.assert_allclose(remote.energy, local.energy, rtol=0, atol=1e-9)
    np.testing.assert_allclose(remote.mu, local.mu, rtol=1e-6, atol=1e-7)


def test_planner_value_mode_buys_most_value_per_cpu_second(tmp_path):
    """A value per material (the uncertainty mode): only materials with a value are planned, the most
    value per estimated CPU-second first, within the budget; the same budget without values plans the
    default way (whole materials per CPU-hour, classes balanced)."""
    import pandas as pd

    from xastopo.simulate.planner import plan

    cfg, raw = load_params(write_params(tmp_path))
    out = tmp_path / "out"
    cfg = {**cfg, "out_dir": str(out)}
    meta = pd.read_parquet(STRUCTURES, columns=["mp_id", "n_sites"])
    labels = pd.read_csv(raw / cfg["labels_csv"], usecols=["mp_id", "label"])
    meta = meta.merge(labels[labels.label.isin(["topological", "trivial"])], on="mp_id")
    small = meta[meta.n_sites <= 4].sort_values("mp_id").head(300)
    rng = np.random.default_rng(0)
    value = dict(zip(small.mp_id, rng.random(len(small)) * 0.01, strict=True))
    big = small[small.n_sites == 4].mp_id.head(3).tolist()  # dearer cells, far more value
    value.update({m: 1.0 for m in big})
    p = plan(cfg, raw, out, budget_cpu_hours=0.1, value=value)
    ids = [m.mp_id for m in p.materials]
    assert set(big) <= set(ids) and set(ids) <= set(value)
    assert p.total_seconds <= 0.1 * 3600 + 1e-6
    assert len(big) < len(ids) < len(small)  # the budget binds
    default = plan(cfg, raw, out, budget_cpu_hours=0.1)
    assert not set(big) <= {m.mp_id for m in default.materials}


def test_cli_records_labeled_materials_without_a_structure(tmp_path):
    """A labeled material the data ships no structure for does not stop a list: it is recorded in the
    manifest's skipped list with the reason (a warning line says so); the others are planned."""
    import pandas as pd

    params = write_params(tmp_path)
    cfg, raw = load_params(params)
    labeled = pd.read_csv(raw / cfg["labels_csv"], usecols=["mp_id"]).mp_id
    have = set(pd.read_parquet(STRUCTURES, columns=["mp_id"]).mp_id)
    missing = sorted(set(labeled) - have)
    if not missing:
        pytest.skip("every labeled material has a structure in this data")
    withheld = missing[0]
    out = tmp_path / "out"
    r = cli("--materials", f"{withheld},{SI}", "--dry-run", "--params", str(params), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["materials"] == [SI] and f"recorded as skipped: {withheld}" in r.stderr
    r = cli("--materials", withheld, "--params", str(params), "--out", str(out), "--workers", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = [s for s in load_manifest(out)["skipped"] if s["mp_id"] == withheld]
    assert rec and rec[0]["element"] == "*" and "no structure" in rec[0]["reason"]
