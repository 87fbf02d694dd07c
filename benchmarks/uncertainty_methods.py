"""Which per-prediction uncertainty to serve: the deep ensemble's spread (what ``nn_any`` ships) against
Monte-Carlo dropout, measured on the validation split (where the choice is made) and reported on the test
split, with 95 % bootstrap intervals; writes benchmarks/results/uncertainty_methods.json.

    python benchmarks/uncertainty_methods.py            # ~3 min on 2 cores; --passes 20

Methods, all on the trained ``models/nn_any/model.pt`` (3 members, Platt calibration fitted on validation),
the composition splits ``data/features/{val,test}_any.npz`` (every element an absorber, spectra where present):

* ``ensemble``: the served answer: P = mean of the 3 members' calibrated probabilities, uncertainty = their
  standard deviation (3 forward passes);
* ``mc_dropout``: member 0 alone with its dropout layers left on, ``--passes`` stochastic passes, each
  calibrated as served; P = their mean, uncertainty = their standard deviation;
* ``ensemble_mc``: every member with dropout on, ``--passes`` passes spread over the 3 members;
* ``ensemble_fixed_masks``: the servable form of ``ensemble_mc``: each pass thins a member with fixed dropout
  masks shared by all materials (seeded per pass), so answers are reproducible and independent of run-mates.

Read: a useful uncertainty ranks the answers to trust, so the main number is the AUROC of the uncertainty for
telling wrong answers (at the served threshold) from right ones; beside it the error rates of the more and less
certain halves, the probability's Brier score and log loss, and the forward passes per material (the serving
cost: the ensemble is one ONNX graph of 3 members; MC dropout would need ``--passes`` runs per material).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from model_ort_vs_torch import load_ensemble

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "uncertainty_methods.json"


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """scikit-learn's ROC AUC; NaN when one class is absent (a bootstrap draw can miss the rare one)."""
    from sklearn.metrics import roc_auc_score

    pos = positive.astype(bool)
    return float(roc_auc_score(pos, score)) if 0 < pos.sum() < len(pos) else float("nan")


