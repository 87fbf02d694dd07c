"""Epoch time of the paper's network on CPU vs CUDA, measured in one run.

Uses the real featurized training split (data/features/train.npz, from `dvc repro`), tiled to
``--materials`` materials so the timing reflects the paper's scale (13,151 materials) as well as ours.
Prints a table and the CUDA/CPU speed-up, writes benchmarks/results/nn_gpu_vs_cpu.json.
Needs only torch and numpy (runs on a bare GPU machine with PYTHONPATH=src).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xastopo.models.nn import XasTopoNet
from xastopo.training.nn_trainer import pos_weight, set_determinism


def tiled(arrays: dict, n: int) -> dict:
    reps = int(np.ceil(n / len(arrays["y"])))
    return {k: np.concatenate([arrays[k]] * reps)[:n] for k in ("X", "Z", "mask", "y")}


def epoch_seconds(device: torch.device, data: dict, epochs: int, batch_size: int, threads: int) -> list[float]:
    set_determinism(14, threads)
    net = XasTopoNet(n_points=data["X"].shape[2]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight(data["y"]), device=device))
    x = torch.as_tensor(data["X"], device=device)
    z = torch.as_tensor(data["Z"], device=device)
    m = torch.as_tensor(data["mask"], device=device)
    y = torch.as_tensor(data["y"], dtype=torch.float32, device=device)
    times = []
    for _ in range(epochs + 1):  # first epoch is warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        net.train()
        for i in range(0, len(x), batch_size):
            opt.zero_grad()
            loss = loss_fn(net(x[i:i + batch_size], z[i:i + batch_size], m[i:i + batch_size]), y[i:i + batch_size])
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", default="data/features/train.npz")
    ap.add_argument("--materials", type=int, nargs="+", default=[322, 13151])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (2 = the CI machine)")
    ap.add_argument("--out", default="benchmarks/results/nn_gpu_vs_cpu.json")
    args = ap.parse_args()
    with np.load(args.features) as f:
        base = {k: f[k] for k in ("X", "Z", "mask", "y")}
    rows = []
    for n in args.materials:
        data = tiled(base, n)
        row = {"materials": n, "cpu_threads": args.threads,
               "cpu_epoch_s": float(np.median(epoch_seconds(torch.device("cpu"), data, args.epochs,
                                                            args.batch_size, args.threads)))}
        if torch.cuda.is_available():
            row["gpu"] = torch.cuda.get_device_name(0)
            row["cuda_epoch_s"] = float(np.median(epoch_seconds(torch.device("cuda"), data, args.epochs,
                                                                args.batch_size, args.threads)))
            row["speedup"] = row["cpu_epoch_s"] / row["cuda_epoch_s"]
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
