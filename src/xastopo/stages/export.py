"""DVC stage `export`: champion → models/export/{model.onnx, preprocessor.json, metadata.json}.

Fails (exit 1) unless ONNX Runtime matches the framework on the whole test split within the
tolerance in params.yaml and every predicted label is identical.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xastopo.config import load_params
from xastopo.export.onnx_export import export_nn, export_svm, finalize, parity
from xastopo.inference import Predictor
from xastopo.preprocessing.dataset import load_arrays
from xastopo.stages.common import run_stage, write_json


def main() -> None:
    params = load_params()
    champion = json.loads(Path("models/champion.json").read_text())
    kind = champion["model"]
    out_dir = Path("models/export")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    test = load_arrays(Path("data/features/test.npz"))
    element_z = None
    if kind in ("nn", "nn_type_only"):
        _, framework = export_nn(Path("models") / kind / "model.pt", onnx_path, test["X"].shape[2])
    elif kind in ("svm", "svm_type"):
        _, framework, element_z = export_svm(Path("models") / kind / "model.joblib", onnx_path)
    else:
        raise SystemExit(f"error: champion '{kind}' cannot be exported (select.candidates in params.yaml)")
    finalize(out_dir, onnx_path, champion, Path("models/preprocessor.json"), kind, element_z)
    predictor = Predictor(out_dir, prefer_gpu=False)
    result = parity(predictor, framework, test, float(params["export"]["parity_atol"]))
    result["model"] = kind
    write_json("reports/export_parity.json", result)
    print(f"export: {kind} → {onnx_path}; parity on {result['n']} test materials: max |Δp| = "
          f"{result['max_abs_diff']:.2e}, labels identical: {result['labels_identical']}")
    if not result["passed"]:
        print("error: ONNX parity check failed (see reports/export_parity.json)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
