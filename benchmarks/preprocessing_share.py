"""Where in-process prediction time goes: request validation (schema), preprocessing (raw spectra →
model inputs: window, resample, normalize, combine sites, standardize; ``InputBuilder.build``), padding
+ the ONNX run (``Predictor.outputs``) and the answers (``InputBuilder.predictions``), per material, at
batch 1 and 256, on real shipped spectra (``benchmarks/real_requests.py``), in one run, with the model opened
as `xastopo predict` opens it (``predict:``; a batch of 256 is one run).

    python benchmarks/preprocessing_share.py          # ~30 s; writes benchmarks/results/preprocessing_share.json

Target (issue 14): preprocessing < 30 % of end-to-end time at batch 256.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from real_requests import ROOT, default_model_dir, real_materials

RESULTS = ROOT / "benchmarks" / "results" / "preprocessing_share.json"


def timed(fn, seconds: float) -> tuple[float, object]:
    """Mean seconds per call of ``fn`` over >= ``seconds`` (best of 3 windows), and its last result."""
    out = fn()
    best = float("inf")
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            out = fn()
            n += 1
        best = min(best, (time.perf_counter() - t0) / n)
    return best, out


def stages(predictor, materials: list[dict], seconds: float) -> dict:
    from xastopo.schema import parse_request

    body = {"materials": materials}
    t_schema, req = timed(lambda: parse_request(body), seconds)
    t_build, inputs = timed(lambda: predictor.build(req.materials), seconds)
    t_model, (probs, unc) = timed(lambda: predictor.outputs(inputs.valid_arrays()), seconds)
    t_answer, _ = timed(lambda: predictor.predictions(inputs, list(probs), None if unc is None else list(unc)),
                        seconds)
    total = t_schema + t_build + t_model + t_answer
    n = len(materials)
    return {"materials": n, "schema_ms": 1e3 * t_schema, "preprocess_ms": 1e3 * t_build, "model_ms": 1e3 * t_model,
            "answers_ms": 1e3 * t_answer, "total_ms": 1e3 * total, "materials_per_s": n / total,
            "preprocess_share": t_build / total, "schema_share": t_schema / total, "model_share": t_model / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="2 CPU cores; nothing else running",
                    help="what else ran on the machine (recorded with the results)")
    args = ap.parse_args()

    from xastopo.config import load_params, predict_options
    from xastopo.inference import Predictor

    model_dir = args.model_dir or default_model_dir()
    mats = real_materials(model_dir)
    opts = predict_options(load_params(ROOT / "params.yaml"))  # in process: as `xastopo predict` opens the model
    spinning = opts.ort_spinning
    pred = Predictor(model_dir, prefer_gpu=False, spinning=spinning, concurrent_runs=opts.concurrent_runs)
    rows = [stages(pred, (mats * (n // len(mats) + 1))[:n], args.seconds) for n in (1, 256)]
    sites = sum(len(m["spectra"]) for m in mats) / len(mats)
    result = {"model_dir": str(model_dir), "spectra_per_material": round(sites, 2), "ort_spinning": spinning,
              "concurrent_runs": pred.concurrent_runs, "rows": rows,
              "target": "preprocess_share < 0.30 at 256 materials",
              "note": args.note}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'batch':>5} {'schema ms':>10} {'preproc ms':>11} {'model ms':>9} {'answers ms':>11} {'mat/s':>8} "
          f"{'preproc share':>14}")
    for r in rows:
        print(f"{r['materials']:>5} {r['schema_ms']:>10.2f} {r['preprocess_ms']:>11.2f} {r['model_ms']:>9.2f} "
              f"{r['answers_ms']:>11.2f} {r['materials_per_s']:>8.0f} {r['preprocess_share']:>14.1%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
