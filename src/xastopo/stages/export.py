"""DVC stage `export`: champion → models/export/{model.onnx, preprocessor.json, metadata.json,
class_means.json, model_card.json}.

The champion's family (``models/champion.json``) names its exporter in the registry
(``xastopo.families``); the spectra's width is the fitted preprocessor's. Fails (exit 1) unless
ONNX Runtime matches the framework on the whole test split within the tolerance in params.yaml and
every predicted label is identical.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xastopo.config import load_params
from xastopo.export.model_card import write_model_card
from xastopo.export.onnx_export import finalize, parity
from xastopo.families import Family, family
from xastopo.inference import Predictor
from xastopo.preprocessing.dataset import load_features
from xastopo.preprocessing.features import model_inputs
from xastopo.preprocessing.preprocessor import Preprocessor
from xastopo.stages.common import run_stage, write_json

PRE_PATH = Path("models/preprocessor.json")
OUT_DIR = Path("models/export")


def export_inputs(champion: dict):
    """The champion's family (exportable), the fitted preprocessor and the test split (checked)."""
    fam = family(champion["model"])
    if fam.exporter is None:
        raise ValueError(f"champion '{fam.name}' cannot be exported (select.candidates in params.yaml)")
    pre = Preprocessor.load(PRE_PATH)
    # a model that reads the composition is checked on every test material, as it is served
    name = "test_any.npz" if fam.features == "padded_any" else "test.npz"
    return fam, pre, load_features(Path("data/features") / name, pre)


def export_champion(champion: dict, fam: Family, pre: Preprocessor, test: dict, atol: float) -> dict:
    """Export the champion, write the model directory, check parity on the test split; the report."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    onnx_path = OUT_DIR / "model.onnx"
    exported = fam.load_exporter()(Path("models") / fam.name, onnx_path, pre)
    finalize(OUT_DIR, onnx_path, champion, PRE_PATH, fam.name, exported.element_z)
    predictor = Predictor(OUT_DIR, prefer_gpu=False)
    inputs = model_inputs(fam.features, test["X"], test["Z"], test["mask"], exported.element_z,
                          has_spectrum=test.get("has_spectrum"))
    result = parity(predictor, exported.framework, inputs, test, atol)
    if exported.uncertainty is not None:  # the graph's second output is checked too
        _, u_ort = predictor.predict_arrays_with_uncertainty(test["X"], test["Z"], test["mask"],
                                                             test.get("has_spectrum"))
        du = float(abs(u_ort - exported.uncertainty(inputs)).max()) if len(u_ort) else 0.0
        result["uncertainty_max_abs_diff"] = du
        result["passed"] = bool(result["passed"] and du <= atol)
    result["model"] = fam.name
    # for people: training class means (the page's plots, the explanations' baseline) and the model card
    train_name = "train_any.npz" if fam.features == "padded_any" else "train.npz"
    write_model_card(OUT_DIR, Path("data/features") / train_name, pre, champion.get("card_metrics") or {})
    return result


def main() -> None:
    params = load_params()
    champion = json.loads(Path("models/champion.json").read_text())
    try:
        fam, pre, test = export_inputs(champion)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    result = export_champion(champion, fam, pre, test, float(params["export"]["parity_atol"]))
    write_json("reports/export_parity.json", result)
    print(f"export: {result['model']} → {OUT_DIR / 'model.onnx'}; parity on {result['n']} test materials: "
          f"max |Δp| = {result['max_abs_diff']:.2e}, labels identical: {result['labels_identical']}")
    if not result["passed"]:
        print("error: ONNX parity check failed (see reports/export_parity.json)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
