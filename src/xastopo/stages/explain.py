"""DVC stage `explain`: the average per-energy attribution (:mod:`xastopo.explain`, through the exported
ONNX graph) per element and true class on the test split → ``plots/explain/<element>.csv`` (energy_ev,
topological, trivial), ``plots/explain/attribution_test.png`` and ``reports/explain.json``.

Settings: ``explain:`` of params.yaml (method, window, stride, ...; ``max_test_materials`` 0 = all), read
once by :class:`~xastopo.explain.ExplainSettings`. The model is the one every entry point uses
(:func:`xastopo.config.model_dir`: $XASTOPO_MODEL_DIR, else ``serving.model_dir``), as in the screen stage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from xastopo.config import load_params, model_dir
from xastopo.explain import Explainer, ExplainSettings, average_attributions
from xastopo.inference import Predictor
from xastopo.preprocessing.dataset import load_features
from xastopo.stages.common import run_stage, write_json

OUT_DIR = Path("plots/explain")
CLASSES = ("topological", "trivial")


def write_plots(result: dict, out_dir: Path) -> list[str]:
    """One CSV per element and one figure (a panel per element, a line per class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    els = sorted(result["elements"], key=lambda el: -sum(result["elements"][el].get(c, {}).get("n", 0)
                                                         for c in CLASSES))
    for el in els:
        e = result["elements"][el]
        table = {"energy_ev": e["energy"]}
        for c in CLASSES:
            table[c] = e[c]["mean"] if c in e else [np.nan] * len(e["energy"])
        pd.DataFrame(table).to_csv(out_dir / f"{el}.csv", index=False, float_format="%.6g")
    cols = min(3, max(len(els), 1))
    rows = max(1, -(-len(els) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, el in zip(axes.flat, els, strict=False):
        e = result["elements"][el]
        for c, color in zip(CLASSES, ("tab:red", "tab:blue"), strict=True):
            if c in e:
                ax.plot(e["energy"], e[c]["mean"], color=color, label=f"{c} (n={e[c]['n']})")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_title(f"{el} K edge")
        ax.set_xlabel("energy (eV)")
        ax.set_ylabel("mean attribution (ΔP)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(els):]:
        ax.axis("off")
    fig.suptitle(f"Average attribution on the test split ({result['method']}; positive → topological)")
    fig.tight_layout()
    fig.savefig(out_dir / "attribution_test.png", dpi=110)
    plt.close(fig)
    return els


def main() -> None:
    params = load_params()
    settings = ExplainSettings.from_params(params)
    predictor = Predictor(model_dir(params), prefer_gpu=False)
    name = "test_any.npz" if predictor.reads_composition else "test.npz"
    test = load_features(Path("data/features") / name, predictor.preprocessor)
    result = average_attributions(Explainer(predictor, settings), test, settings.max_test_materials)
    els = write_plots(result, OUT_DIR)
    report = {k: v for k, v in result.items() if k != "elements"}
    report["elements"] = {el: {c: result["elements"][el][c]["n"] for c in CLASSES if c in result["elements"][el]}
                          for el in els}
    write_json("reports/explain.json", report)
    print(f"explain: {result['n_materials']} test materials ({result['method']}, {result['seconds']:.1f} s) → "
          f"{OUT_DIR}/ ({', '.join(els)}); median completeness gap {report['completeness_rel_gap_median']}")


if __name__ == "__main__":
    run_stage(main)
