"""ONNX Runtime throughput of the exported champion: CPU vs CUDA execution provider, one run.

Reads models/export/model.onnx and the real test features (data/features/test.npz), tiles them to
the batch sizes asked for, and prints materials/s per provider and the CUDA/CPU ratio. Needs only
onnxruntime(-gpu) and numpy. Writes benchmarks/results/onnx_providers.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from xastopo.devices import gpu_visible, preload_cuda_libraries


def throughput(sess: ort.InferenceSession, feeds: dict, seconds: float) -> float:
    sess.run(None, feeds)  # warm-up (CUDA kernels, allocations)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, feeds)
        n += 1
    return n * len(next(iter(feeds.values()))) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/export/model.onnx")
    ap.add_argument("--features", default="data/features/test.npz")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024, 8192])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default="benchmarks/results/onnx_providers.json")
    args = ap.parse_args()
    with np.load(args.features) as f:
        base = {"spectra": f["X"], "z": f["Z"], "mask": f["mask"]}
    available = ort.get_available_providers()
    providers = [p for p in ("CPUExecutionProvider", "CUDAExecutionProvider") if p in available
                 and (p != "CUDAExecutionProvider" or gpu_visible())]
    if "CUDAExecutionProvider" in providers:
        preload_cuda_libraries()
    rows = []
    for bs in args.batch_sizes:
        reps = int(np.ceil(bs / len(base["z"])))
        feeds = {k: np.concatenate([v] * reps)[:bs] for k, v in base.items()}
        row: dict = {"batch": bs}
        for p in providers:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            sess = ort.InferenceSession(args.model, so, providers=[p])
            row[p] = throughput(sess, feeds, args.seconds) if sess.get_providers()[0] == p else None
        if row.get("CUDAExecutionProvider") and row.get("CPUExecutionProvider"):
            row["cuda_over_cpu"] = row["CUDAExecutionProvider"] / row["CPUExecutionProvider"]
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"onnxruntime": ort.__version__, "available": available,
                                          "materials_per_s": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
