"""Model fixtures (a pytest plugin, ``pytest_plugins`` of tests/conftest.py, so every test module shares one
build per session): a real, small exported model (trained on the real labeled records) and
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

REPO_ROOT = Path(__file__).resolve().parents[1]
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


# ------------------------------------------------------------------------ nn_any (any subset of edges)
ANY_BLOCK = {"spec_hidden": 256, "spec_out": 64, "type_embed": 93, "head_hidden": [256, 64], "dropout": 0.5}
ANY_EPOCHS = 6
ANY_DROPOUT = 0.3  # chance that a training absorber's spectrum is hidden (has_spectrum 0) in an epoch


def composition_arrays(pre, rec: pd.DataFrame, formulas: dict[str, str]) -> dict:
    """One split's materials with every element of the composition as an absorber: the formula's
    elements (from the labels; the absorbing elements where it has none), has_spectrum 1 with the
    standardized spectrum where the record's spectrum can be used, 0 and a zero row otherwise. Padded
    like the featurized splits, plus ``has`` [N, A]."""
    from xastopo.data.validation import SpectrumError
    from xastopo.elements import atomic_number, formula_elements
    from xastopo.preprocessing.batching import pad_has_spectrum, pad_materials
    from xastopo.preprocessing.dataset import record_sites

    mats, ys, ids, has = [], [], [], []
    for mp, g in rec.groupby("mp_id", sort=True):
        spectra = {}
        for r in g.itertuples(index=False):
            try:
                spectra[r.absorbing_element] = pre.transform(r.absorbing_element, record_sites(r))
            except SpectrumError:
                continue
        try:
            elements = set(formula_elements(formulas[mp]))
        except (KeyError, ValueError, TypeError):
            elements = set()
        elements = sorted(elements | set(g["absorbing_element"]), key=atomic_number)
        x = np.stack([spectra.get(el, np.zeros(pre.n_points)) for el in elements]).astype(np.float32)
        mats.append((x, np.asarray([atomic_number(el) for el in elements], dtype=np.int64)))
        has.append(np.asarray([1.0 if el in spectra else 0.0 for el in elements], dtype=np.float32))
        ys.append(int(g["y"].iloc[0]))
        ids.append(str(mp))
    x, z, mask = pad_materials(mats, pre.n_points)
    return {"X": x, "Z": z, "mask": mask, "has": pad_has_spectrum(has, z.shape[1]),
            "y": np.asarray(ys, dtype=np.int64), "ids": np.asarray(ids, dtype=str)}


@pytest.fixture(scope="session")
def exported_any_model_dir(tmp_path_factory, split_records: pd.DataFrame, labels: pd.DataFrame) -> Path:
    """``<basetemp>/xastopo_any_model/export``: a real small exported ``nn_any`` (two AnyEdgeNet members,
    seeds differing, temperature 1, so the uncertainty is a real spread) trained for a few epochs on the
    real train split, every element of each formula an absorber, with random spectrum dropout so that
    has_spectrum 0 and 1 both occur. Beside it,
    ``test_arrays.npz`` holds the padded test split (with ``has``) for parity checks."""
    root = tmp_path_factory.getbasetemp() / "xastopo_any_model"
    out_dir = root / "export"
    if not (out_dir / "metadata.json").is_file():
        if root.exists():
            shutil.rmtree(root)
        build_any_export(root, split_records, labels)
    return out_dir


def build_any_export(root: Path, rec: pd.DataFrame, labels: pd.DataFrame) -> Path:
    import torch

    from xastopo.export.onnx_export import export_network_any, finalize
    from xastopo.models.nn import CalibratedEnsemble, build_any_edge_net
    from xastopo.preprocessing.dataset import fit_preprocessor
    from xastopo.preprocessing.preprocessor import Preprocessor
    from xastopo.training import metrics
    from xastopo.training.nn_trainer import set_determinism

    params = _params()
    pre, _ = fit_preprocessor(Preprocessor.from_params(params), rec[rec["split"] == "train"])
    pre_path = root / "models" / "preprocessor.json"
    pre.save(pre_path)
    formulas = dict(zip(labels["mp_id"], labels["formula"], strict=True))
    data = {s: composition_arrays(pre, rec[rec["split"] == s], formulas) for s in ("train", "val", "test")}

    tr = {k: torch.as_tensor(v) for k, v in data["train"].items() if k != "ids"}
    y = tr["y"].float()
    pos = float((y == 0).sum() / max(float((y == 1).sum()), 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos))
    nets = []
    for seed in (SEED, SEED + 1):
        set_determinism(seed, 2)
        net = build_any_edge_net(ANY_BLOCK, pre.n_points)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(ANY_EPOCHS):
            net.train()
            for idx in torch.randperm(len(y), generator=gen).split(64):
                keep = (torch.rand(tr["has"][idx].shape, generator=gen) >= ANY_DROPOUT).float()
                has = tr["has"][idx] * keep
                x = tr["X"][idx] * has.unsqueeze(-1)  # a hidden spectrum's row is zeros, as at inference
                opt.zero_grad()
                loss_fn(net(x, tr["Z"][idx], tr["mask"][idx], has), y[idx]).backward()
                opt.step()
        nets.append(net.eval())
    model = CalibratedEnsemble(nets, 1.0).eval()

    def proba(d: dict) -> np.ndarray:
        with torch.no_grad():
            p, _ = model(*(torch.as_tensor(d[k]) for k in ("X", "Z", "mask", "has")))
        return p.numpy().astype(np.float64)

    threshold = metrics.balanced_threshold(data["val"]["y"], proba(data["val"]))
    mdir = root / "models" / "nn_any"
    mdir.mkdir(parents=True)
    torch.save({"config": ANY_BLOCK, "n_points": pre.n_points, "members": [n.state_dict() for n in nets],
                "temperature": 1.0},
               mdir / "model.pt")
    out_dir = root / "export"
    out_dir.mkdir()
    export_network_any(mdir, out_dir / "model.onnx", pre)
    champion = {
        "model": "nn_any", "registered_model_name": "xastopo-any-test", "registered_version": "3",
        "mlflow_run_id": "fedcba9876543210fedcba9876543210", "dvc_data_hash": "md5:test-fixture-any",
        "threshold": float(threshold), "test": metrics.evaluate(data["test"]["y"], proba(data["test"]), threshold),
    }
    np.savez(root / "test_arrays.npz", **data["test"])
    finalize(out_dir, out_dir / "model.onnx", champion, pre_path, "nn_any", None)  # metadata.json last
    return out_dir


@pytest.fixture(scope="session")
def o_spectrum() -> dict:
    """A real FEFF10 O K-edge site spectrum from the committed simulation shards (an element the
    fixtures' preprocessor has no statistics for), as a request spectrum."""
    shards = sorted((REPO_ROOT / "data" / "simulated" / "shards").glob("*.parquet"))
    frames = [pd.read_parquet(p, columns=["mp_id", "absorbing_element", "site", "energy", "mu"]) for p in shards]
    sim = pd.concat(frames) if frames else pd.DataFrame(columns=["absorbing_element"])
    o = sim[sim["absorbing_element"] == "O"]
    if o.empty:
        pytest.skip("no simulated O K-edge spectrum in data/simulated/shards")
    r = o.sort_values(["mp_id", "site"]).iloc[0]
    return {"element": "O", "energy": [float(v) for v in r.energy], "mu": [float(v) for v in r.mu],
            "kind": "computed"}


@pytest.fixture(scope="session")
def cu_oxide(split_records: pd.DataFrame, labels: pd.DataFrame, exported_any_model_dir: Path) -> dict:
    """A real test-split material with a Cu spectrum whose formula has O: its id, formula and the Cu
    spectrum (first site, one the model can use) as a request spectrum."""
    from xastopo.data.validation import SpectrumError
    from xastopo.elements import formula_elements
    from xastopo.preprocessing.preprocessor import Preprocessor

    pre = Preprocessor.load(exported_any_model_dir / "preprocessor.json")

    formulas = dict(zip(labels["mp_id"], labels["formula"], strict=True))
    n_spectra = split_records.groupby("mp_id").size()
    test = split_records[(split_records["split"] == "test") & (split_records["absorbing_element"] == "Cu")]
    for r in test.sort_values("mp_id").itertuples(index=False):
        formula = formulas.get(r.mp_id)
        if isinstance(formula, str) and "O" in formula_elements(formula) and n_spectra[r.mp_id] == 1:
            energy, mu = _first_site(r)
            try:
                pre.transform("Cu", [(energy, mu, 1.0)])
            except SpectrumError:
                continue
            return {"material_id": str(r.mp_id), "formula": formula,
                    "cu": {"element": "Cu", "energy": energy, "mu": mu, "kind": "computed"}}
    pytest.skip("no test-split Cu material with O in its formula")


@pytest.fixture(scope="session")
def any_request(cu_oxide: dict, o_spectrum: dict, sample_request: dict) -> dict:
    """A request in the new shape, on real spectra: composition only (formula; elements), Cu + O
    spectra (O read by type), a Cu spectrum with its formula, and two materials in the old shape."""
    old = [m for m in sample_request["materials"] if [s["element"] for s in m["spectra"]] == ["Cu"]][:2]
    return {"materials": [
        {"material_id": "formula-only", "formula": cu_oxide["formula"]},
        {"material_id": "elements-only", "elements": ["Bi", "Se"]},
        {"material_id": cu_oxide["material_id"], "formula": cu_oxide["formula"],
         "spectra": [cu_oxide["cu"], o_spectrum]},
        {"material_id": f"{cu_oxide['material_id']}-cu", "formula": cu_oxide["formula"], "spectra": [cu_oxide["cu"]]},
        *old,
    ]}
