"""FEFF10 throughput on this machine and projection to all labeled materials.

Measures sites/hour and materials/hour (whole materials: every computable edge) either from a fresh run
(``--run N``: N planner-picked materials into a scratch folder) or from the runs already recorded in an
output folder (default ``data/simulated``: ``runs/*.json`` wall times + shard rows). FEFF runs with the
malloc settings of params.yaml (``simulate.malloc_env``). The projection samples labeled materials,
counts their symmetry-unique computable sites and applies the per-site cost model fitted on the measured
sites (s/site = c0 + c1 * atoms in cell), then divides by the core count (one FEFF per core).

    python benchmarks/feff_throughput.py                         # from data/simulated
    python benchmarks/feff_throughput.py --run 6 --workers 1     # fresh measurement
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xastopo.simulate.cache import atomic_write_json
from xastopo.simulate.cluster import dask_client, machine_cores
from xastopo.simulate.pipeline import load_structures, prepare_materials, run_batch
from xastopo.simulate.planner import CLASSES, complete_in, completed_materials, cost_model, plan
from xastopo.simulate.runner import method_string
from xastopo.simulate.settings import load_params, physics
from xastopo.simulate.shards import read_shards

ROOT = Path(__file__).resolve().parent


def measure_folder(out: Path, cfg: dict, meta: pd.DataFrame) -> dict:
    """Totals of the folder, and per finished run (``runs/*.json``) its sites/hour and the whole
    materials it finished itself (every site of them in the shards that run wrote)."""
    cols = ["mp_id", "absorbing_element", "n_equivalent_classes_element", "seconds"]
    df = read_shards(out, columns=["mp_id", "seconds"])
    per_run = []
    for p in sorted((out / "runs").glob("run-*.json")):
        r = json.loads(p.read_text())
        files = [out / "shards" / f for f in r.get("shards", []) if (out / "shards" / f).is_file()]
        rows = pd.concat([pd.read_parquet(f, columns=cols) for f in files]) if files else pd.DataFrame(columns=cols)
        wall_h = r.get("wall_seconds", 0.0) / 3600
        sites = r.get("computed", 0) + r.get("failed", 0)
        mats = len(complete_in(rows, cfg, meta))
        per_run.append({
            "run": p.name, "scheduler": r.get("scheduler"), "wall_hours": wall_h, "sites_run": sites,
            "failed": r.get("failed", 0), "whole_materials_finished": mats,
            "median_seconds_per_site": float(rows.seconds.median()) if len(rows) else None,
            "sites_per_hour": sites / wall_h if wall_h else None,
            "materials_per_hour": mats / wall_h if wall_h else None,
        })
    return {
        "sites_in_shards": len(df),
        "complete_materials": len(completed_materials(out, cfg, meta)),
        "median_seconds_per_site": float(df.seconds.median()) if len(df) else None,
        "runs": per_run,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=None, help="folder with shards and runs/ (default simulate.out_dir)")
    ap.add_argument("--run", type=int, default=0, help="fresh run of this many planner-picked materials")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--sample", type=int, default=400, help="labeled materials sampled for the projection")
    ap.add_argument("--cores", default="2,64,512")
    ap.add_argument("--json", default=str(ROOT / "results/feff_throughput.json"))
    args = ap.parse_args(argv)
    cfg, raw = load_params(args.params)
    out = Path(args.out or cfg["out_dir"])
    labels = pd.read_csv(raw / cfg["labels_csv"], usecols=["mp_id", "label"])
    labels = labels[labels.label.isin(CLASSES)]
    meta = pd.read_parquet(raw / cfg["structures"], columns=["mp_id", "n_sites", "formula_sum"])
    meta = meta.merge(labels, on="mp_id")
    report: dict = {
        "machine_cores": machine_cores(),
        "method": method_string(),
        "settings": physics(cfg),
        "malloc_env": cfg["malloc_env"],
    }
    if args.run:
        scratch = Path(tempfile.mkdtemp(prefix="feff_tp_"))
        p = plan(cfg, raw, scratch, n_materials=args.run)
        t0 = time.time()
        with dask_client(None, args.workers) as client:
            s = run_batch(p.materials, cfg, scratch, client)
        wall = time.time() - t0
        done = completed_materials(scratch, cfg, meta)
        report["fresh_run"] = {
            "workers": args.workers,
            "materials": len(p.materials),
            "sites": s["computed"] + s["failed"],
            "failed": s["failed"],
            "wall_seconds": wall,
            "sites_per_hour": (s["computed"] + s["failed"]) / (wall / 3600),
            "materials_per_hour": len(done) / (wall / 3600),
            "folder": str(scratch),
        }
        out = scratch
    report["measured"] = measure_folder(out, cfg, meta)
    c0, c1 = cost_model(out, cfg, meta)
    # projection over a random sample of all labeled materials with a structure
    samp = meta.sample(min(args.sample, len(meta)), random_state=int(cfg["seed"]))
    texts = load_structures(raw / cfg["structures"], samp.mp_id.tolist()).set_index("mp_id")["cif"]
    mats, _ = prepare_materials(texts.to_dict(), cfg)
    n_atoms = meta.set_index("mp_id")["n_sites"]
    per_mat = np.array([sum(c0 + c1 * n_atoms[m.mp_id] for _ in m.jobs) for m in mats])
    sites = np.array([len(m.jobs) for m in mats])
    n_total = len(meta)
    cpu_h = per_mat.mean() * n_total / 3600
    report["projection"] = {
        "labeled_materials_with_structure": n_total,
        "cost_model": {
            "c0_s": c0,
            "c1_s_per_atom": c1,
            "fitted_on_shards": (c0, c1) != (float(cfg["cost_c0_s"]), float(cfg["cost_c1_s"])),
        },
        "sample": len(mats),
        "mean_unique_sites_per_material": float(sites.mean()),
        "mean_cpu_seconds_per_material": float(per_mat.mean()),
        "total_cpu_hours": float(cpu_h),
        "wall_hours_by_cores": {int(c): float(cpu_h / int(c)) for c in args.cores.split(",")},
        "assumptions": "one FEFF run per core, perfect packing, no failures; cost per site measured on this "
        "machine (2 cores shared with other work), so dedicated cores are faster",
    }
    atomic_write_json(args.json, report)
    print(json.dumps({k: report[k] for k in ("measured", "projection")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
