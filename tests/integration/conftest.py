"""Integration fixtures: a real, small exported model (trained on the real labeled records) and
real test-split spectra as a service request.

The model is built without the DVC pipeline: split → fit the Preprocessor on train → featurize →
train the real network for a few epochs on CPU → save like ``stages/train.py`` → export with
``xastopo.export.onnx_export`` (the same functions the `export` stage runs). About 15-30 s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = 14
EPOCHS = 4


def _params() -> dict:
    from xastopo.config import load_params

    return load_params(REPO_ROOT / "params.yaml")


@pytest.fixture(scope="session")
def split_records(labeled_records: pd.DataFrame) -> pd.DataFrame:
    """The real labeled records with the pipeline's 70/15/15 split column."""
    from xastopo.data.split import split_materials

    s = _params()["split"]
    split = split_materials(labeled_records[["mp_id", "absorbing_element", "label3"]],
                            (float(s["train"]), float(s["val"]), float(s["test"])), SEED)
    return labeled_records.merge(split, on="mp_id")


@pytest.fixture(scope="session")
def exported_model_dir(tmp_path_factory, split_records: pd.DataFrame) -> Path:
    """``<basetemp>/xastopo_model/export`` with model.onnx, preprocessor.json and metadata.json of a
    real small NN (built once per test session, also when several test modules load this fixture)."""
    root = tmp_path_factory.getbasetemp() / "xastopo_model"
    out_dir = root / "export"
    if not (out_dir / "metadata.json").is_file():
        if root.exists():
            shutil.rmtree(root)
        build_export(root, split_records)
    return out_dir


def build_export(root: Path, rec: pd.DataFrame) -> Path:
    import torch

    from xastopo.export.onnx_export import export_nn, finalize
    from xastopo.models.nn import build_net
    from xastopo.preprocessing.dataset import featurize_split, fit_preprocessor
    from xastopo.preprocessing.preprocessor import Preprocessor
    from xastopo.training import metrics
    from xastopo.training.nn_trainer import predict_proba, set_determinism, train_nn

    params = _params()
    pre, _ = fit_preprocessor(Preprocessor.from_params(params), rec[rec["split"] == "train"])
    pre_path = root / "models" / "preprocessor.json"
    pre.save(pre_path)
    data = {s: featurize_split(pre, rec[rec["split"] == s], desc=s)[0] for s in ("train", "val", "test")}

    cfg = {**params["nn"], "lr": 1e-3}
    set_determinism(SEED, cfg.get("threads"))
    net = build_net({"nn": cfg}, pre.n_points, use_spectra=True)
    net, history, best = train_nn(net, data["train"], data["val"], lr=float(cfg["lr"]), weight_decay=0.0,
                                  batch_size=int(cfg["batch_size"]), max_epochs=EPOCHS, patience=EPOCHS,
                                  seed=SEED, device=torch.device("cpu"))
    p_val = predict_proba(net, data["val"], torch.device("cpu"))
    p_test = predict_proba(net, data["test"], torch.device("cpu"))
    threshold = metrics.balanced_threshold(data["val"]["y"], p_val)
    mdir = root / "models" / "nn"
    mdir.mkdir(parents=True)
    torch.save({"state_dict": net.state_dict(), "config": cfg, "n_points": pre.n_points, "use_spectra": True},
               mdir / "model.pt")

    out_dir = root / "export"
    out_dir.mkdir()
    export_nn(mdir / "model.pt", out_dir / "model.onnx", pre.n_points)
    champion = {
        "model": "nn", "registered_model_name": "xastopo-classifier-test", "registered_version": "7",
        "mlflow_run_id": "0123456789abcdef0123456789abcdef", "dvc_data_hash": "md5:test-fixture",
        "threshold": float(threshold), "test": metrics.evaluate(data["test"]["y"], p_test, threshold),
    }
    (root / "history.json").write_text(json.dumps({"best_epoch": best, "epochs": len(history)}))
    finalize(out_dir, out_dir / "model.onnx", champion, pre_path, "nn", None)  # metadata.json last
    return out_dir


def _first_site(row) -> tuple[list[float], list[float]]:
    return [float(v) for v in row.energy[0]], [float(v) for v in row.mu[0]]


@pytest.fixture(scope="session")
def sample_request(split_records: pd.DataFrame, exported_model_dir: Path) -> dict:
    """Real test-split spectra in the service's request schema: the first site's raw energy/mu of
    every absorbing element of each test material (elements the model cannot use are left out, and
    materials left with none)."""
    from xastopo.data.validation import SpectrumError
    from xastopo.preprocessing.preprocessor import Preprocessor

    pre = Preprocessor.load(exported_model_dir / "preprocessor.json")
    materials = []
    for mp, g in split_records[split_records["split"] == "test"].groupby("mp_id", sort=True):
        spectra = []
        for r in g.itertuples(index=False):
            energy, mu = _first_site(r)
            try:
                pre.material_inputs({r.absorbing_element: [(energy, mu, 1.0)]})
            except SpectrumError:
                continue
            spectra.append({"element": r.absorbing_element, "energy": energy, "mu": mu, "kind": "computed"})
        if spectra:
            materials.append({"material_id": str(mp), "spectra": spectra})
    assert len(materials) >= 20, len(materials)
    return {"materials": materials}


@pytest.fixture(scope="session")
def sample_sites(split_records: pd.DataFrame, exported_model_dir: Path) -> pd.DataFrame:
    """Site rows of the test-split materials whose every absorber the model can use, in the columns
    of site_spectra.parquet that `xastopo predict` reads, with each site's training weight (several
    sites per element where the material has them)."""
    from xastopo.data.validation import SpectrumError
    from xastopo.preprocessing.dataset import record_sites
    from xastopo.preprocessing.preprocessor import Preprocessor

    pre = Preprocessor.load(exported_model_dir / "preprocessor.json")
    test = split_records[split_records["split"] == "test"]
    usable = set(test["mp_id"])
    for r in test.itertuples(index=False):
        try:
            pre.element_spectrum(r.absorbing_element, record_sites(r))
            pre.window(r.absorbing_element)
        except SpectrumError:
            usable.discard(r.mp_id)
    rows = []
    for r in test[test["mp_id"].isin(usable)].itertuples(index=False):
        for k, (e, m, w) in enumerate(zip(r.energy, r.mu, r.weights, strict=True)):
            rows.append({"mp_id": r.mp_id, "absorbing_element": r.absorbing_element, "site": k,
                         "weight": float(w), "energy": np.asarray(e, float), "mu": np.asarray(m, float)})
    return pd.DataFrame(rows)
