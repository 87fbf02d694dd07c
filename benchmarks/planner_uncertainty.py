"""The simulation planner's two modes on the same CPU budget: the default plan (most whole materials per
CPU-hour, classes balanced) against ``--by-uncertainty`` (the labeled materials the served model is least
sure of, per estimated CPU-second); writes benchmarks/results/planner_uncertainty.json.

    python benchmarks/planner_uncertainty.py                       # ~2 min; --budget-cpu-hours 2

Both plans are made as ``xastopo simulate --dry-run`` makes them (same shards, same cost model), then read
through the served model (``serving.model_dir``) from each material's formula alone, which is how the model
sees a material before its spectra exist: the uncertainty it reports (the ensemble's spread), how far its
probability is from a coin flip, and whether its label is wrong (the labels are known: these are labeled
materials), with 95 % intervals (Wilson for rates, bootstrap for means). What this cannot show without
spending the budget: whether the simulated spectra then teach the model more; it shows what each plan buys
in the model's own terms, and what it costs in materials, sites and classes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results" / "planner_uncertainty.json"
TEST_ELEMENTS = {"Cu", "Ti", "V", "Ni", "Co", "Cr"}


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson interval of a rate k/n."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [float(c - h), float(c + h)]


def boot_mean(x: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of a mean."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def describe(name: str, p, answers: dict, formulas: dict, split: dict[str, str]) -> dict:
    """What a plan buys in the model's own terms, with intervals (materials the model cannot read from
    their formula are counted apart). The error rate is also given on the plan's validation and test
    materials alone: the model trained on the others' labels."""
    from xastopo.simulate.inputs import formula_elements

    unread = [m.mp_id for m in p.materials if m.mp_id not in answers]
    ids = [m.mp_id for m in p.materials if m.mp_id in answers]
    held = np.array([split.get(i) in ("val", "test") for i in ids])
    unc = np.array([answers[i].uncertainty for i in ids])
    prob = np.array([answers[i].probability_topological for i in ids])
    wrong = np.array([answers[i].label != p.labels[i] for i in ids])
    hours = p.total_seconds / 3600
    return {
        "plan": name, "materials": len(p.materials), "unread_formula": len(unread),
        "sites": sum(len(m.jobs) for m in p.materials),
        "estimated_cpu_hours": round(hours, 3),
        "topological": sum(p.labels[i] == "topological" for i in ids),
        "with_a_test_element": sum(bool(formula_elements(formulas[i]) & TEST_ELEMENTS) for i in ids),
        "mean_uncertainty": float(unc.mean()), "mean_uncertainty_ci": boot_mean(unc),
        "uncertainty_per_cpu_hour": float(unc.sum() / hours),
        "mean_margin": float(np.abs(prob - 0.5).mean()), "mean_margin_ci": boot_mean(np.abs(prob - 0.5)),
        "wrong": int(wrong.sum()), "error_rate": float(wrong.mean()),
        "error_rate_ci": wilson(int(wrong.sum()), len(ids)),
        "wrong_per_cpu_hour": float(wrong.sum() / hours),
        "heldout_materials": int(held.sum()), "heldout_error_rate": float(wrong[held].mean()) if held.any() else None,
        "heldout_error_rate_ci": wilson(int(wrong[held].sum()), int(held.sum())),
        "ids": ids,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-cpu-hours", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None, help="simulation folder whose shards count as done")
    args = ap.parse_args()

    import pandas as pd

    from xastopo.cli_simulate import uncertainty_values
    from xastopo.config import load_params
    from xastopo.inference import InputError, MaterialSites
    from xastopo.screening import predict_materials
    from xastopo.simulate.planner import plan
    from xastopo.simulate.settings import load_params as simulate_params

    cfg, raw_dir = simulate_params(ROOT / "params.yaml")
    model_dir = ROOT / load_params(ROOT / "params.yaml")["serving"]["model_dir"]
    out = args.out or ROOT / cfg["out_dir"]
    t0 = time.perf_counter()
    value = uncertainty_values(cfg, raw_dir, model_dir)
    t_value = time.perf_counter() - t0
    plans = {"default": plan(cfg, raw_dir, out, budget_cpu_hours=args.budget_cpu_hours),
             "by_uncertainty": plan(cfg, raw_dir, out, budget_cpu_hours=args.budget_cpu_hours, value=value)}
    meta = pd.read_parquet(raw_dir / cfg["structures"], columns=["mp_id", "formula_sum"])
    formulas = dict(zip(meta.mp_id, meta.formula_sum, strict=True))
    ids = sorted({m.mp_id for p in plans.values() for m in p.materials})
    answers = {a.material_id: a for a in predict_materials(model_dir, [MaterialSites(i, {}, formula=formulas[i])
                                                                      for i in ids])
               if not isinstance(a, InputError)}
    split = dict(pd.read_csv(ROOT / "data" / "interim" / "split.csv", usecols=["mp_id", "split"])
                 .itertuples(index=False, name=None))
    rows = [describe(k, p, answers, formulas, split) for k, p in plans.items()]
    overlap = len(set(rows[0]["ids"]) & set(rows[1]["ids"]))
    res = {"budget_cpu_hours": args.budget_cpu_hours, "out": str(out), "model_dir": str(model_dir),
           "materials_scored": len(value), "scoring_seconds": round(t_value, 1),
           "overlap_materials": overlap, "plans": rows}
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    keys = ["materials", "sites", "estimated_cpu_hours", "topological", "with_a_test_element", "mean_uncertainty",
            "uncertainty_per_cpu_hour", "mean_margin", "error_rate", "wrong_per_cpu_hour", "heldout_materials",
            "heldout_error_rate"]
    print(f"budget {args.budget_cpu_hours} CPU-h; {len(value)} materials with a structure scored in {t_value:.0f} s; "
          f"{overlap} materials in both plans")
    for r in rows:
        ci = r["error_rate_ci"]
        print(r["plan"].ljust(15), " ".join(f"{k}={r[k]:.3g}" if isinstance(r[k], float) else f"{k}={r[k]}"
                                           for k in keys), f"error 95% [{ci[0]:.2f}, {ci[1]:.2f}]")


if __name__ == "__main__":
    main()
