"""Which attribution method to serve: occlusion vs integrated gradients (finite differences), both
through the exported ONNX graph (xastopo.explain), on the test materials with a spectrum.

Measured in one run, per method: seconds per material, completeness (|sum of attributions -
(P - P_baseline)| relative to |P - P_baseline|), and faithfulness by deletion: the probability change
when the 10 % of an edge's energies with the largest |attribution| are set to the baseline, against
10 % chosen at random (a faithful map finds the energies whose removal moves the answer most).
Also the rank agreement (Spearman) of the two methods' maps.

    python benchmarks/explain_methods.py [--model-dir models/export] [--n 65]

Writes benchmarks/results/explain_methods.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from xastopo.config import load_params
from xastopo.elements import SYMBOLS
from xastopo.explain import Explainer, ExplainSettings
from xastopo.inference import Predictor

ROOT = Path(__file__).resolve().parents[1]


def materials(npz: Path, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    d = np.load(npz)
    has = d["has_spectrum"] if "has_spectrum" in d.files else d["mask"]
    idx = np.where((has * d["mask"]).sum(axis=1) > 0)[0][:n]
    out = []
    for i in idx:
        m = d["mask"][i] > 0
        out.append((d["X"][i][m], d["Z"][i][m], has[i][m]))
    return out


def deletion(ex: Explainer, arrays, attrs: list, frac: float, rng: np.random.Generator) -> tuple[float, float]:
    """Mean |ΔP| over the material's edges: top-|attribution| points vs random points set to baseline."""
    x, z, has = arrays
    p0 = ex.predictor.predict_arrays_with_uncertainty(x[None], z[None], np.ones((1, len(z)), np.float32),
                                                      has[None])[0][0]
    tops, rands = [], []
    for a, attr in enumerate(attrs):
        if attr is None:
            continue
        k = max(1, int(round(frac * len(attr))))
        base = ex.baseline(SYMBOLS[int(z[a]) - 1])
        variants = []
        for sel in [np.argsort(-np.abs(attr))[:k]] + [rng.choice(len(attr), k, replace=False) for _ in range(10)]:
            xv = x.copy()
            xv[a, sel] = base[sel]
            variants.append(xv)
        xs = np.stack(variants)
        p = ex.predictor.predict_arrays_with_uncertainty(xs, np.repeat(z[None], len(xs), 0),
                                                         np.ones((len(xs), len(z)), np.float32),
                                                         np.repeat(has[None], len(xs), 0))[0]
        tops.append(abs(p0 - p[0]))
        rands.append(float(np.mean(np.abs(p0 - p[1:]))))
    return float(np.mean(tops)), float(np.mean(rands))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "export")
    ap.add_argument("--features", type=Path, default=ROOT / "data" / "features" / "test_any.npz")
    ap.add_argument("--n", type=int, default=65)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "explain_methods.json")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    base = ExplainSettings.from_params(params)
    pred = Predictor(args.model_dir, prefer_gpu=False)
    mats = materials(args.features, args.n)
    configs = {"occlusion (window 10, stride 2)": ExplainSettings(method="occlusion", window=10, stride=2),
               "occlusion (window 4, stride 1)": ExplainSettings(method="occlusion", window=4, stride=1),
               "integrated_gradients (8 steps)": ExplainSettings(method="integrated_gradients", steps=8),
               "integrated_gradients (16 steps)": ExplainSettings(method="integrated_gradients", steps=16)}
    results, maps = {}, {}
    for name, s in configs.items():
        ex = Explainer(pred, s)
        rng = np.random.default_rng(14)
        t0 = time.perf_counter()
        runs = [ex.attribute(m) for m in mats]
        seconds = (time.perf_counter() - t0) / len(mats)
        gaps, tops, rands = [], [], []
        for m, r in zip(mats, runs, strict=True):
            delta = r.probability - r.probability_at_baseline
            total = sum(float(a.sum()) for a in r.attributions if a is not None)
            if abs(delta) > 0.02:
                gaps.append(abs(total - delta) / abs(delta))
            t, rd = deletion(ex, m, r.attributions, base.top_fraction, rng)
            tops.append(t)
            rands.append(rd)
        maps[name] = [np.concatenate([a for a in r.attributions if a is not None]) for r in runs]
        results[name] = {"seconds_per_material": seconds,
                         "completeness_rel_gap_median": float(np.median(gaps)),
                         "completeness_rel_gap_p90": float(np.quantile(gaps, 0.9)),
                         "deletion_top10pct_dP_mean": float(np.mean(tops)),
                         "deletion_random10pct_dP_mean": float(np.mean(rands)),
                         "deletion_ratio_top_vs_random": float(np.mean(tops) / max(np.mean(rands), 1e-12))}
        print(name, json.dumps(results[name]))
    names = list(configs)
    rho = [spearmanr(a, b)[0] for a, b in zip(maps[names[0]], maps[names[3]], strict=True)]
    out = {"n_materials": len(mats), "model_dir": str(args.model_dir), "baseline": Explainer(pred).baseline_name,
           "methods": results, "spearman_occlusion_vs_ig16_median": float(np.nanmedian(rho)),
           "served": {"method": base.method, "window": base.window, "stride": base.stride, "steps": base.steps}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"spearman occlusion vs IG16 (median over materials): {out['spearman_occlusion_vs_ig16_median']:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
