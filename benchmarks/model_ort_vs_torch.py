"""The served model alone: ONNX Runtime (the exported graph, as the Predictor opens it) vs PyTorch eager
(the same ensemble + calibration rebuilt from ``models/nn_any/model.pt`` as ``export`` builds it), at batch
1, 32, 256 and 4096 materials, in one run; and the work per material against this CPU's measured GEMM
rate (float32 matmul, same thread count), i.e. the fraction of the machine's limit the model reaches.

    python benchmarks/model_ort_vs_torch.py     # ~1.5 min; writes benchmarks/results/model_ort_vs_torch.json

Inputs are real: the composition test split (``data/features/test_any.npz``: every element of each
formula an absorber, with its spectrum where the material has one), taken in order and padded, as the
Predictor pads a batch, to the batch's largest number of absorbers. Multiply-adds are counted by
torch's FLOP counter on the eager model (matmuls and einsums; 1 MAC = 2 FLOPs) and split into *executed*
(every padded absorber slot goes through the spectral MLP) and *useful* (real absorbers only).
Each timing is the best of several repeats of at least ``--seconds`` (the machine may be shared).
ONNX Runtime runs as `xastopo predict` opens the model (``predict:`` in params.yaml: a single run's idle threads
spin between operators, ``ort_spinning``; several runs go at once, one per core, ``concurrent_runs``); each
single-run rate is also measured with the other ``ort_spinning`` (the service's model worker never spins), and
the GEMM peak depends on the CPU (recorded: AVX-512 cores have ~4x an AVX2 core's).

Two ONNX graphs are timed, both with the Predictor's session options: the shipped one
(``models/export/model.onnx``) and the one the current export code writes from the same ``model.pt``
(``export_any_edge`` into a temporary folder: the ensemble + calibration as one graph, the outer
product's Einsum rewritten as a MatMul); the ratios use the latter, which `dvc repro export` ships.

Above ``--run`` materials (4,096) the product path is timed too: ``Predictor.outputs(materials, --run)`` on the
shipped model, as `xastopo predict` and the screen stage run a block of materials (``predict.block_materials``):
ordered by width, each run padded to its own, ``concurrent_runs`` runs at once; its executed multiply-adds are
counted on those runs, and its fraction of the GEMM limit is the one the target reads. It is timed one run at a
time too (``concurrent_runs: 1``, the path before that key). The GEMM peak is measured again right after it,
and the fraction uses the higher of the two peaks (the turbo state moves between minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "model_ort_vs_torch.json"
BATCHES = (1, 32, 256, 4096)


def best_rate(fn, n_items: int, seconds: float, repeats: int = 3) -> float:
    """Items/s of ``fn`` (best of ``repeats`` windows of >= ``seconds``; one warm-up call)."""
    fn()
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        best = max(best, n * n_items / dt)
    return best


def gemm_rate(threads: int, seconds: float) -> dict:
    """float32 matmul FLOP/s of torch and numpy on this CPU (the machine's practical limit)."""
    import torch

    out = {}
    for n in (256, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        out[f"torch_{n}"] = best_rate(lambda a=a, b=b: torch.mm(a, b), 2 * n ** 3, seconds)
        an, bn = a.numpy(), b.numpy()
        out[f"numpy_{n}"] = best_rate(lambda an=an, bn=bn: an @ bn, 2 * n ** 3, seconds)
    out["peak_flops"] = max(out.values())
    out["threads"] = threads
    return out


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere): GEMM peaks differ
    ~4x between the 2-core machines these numbers came from (AVX2 vs AVX-512)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_ensemble(model_pt: Path):
    import torch

    from xastopo.models.nn import CalibratedEnsemble, build_any_edge_net

    ckpt = torch.load(model_pt, map_location="cpu", weights_only=False)
    nets = []
    for state in ckpt["members"]:
        net = build_any_edge_net(ckpt["config"], ckpt["n_points"])
        net.load_state_dict(state)
        nets.append(net)
    return CalibratedEnsemble(nets, float(ckpt["temperature"]), float(ckpt.get("bias", 0.0))).eval()


def batch_arrays(data: dict, n: int) -> dict:
    """The first ``n`` test materials (tiled when the split is smaller), padded to their largest width."""
    idx = np.arange(n) % len(data["Z"])
    width = max(1, int(data["mask"][idx].sum(1).max()))
    return {"spectra": np.ascontiguousarray(data["X"][idx, :width]), "z": np.ascontiguousarray(data["Z"][idx, :width]),
            "mask": np.ascontiguousarray(data["mask"][idx, :width]),
            "has_spectrum": np.ascontiguousarray(data["has_spectrum"][idx, :width])}


def grouped_runs(data: dict, n: int, run: int) -> tuple[list, list[dict]]:
    """The same ``n`` materials as :func:`batch_arrays`, unpadded (what ``Predictor.outputs`` takes), and the
    padded runs ``Predictor.outputs(materials, run)`` makes of them (ordered by width, cut every ``run``)."""
    idx = np.arange(n) % len(data["Z"])
    widths = data["mask"][idx].sum(1).astype(int)
    mats = [(data["X"][i, :k], data["Z"][i, :k], data["has_spectrum"][i, :k]) for i, k in zip(idx, widths, strict=True)]
    order = np.argsort(widths, kind="stable")
    runs = []
    for s in range(0, n, run):
        sub = idx[order[s:s + run]]
        w = max(1, int(data["mask"][sub].sum(1).max()))
        runs.append({"spectra": data["X"][sub, :w], "z": data["Z"][sub, :w], "mask": data["mask"][sub, :w],
                     "has_spectrum": data["has_spectrum"][sub, :w]})
    return mats, runs


def macs_per_material(model, arrays: dict) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*(torch.as_tensor(arrays[k]) for k in ("spectra", "z", "mask", "has_spectrum")))
    return fc.get_total_flops() / 2 / len(arrays["z"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "export")
    ap.add_argument("--model-pt", type=Path, default=ROOT / "models" / "nn_any" / "model.pt")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "features" / "test_any.npz")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--run", type=int, default=256, help="materials per ONNX run of the product path (the CLI's "
                    "--batch-size default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="2 CPU cores; nothing else running",
                    help="what else ran on the machine (recorded with the results)")
    args = ap.parse_args()

    import tempfile

    import onnx
    import onnxruntime as ort
    import torch

    from xastopo.config import load_params, predict_options
    from xastopo.export.onnx_export import export_any_edge
    from xastopo.inference import Predictor

    threads = torch.get_num_threads()
    data = dict(np.load(args.data))
    model = load_ensemble(args.model_pt)
    opts = predict_options(load_params(ROOT / "params.yaml"))  # as `xastopo predict` opens the model
    spinning = opts.ort_spinning
    pred = Predictor(args.model_dir, prefer_gpu=False, spinning=spinning, concurrent_runs=opts.concurrent_runs)
    other = Predictor(args.model_dir, prefer_gpu=False, spinning=not spinning)
    one_at_a_time = Predictor(args.model_dir, prefer_gpu=False, spinning=spinning)
    shipped_is_current = False
    with tempfile.TemporaryDirectory() as tmp:
        export_any_edge(args.model_pt, Path(tmp) / "model.onnx", int(data["X"].shape[2]))
        current = ort.InferenceSession(str(Path(tmp) / "model.onnx"), pred.session.get_session_options(),
                                       providers=["CPUExecutionProvider"])
        current_other = ort.InferenceSession(str(Path(tmp) / "model.onnx"), other.session.get_session_options(),
                                             providers=["CPUExecutionProvider"])
        shipped_is_current = (onnx.load(str(Path(tmp) / "model.onnx")).graph.SerializeToString()
                              == onnx.load(str(pred.onnx_path)).graph.SerializeToString())
    gemm = gemm_rate(threads, args.seconds / 2)
    rows = []
    for n in BATCHES:
        a = batch_arrays(data, n)
        feed = pred.model_inputs(a["spectra"], a["z"], a["mask"], a["has_spectrum"])
        tens = [torch.as_tensor(a[k]) for k in ("spectra", "z", "mask", "has_spectrum")]
        with torch.no_grad():
            p_torch = model(*tens)[0].numpy()
        p_ort = current.run(None, feed)[0]
        shipped_rate = best_rate(lambda feed=feed: pred.session.run(None, feed), n, args.seconds)
        ort_rate = best_rate(lambda feed=feed: current.run(None, feed), n, args.seconds)
        other_rate = best_rate(lambda feed=feed: current_other.run(None, feed), n, args.seconds)

        def eager(tens=tens) -> None:
            with torch.no_grad():
                model(*tens)

        torch_rate = best_rate(eager, n, args.seconds)
        executed = macs_per_material(model, a)
        width, real = a["z"].shape[1], float(a["mask"].sum(1).mean())
        frac = 2 * executed * ort_rate / gemm["peak_flops"]
        rows.append({"batch": n, "absorber_slots": width, "absorbers_mean": round(real, 2),
                     "ort_materials_per_s": round(ort_rate, 1), "torch_materials_per_s": round(torch_rate, 1),
                     "ort_over_torch": round(ort_rate / torch_rate, 2),
                     f"ort_spinning_{not spinning}_materials_per_s": round(other_rate, 1),
                     f"ort_spinning_{not spinning}_over_torch": round(other_rate / torch_rate, 2),
                     "ort_shipped_graph_materials_per_s": round(shipped_rate, 1),
                     "ort_shipped_over_torch": round(shipped_rate / torch_rate, 2),
                     "macs_per_material_executed": round(executed), "useful_fraction": round(real / width, 3),
                     "ort_gflops": round(2 * executed * ort_rate / 1e9, 2), "fraction_of_gemm_peak": round(frac, 3),
                     "max_abs_diff_ort_torch": float(np.max(np.abs(p_ort - p_torch)))})
        if n > args.run:
            # the product path (the CLI, the screen stage): Predictor.outputs in grouped runs of the shipped model
            mats, runs = grouped_runs(data, n, args.run)
            run_rate = best_rate(lambda mats=mats: pred.outputs(mats, args.run), n, args.seconds)
            other_run_rate = best_rate(lambda mats=mats: one_at_a_time.outputs(mats, args.run), n, args.seconds)
            gemm_after = gemm_rate(threads, args.seconds / 2)
            peak = max(gemm["peak_flops"], gemm_after["peak_flops"])
            run_macs = sum(macs_per_material(model, r) * len(r["z"]) for r in runs) / n
            run_frac = 2 * run_macs * run_rate / peak
            rows[-1]["grouped_runs"] = {
                "run_materials": args.run, "runs": len(runs), "slots_per_run": [int(r["z"].shape[1]) for r in runs],
                "materials_per_s": round(run_rate, 1), "over_torch": round(run_rate / torch_rate, 2),
                "over_one_padded_run": round(run_rate / ort_rate, 2),
                "macs_per_material_executed": round(run_macs), "gflops": round(2 * run_macs * run_rate / 1e9, 2),
                "fraction_of_gemm_peak": round(run_frac, 3), "concurrent_runs": pred.concurrent_runs,
                "gemm_peak_gflops_after": round(gemm_after["peak_flops"] / 1e9, 2),
                "gemm_peak_gflops_used": round(peak / 1e9, 2), "shipped_graph_is_current_export": shipped_is_current,
                "one_run_at_a_time": {"materials_per_s": round(other_run_rate, 1),
                                      "fraction_of_gemm_peak": round(run_frac * other_run_rate / run_rate, 3)}}
    gemm_gflops = {k: (round(v / 1e9, 2) if k != "threads" else v) for k, v in gemm.items()}
    result = {"host": platform.node(), "cpu_count": os.cpu_count(), "threads": threads,
              "cpu": cpu_model(), "ort_spinning": spinning, "concurrent_runs": pred.concurrent_runs,
              "onnxruntime_provider": pred.provider,
              "gemm": gemm_gflops, "gemm_unit": "GFLOP/s", "rows": rows,
              "targets": {"ort_over_torch_batch1": ">= 1.5", "ort_over_torch_batch4096": ">= 1.0",
                          "fraction_of_gemm_peak_4096": ">= 0.70 (grouped_runs: the path the product runs)"},
              "note": args.note}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"GEMM peak (float32, {threads} threads, {result['cpu']}): {gemm['peak_flops'] / 1e9:.1f} GFLOP/s; "
          f"ONNX Runtime threads spinning: {spinning} (predict.ort_spinning; the other setting in brackets)")
    print(f"{'batch':>6} {'slots':>5} {'shipped ORT':>11} {'ORT mat/s':>11} {'torch mat/s':>12} {'ORT/torch':>9} "
          f"{'[other]':>8} "
          f"{'MAC/mat':>9} {'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        print(f"{r['batch']:>6} {r['absorber_slots']:>5} {r['ort_shipped_graph_materials_per_s']:>11.0f} "
              f"{r['ort_materials_per_s']:>11.0f} "
              f"{r['torch_materials_per_s']:>12.0f} {r['ort_over_torch']:>9.2f} "
              f"{r[f'ort_spinning_{not spinning}_over_torch']:>8.2f} "
              f"{r['macs_per_material_executed']:>9.0f} "
              f"{r['ort_gflops']:>8.2f} {r['fraction_of_gemm_peak']:>8.1%}")
    for r in rows:
        g = r.get("grouped_runs")
        if g:
            print(f"{r['batch']} materials through Predictor.outputs in {g['runs']} grouped runs of "
                  f"{g['run_materials']}: "
                  f"{g['materials_per_s']:.0f} materials/s ({g['over_one_padded_run']:.2f}x one padded run, "
                  f"{g['over_torch']:.2f}x torch), {g['macs_per_material_executed']:.0f} MAC/material, "
                  f"{g['gflops']:.1f} GFLOP/s = {g['fraction_of_gemm_peak']:.1%} of peak "
                  f"({g['gemm_peak_gflops_used']:.0f} GFLOP/s, the higher of before/after; {g['concurrent_runs']} "
                  f"runs at once) [one run at a time: {g['one_run_at_a_time']['materials_per_s']:.0f} materials/s, "
                  f"{g['one_run_at_a_time']['fraction_of_gemm_peak']:.1%}]"
                  + ("" if g["shipped_graph_is_current_export"] else
                     " (the shipped graph is not the current export's: run `dvc repro export`)"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