def scores(p: np.ndarray, u: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    wrong = (p >= threshold).astype(int) != y
    order = np.argsort(u, kind="stable")
    half = len(u) // 2
    eps = 1e-7
    q = np.clip(p, eps, 1 - eps)
    return {"error_auroc": auroc(u, wrong), "errors_certain_half": float(wrong[order[:half]].mean()),
            "errors_uncertain_half": float(wrong[order[half:]].mean()), "error_rate": float(wrong.mean()),
            "brier": float(np.mean((p - y) ** 2)), "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
            "auc": auroc(p, y.astype(bool))}


def boot(p: dict, u: dict, y: np.ndarray, threshold: float, n: int, seed: int = 14) -> dict:
    """95 % percentile intervals of each method's error AUROC and of its paired difference to the ensemble."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in p}
    diffs: dict[str, list[float]] = {m: [] for m in p if m != "ensemble"}
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        got = {m: scores(p[m][i], u[m][i], y[i], threshold)["error_auroc"] for m in p}
        for m, v in got.items():
            draws[m].append(v)
            if m != "ensemble":
                diffs[m].append(got["ensemble"] - v)
    ci = lambda v: [round(float(np.nanpercentile(v, 2.5)), 3), round(float(np.nanpercentile(v, 97.5)), 3)]  # noqa: E731
    return {"error_auroc_ci95": {m: ci(v) for m, v in draws.items()},
            "ensemble_minus_method_ci95": {m: ci(v) for m, v in diffs.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-pt", type=Path, default=ROOT / "models" / "nn_any" / "model.pt")
    ap.add_argument("--metadata", type=Path, default=ROOT / "models" / "export" / "metadata.json")
    ap.add_argument("--passes", type=int, default=21)
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import torch

    torch.manual_seed(14)
    ens = load_ensemble(args.model_pt)
    threshold = float(json.loads(args.metadata.read_text())["threshold"])
    inv_t, bias = float(ens.inv_temperature), float(ens.bias)

    def calibrated(net, t: dict) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(net(*t) * inv_t + bias).numpy().astype(np.float64)

    def dropout_on(net) -> None:
        net.eval()
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.train()

    hooks: dict[int, list] = {}

    def fixed_masks(net, k: int | None) -> None:
        """Pass ``k`` of the servable variant: every dropout layer of ``net`` (in eval mode) multiplies by one
        fixed mask over its features, drawn from seed 14 + k and shared by every material, so an answer is
        reproducible and does not depend on its run-mates (an ONNX graph could hold the masks as constants);
        None removes the masks."""
        for h in hooks.pop(id(net), []):
            h.remove()
        if k is None:
            return
        gen = torch.Generator().manual_seed(14 + k)

        def hook(module, inputs, output):
            if not hasattr(module, "_mask") or module._mask_pass != k:
                keep = torch.rand(output.shape[-1], generator=gen) >= module.p
                module._mask, module._mask_pass = keep.to(output.dtype) / (1 - module.p), k
            return output * module._mask

        hooks[id(net)] = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Dropout)]

    result: dict = {"model": str(args.model_pt.relative_to(ROOT)), "threshold": threshold, "passes": args.passes,
                    "splits": {}}
    for split in ("val", "test"):
        d = np.load(ROOT / "data" / "features" / f"{split}_any.npz")
        t = [torch.as_tensor(d[k]) for k in ("X", "Z", "mask", "has_spectrum")]
        y = d["y"].astype(int)
        p, u, cost = {}, {}, {}
        t0 = time.perf_counter()
        for net in ens.nets:
            net.eval()
        members = np.stack([calibrated(net, t) for net in ens.nets])
        p["ensemble"], u["ensemble"] = members.mean(0), members.std(0)
        cost["ensemble"] = (len(ens.nets), time.perf_counter() - t0)
        t0 = time.perf_counter()
        dropout_on(ens.nets[0])
        runs = np.stack([calibrated(ens.nets[0], t) for _ in range(args.passes)])
        p["mc_dropout"], u["mc_dropout"] = runs.mean(0), runs.std(0)
        cost["mc_dropout"] = (args.passes, time.perf_counter() - t0)
        t0 = time.perf_counter()
        runs = []
        for k in range(args.passes):
            net = ens.nets[k % len(ens.nets)]
            dropout_on(net)
            runs.append(calibrated(net, t))
        runs = np.stack(runs)
        p["ensemble_mc"], u["ensemble_mc"] = runs.mean(0), runs.std(0)
        cost["ensemble_mc"] = (args.passes, time.perf_counter() - t0)
        for net in ens.nets:
            net.eval()
        t0 = time.perf_counter()
        runs = []
        for k in range(args.passes):
            net = ens.nets[k % len(ens.nets)]
            fixed_masks(net, k)
            runs.append(calibrated(net, t))
            fixed_masks(net, None)
        runs = np.stack(runs)
        p["ensemble_fixed_masks"], u["ensemble_fixed_masks"] = runs.mean(0), runs.std(0)
        cost["ensemble_fixed_masks"] = (args.passes, time.perf_counter() - t0)
        result["splits"][split] = {
            "materials": len(y),
            "methods": {m: {**{k: round(v, 4) for k, v in scores(p[m], u[m], y, threshold).items()},
                            "passes_per_material": cost[m][0], "seconds": round(cost[m][1], 2)} for m in p},
            **boot(p, u, y, threshold, args.n_boot)}
    val = result["splits"]["val"]["methods"]
    result["chosen_on_val"] = max(val, key=lambda m: (val[m]["error_auroc"], -val[m]["passes_per_material"]))
    result["note"] = "2 CPU cores shared with a running FEFF simulation (one core busy); torch eager, 2 threads"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for split, r in result["splits"].items():
        print(f"{split} ({r['materials']} materials): error AUROC of the uncertainty [95 % CI], errors in the "
              "certain / uncertain half, Brier, log loss, passes")
        for m, s in r["methods"].items():
            lo, hi = r["error_auroc_ci95"][m]
            print(f"  {m:12s} {s['error_auroc']:.3f} [{lo:.3f}, {hi:.3f}]  {s['errors_certain_half']:.1%} / "
                  f"{s['errors_uncertain_half']:.1%}  {s['brier']:.4f}  {s['log_loss']:.4f}  "
                  f"{s['passes_per_material']}")
        print("  ensemble − method, error AUROC [95 % CI]:", r["ensemble_minus_method_ci95"])
    print("chosen on validation:", result["chosen_on_val"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
