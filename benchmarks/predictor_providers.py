"""The service's prediction path (Predictor: preprocessing + ONNX Runtime) on CPU vs CUDA, one run.

Input: a parquet of site spectra (the CLI's input format), e.g. the test split's sites. For each
provider the script preprocesses every material (several sites per element combined as in training),
runs the exported model in batches, and reports materials/s end to end and for the model call
alone, the CUDA/CPU ratios, and the largest probability difference between the providers.
Writes benchmarks/results/predictor_providers.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from xastopo.batch_predict import parquet_materials
from xastopo.inference import Predictor


def measure(pred: Predictor, items: list, batch: int, repeats: int) -> dict:
    t0 = time.perf_counter()
    arrays = [pred.material_arrays(i, material) for i, material in enumerate(items)]
    t_pre = time.perf_counter() - t0
    x, z, m, h = pred.padded(arrays)
    pred.predict_arrays(x[:batch], z[:batch], m[:batch], h[:batch])  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        probs = np.concatenate([pred.predict_arrays(x[i:i + batch], z[i:i + batch], m[i:i + batch], h[i:i + batch])
                                for i in range(0, len(x), batch)])
    t_model = (time.perf_counter() - t0) / repeats
    n = len(items)
    return {"provider": pred.provider, "materials": n, "batch": batch,
            "preprocess_materials_per_s": n / t_pre, "model_materials_per_s": n / t_model,
            "end_to_end_materials_per_s": n / (t_pre + t_model), "probs": probs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sites", help="parquet of site spectra (mp_id, absorbing_element, energy, mu)")
    ap.add_argument("--model-dir", default="models/export")
    ap.add_argument("--tile", type=int, default=50, help="repeat the materials this many times")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/predictor_providers.json")
    args = ap.parse_args()
    items = parquet_materials(Path(args.sites)) * args.tile
    rows = []
    for batch in args.batches:
        cpu = measure(Predictor(args.model_dir, prefer_gpu=False), items, batch, args.repeats)
        gpu_pred = Predictor(args.model_dir, prefer_gpu=True)
        row = {"batch": batch, "cpu": {k: v for k, v in cpu.items() if k != "probs"}}
        if gpu_pred.provider == "CUDAExecutionProvider":
            gpu = measure(gpu_pred, items, batch, args.repeats)
            row["cuda"] = {k: v for k, v in gpu.items() if k != "probs"}
            row["model_speedup"] = gpu["model_materials_per_s"] / cpu["model_materials_per_s"]
            row["end_to_end_speedup"] = gpu["end_to_end_materials_per_s"] / cpu["end_to_end_materials_per_s"]
            row["max_abs_prob_diff"] = float(np.max(np.abs(gpu["probs"] - cpu["probs"])))
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
