"""Pipeline timing: a no-op `dvc repro` and each stage's wall time, in one run (issue 14).

    python benchmarks/pipeline_timing.py                      # no-op repro + cheap stages forced one by one
    python benchmarks/pipeline_timing.py --stages featurize   # only these stages

Run it on an up-to-date checkout (`dvc repro` done). The no-op repro is timed three times (median). The
listed stages are rerun with `dvc repro -f -s <stage>` (deterministic stages: their outputs come back
byte-identical, so the workspace stays clean); the training stages are read from their last MLflow runs
instead of being rerun. Prints a table and writes benchmarks/results/pipeline_timing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

CHEAP = ["ingest", "assemble", "split", "featurize", "report", "select", "export", "explain", "screen",
         "learning_curve"]


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def training_times() -> dict[str, float]:
    """Durations of the last MLflow child run of every trained family (the train@<family> stages)."""
    import mlflow

    from xastopo.config import load_params

    params = load_params()
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", params["mlflow"]["tracking_uri"]))
    runs = mlflow.search_runs(experiment_names=[params["mlflow"]["experiment"]], max_results=50,
                              order_by=["start_time DESC"])
    out: dict[str, float] = {}
    for fam in params["train"]["families"]:
        r = runs[runs["tags.mlflow.runName"] == fam]
        if len(r):
            out[f"train@{fam}"] = float((r.iloc[0]["end_time"] - r.iloc[0]["start_time"]).total_seconds())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default=",".join(CHEAP), help="stages to force-rerun and time")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline_timing.json"))
    args = ap.parse_args()
    status = subprocess.run(["dvc", "status", "-q"], capture_output=True, text=True)
    if status.returncode != 0:
        raise SystemExit("the pipeline is not up to date: run `dvc repro` first")
    noop = [timed(["dvc", "repro"]) for _ in range(3)]
    stages = {s: timed(["dvc", "repro", "-f", "-s", s]) for s in args.stages.split(",") if s}
    stages.update(training_times())
    res = {"noop_repro_s": statistics.median(noop), "noop_repro_runs_s": noop, "stage_s": stages,
           "stage_total_s": sum(stages.values()), "cores": os.cpu_count(),
           "note": "training stages from their last MLflow runs; other stages forced one by one (each includes "
                   "dvc's own start-up and hashing)"}
    print(f"no-op dvc repro: {res['noop_repro_s']:.2f} s (target < 5 s)")
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {k:24s} {v:8.1f} s")
    print(f"  {'sum':24s} {res['stage_total_s']:8.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
