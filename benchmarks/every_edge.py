"""The paper's every-edge task on our test split: the served ``nn_any`` (trained without the FEFF10
simulations) against the same model trained with them, on the test materials that have a spectrum for
every element of their composition; writes benchmarks/results/every_edge.json.

    git worktree add ../xastopo-with-sim HEAD && cd ../xastopo-with-sim
    # params.yaml: assemble.train_sources += [feff10_sim]; then
    dvc repro train@nn_any && cd -
    python benchmarks/every_edge.py . ../xastopo-with-sim

The every-edge set is defined in the run *with* the simulations (where every simulated edge has
training statistics): ``xastopo.training.any_edge.test_sets`` on its ``data/features/test_any.npz``.
Both runs' ``models/nn_any/predictions_test_all.csv`` (every test material, each at its own run's
validation-chosen threshold) are scored on those materials with a paired bootstrap (2000 resamples),
beside the with-simulations run's own ablation (composition only / spectra only / both) from its
``metrics/nn_any.json``. The shipped test materials (one edge each, mostly Cu) are scored the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results" / "every_edge.json"


def run_predictions(run: Path, ids: np.ndarray, name: str):
    """One run's nn_any test predictions on ``ids`` (in that order), at its validation threshold."""
    from xastopo.training.compare import RunPredictions

    p = pd.read_csv(run / "models" / "nn_any" / "predictions_test_all.csv").set_index("mp_id").loc[ids]
    thr = float(json.loads((run / "metrics" / "nn_any.json").read_text())["threshold"])
    return RunPredictions(name, np.asarray(ids), p["y"].to_numpy(int), p["prob"].to_numpy(float), thr, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path, help="workspace of the served run (no simulations)")
    ap.add_argument("with_sim", type=Path, help="workspace of the run trained with feff10_sim")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()

    from xastopo.preprocessing.dataset import load_arrays
    from xastopo.training.any_edge import test_sets
    from xastopo.training.compare import paired_bootstrap

    a = load_arrays(args.with_sim / "data" / "features" / "test_any.npz")
    split = pd.read_csv(args.with_sim / "data" / "interim" / "split.csv")
    shipped = split[(split["pool"] == "spectra") & (split["split"] == "test")]["mp_id"].to_numpy()
    rows = test_sets(a, shipped)
    ids = {"every_edge": a["ids"][rows["every_edge"]], "shipped": a["ids"][rows["shipped"]]}
    n_abs = (a["mask"][rows["every_edge"]] > 0).sum(axis=1)
    res: dict = {"every_edge_materials": int(len(ids["every_edge"])),
                 "every_edge_shipped": int(np.isin(ids["every_edge"], shipped).sum()),
                 "every_edge_topological": int(a["y"][rows["every_edge"]].sum()),
                 "every_edge_absorbers_per_material": {str(k): int(v) for k, v in
                                                       zip(*np.unique(n_abs, return_counts=True), strict=True)},
                 "ablation_with_sim": json.loads((args.with_sim / "metrics" / "nn_any.json").read_text())["test_sets"],
                 "served_vs_with_sim": {}}
    for name, m in ids.items():
        base = run_predictions(args.base, m, "served (no simulations)")
        other = run_predictions(args.with_sim, m, "with simulations")
        res["served_vs_with_sim"][name] = paired_bootstrap(base, other, args.n_boot)
    for v in res["ablation_with_sim"].values():
        v.pop("ids", None)
    RESULTS.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(f"every-edge test materials: {res['every_edge_materials']} ({res['every_edge_shipped']} shipped), "
          f"{res['every_edge_topological']} topological, absorbers {res['every_edge_absorbers_per_material']}")
    for name, r in res["served_vs_with_sim"].items():
        for k, s in r["scores"].items():
            print(f"  {name:10s} {k:15s} served {s['a']:.3f}  with sim {s['b']:.3f}  "
                  f"diff {s['diff']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]")


if __name__ == "__main__":
    main()
