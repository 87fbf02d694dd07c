"""The paper's network and the baselines: invariances, real-data learning, Hungarian matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xastopo.config import load_params
from xastopo.elements import Z_OF
from xastopo.models.baselines import PcaKMeans, hungarian_assignment
from xastopo.models.nn import XasTopoNet, build_net
from xastopo.preprocessing.batching import pad_materials
from xastopo.preprocessing.features import concat_features, model_inputs, type_features

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
P = 200  # spectra width of the synthetic inputs below


@pytest.fixture(scope="module")
def features(labeled_records):
    """Real featurized splits (train/val) from the labeled records, as `featurize` makes them."""
    from xastopo.data.split import split_materials
    from xastopo.preprocessing.dataset import featurize_split, fit_preprocessor
    from xastopo.preprocessing.preprocessor import Preprocessor

    split = split_materials(labeled_records, (0.7, 0.15, 0.15), seed=14)
    rec = labeled_records.merge(split, on="mp_id")
    pre, _ = fit_preprocessor(Preprocessor.from_params(PARAMS), rec[rec["split"] == "train"])
    out = {s: featurize_split(pre, rec[rec["split"] == s])[0] for s in ("train", "val")}
    return out


def _net(seed: int = 0, **kw) -> XasTopoNet:
    torch.manual_seed(seed)
    return XasTopoNet(n_points=P, **kw).eval()


def test_output_independent_of_absorber_order_and_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, P)).astype(np.float32)
    z = np.array([Z_OF["Cu"], Z_OF["Ti"], Z_OF["O"]])
    net = _net()
    base = net(torch.tensor(x[None]), torch.tensor(z[None]), torch.ones(1, 3))
    perm = [2, 0, 1]
    permuted = net(torch.tensor(x[perm][None]), torch.tensor(z[perm][None]), torch.ones(1, 3))
    xp, zp, mp = pad_materials([(x, z)], P, max_absorbers=7)
    # padding slots hold garbage spectra: the mask alone must remove them
    xp[0, 3:] = rng.normal(size=(4, P))
    padded = net(torch.tensor(xp), torch.tensor(zp), torch.tensor(mp))
    assert torch.allclose(base, permuted, atol=1e-6)
    assert torch.allclose(base, padded, atol=1e-6)
    assert mp.sum() == 3 and xp.shape == (1, 7, P)


def test_one_and_five_absorbers_in_one_batch_match_separate_runs():
    rng = np.random.default_rng(1)
    one = (rng.normal(size=(1, P)).astype(np.float32), np.array([Z_OF["Cu"]]))
    five = (rng.normal(size=(5, P)).astype(np.float32), np.array([Z_OF[e] for e in ("Ti", "V", "Cr", "Co", "Ni")]))
    net = _net(3)
    x, z, m = pad_materials([one, five], P)
    both = net(torch.tensor(x), torch.tensor(z), torch.tensor(m))
    for i, mat in enumerate((one, five)):
        xi, zi, mi = pad_materials([mat], P)
        alone = net(torch.tensor(xi), torch.tensor(zi), torch.tensor(mi))
        assert torch.allclose(both[i], alone[0], atol=1e-5)
    assert x.shape == (2, 5, P) and m.tolist()[0] == [1, 0, 0, 0, 0]


def test_type_only_network_ignores_spectra():
    net = _net(4, use_spectra=False)
    z = torch.tensor([[Z_OF["Cu"], Z_OF["S"]]])
    a = net(torch.zeros(1, 2, P), z, torch.ones(1, 2))
    b = net(torch.randn(1, 2, P), z, torch.ones(1, 2))
    c = net(torch.zeros(1, 2, P), torch.tensor([[Z_OF["Ti"], Z_OF["S"]]]), torch.ones(1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_paper_dimensions():
    net = build_net(PARAMS, PARAMS["featurize"]["n_points"], use_spectra=True)
    assert net.type_weight.weight.shape == (93, 93)
    first = [m for m in net.spectral if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in first] == [(200, 256), (256, 64)]
    head = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in head] == [(5952, 256), (256, 64), (64, 1)]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in net.modules()) == 4


def test_tiny_real_training_run_lowers_the_loss(features):
    from xastopo.training.nn_trainer import set_determinism, train_nn

    set_determinism(14, 2)
    net = XasTopoNet(n_points=features["train"]["X"].shape[2])
    net, history, best = train_nn(net, features["train"], features["val"], lr=1e-3, weight_decay=0.0,
                                  batch_size=64, max_epochs=8, patience=8, seed=14,
                                  device=torch.device("cpu"))
    assert min(h["train_loss"] for h in history[-3:]) < 0.95 * history[0]["train_loss"]
    assert 1 <= best <= len(history)
    assert min(h["val_loss"] for h in history) == history[best - 1]["val_loss"]


def test_training_is_deterministic_on_cpu(features):
    from xastopo.training.nn_trainer import predict_proba, set_determinism, train_nn

    probs = []
    for _ in range(2):
        set_determinism(14, 2)
        net = XasTopoNet(n_points=features["train"]["X"].shape[2])
        net, _, _ = train_nn(net, features["train"], features["val"], lr=1e-3, weight_decay=0.0,
                             batch_size=64, max_epochs=2, patience=2, seed=14, device=torch.device("cpu"))
        probs.append(predict_proba(net, features["val"], torch.device("cpu")))
    assert np.array_equal(probs[0], probs[1])


def test_hungarian_matching_corrects_for_class_imbalance():
    # 90 trivial (0), 10 topological (1). Cluster 0 holds 60 trivial + 2 topological,
    # cluster 1 holds 30 trivial + 8 topological. By raw counts the majority class wins both
    # clusters; normalized by class size cluster 1 holds 80 % of the topological class.
    clusters = np.array([0] * 62 + [1] * 38)
    labels = np.array([0] * 60 + [1] * 2 + [0] * 30 + [1] * 8)
    mapping = hungarian_assignment(clusters, labels)
    assert mapping.tolist() == [0, 1]
    # swapped cluster ids give the swapped map
    assert hungarian_assignment(1 - clusters, labels).tolist() == [1, 0]


def test_pca_kmeans_on_separable_clusters():
    rng = np.random.default_rng(5)
    n = 60
    y = np.array([0] * 40 + [1] * 20)
    x = rng.normal(size=(n, 1, 20)).astype(np.float32) * 0.1
    x[y == 1, 0, :10] += 3.0
    z = np.full((n, 1), Z_OF["Cu"])
    m = np.ones((n, 1), np.float32)
    model = PcaKMeans(0.8, 10, seed=0).fit(x, z, m, y)
    p = model.predict_proba(x, z, m)
    assert ((p >= 0.5) == (y == 1)).all()


def test_baseline_features_zero_fill_and_type_presence():
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    z = np.array([[29, 22], [22, 0]])
    m = np.array([[1, 1], [1, 0]], np.float32)
    f = concat_features(x, z, m, [22, 29])
    assert f[0].tolist() == x[0, 1].tolist() + x[0, 0].tolist()
    assert f[1].tolist() == x[1, 0].tolist() + [0, 0, 0]
    t = type_features(z, m)
    assert t[0, 22] == t[0, 29] == 1 and t[1, 22] == 1 and t[1].sum() == 1 and t[1, 0] == 0


def test_model_inputs_per_feature_kind():
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    z = np.array([[29, 22], [22, 0]])
    m = np.array([[1, 1], [1, 0]], np.float32)
    padded = model_inputs("padded", x, z, m)
    assert set(padded) == {"spectra", "z", "mask"} and padded["spectra"] is x
    np.testing.assert_array_equal(model_inputs("concat_spectra", x, z, m, [22, 29])["features"],
                                  concat_features(x, z, m, [22, 29]))
    np.testing.assert_array_equal(model_inputs("type_presence", x, z, m)["features"], type_features(z, m))
    with pytest.raises(ValueError, match="element_z"):
        model_inputs("concat_spectra", x, z, m)
    with pytest.raises(ValueError, match="unknown feature kind"):
        model_inputs("nope", x, z, m)


def test_network_width_has_no_default():
    with pytest.raises(TypeError):
        XasTopoNet()  # type: ignore[call-arg]


# ------------------------------------------------------------------ the family registry


def test_every_registered_family_resolves_and_the_pipeline_trains_them():
    from xastopo.families import FAMILIES, ORDER, pipeline_families
    from xastopo.training import trainers

    assert [f.name for f in pipeline_families(PARAMS)] == list(ORDER)
    for f in FAMILIES.values():
        assert f.load_trainer() is getattr(trainers, f.trainer.split(":")[1])
        assert f.features in (None, "padded", "padded_any", "concat_spectra", "type_presence")
        if f.exporter is None:
            with pytest.raises(ValueError, match="cannot be exported"):
                f.load_exporter()
        else:
            assert callable(f.load_exporter())
        assert "threshold" in PARAMS[f.params]  # its own rule, not borrowed from nn
    for name in PARAMS["select"]["candidates"]:
        assert FAMILIES[name].exporter is not None


@pytest.mark.parametrize("change, message", [
    (lambda p: p["train"].update(families=["nn", "nope"]), "unknown model family 'nope'"),
    (lambda p: p["train"].update(families=["svm", "svm"]), "more than once"),
    (lambda p: p["svm"].pop("threshold"), "svm.threshold is missing"),
    (lambda p: p.pop("train"), "train.families must list"),
])
def test_pipeline_family_list_is_checked_against_the_registry(change, message):
    import copy

    from xastopo.families import pipeline_families

    params = copy.deepcopy(dict(PARAMS))
    change(params)
    with pytest.raises(ValueError, match=message):
        pipeline_families(params)


def test_svm_trainer_uses_its_own_threshold_rule(features, tmp_path, monkeypatch):
    """svm's threshold comes from the svm block (a number here), not from nn.threshold."""
    import copy

    import joblib
    import mlflow

    from xastopo.families import family
    from xastopo.training.trainers import Context, train_svm

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    params = copy.deepcopy(dict(PARAMS))
    params["svm_type"]["threshold"] = 0.37
    data = {**features, "test": features["val"]}
    with mlflow.start_run():
        t = train_svm(family("svm_type"), Context(params, data, 14, features["train"]["X"].shape[2],
                                                  [], tmp_path))
    assert t.threshold == 0.37 and params["nn"]["threshold"] == "val_roc"
    assert set(t.probs) == {"val", "test"} and t.extra == {"element_z": None}
    saved = joblib.load(tmp_path / "model.joblib")
    assert saved["features"] == "type_presence" and saved["element_z"] is None


def test_any_edge_calibration_recovers_a_shift_and_the_ablation_views():
    """Platt scaling (temperature and bias) on member logits undoes a known miscalibration; the ablation
    views hide the spectra (composition) or the elements without one (spectra), nothing else."""
    import numpy as np

    from xastopo.training.any_edge import calibration_stats, ensemble_probs, fit_calibration, view

    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    members = np.stack([2.0 * (true_logit - 0.8) + rng.normal(0, 0.05, 4000) for _ in range(3)])  # T=0.5, b=+0.8
    temp, bias = fit_calibration(members, y)
    assert abs(temp - 2.0) < 0.25 and abs(bias - 0.8) < 0.2, (temp, bias)
    before = calibration_stats(y, ensemble_probs(members, 1.0)[0])
    after = calibration_stats(y, ensemble_probs(members, temp, bias)[0])
    assert after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"]
    a = {"X": np.ones((2, 3, 4), np.float32), "Z": np.array([[8, 29, 0], [16, 29, 0]]),
         "mask": np.array([[1, 1, 0], [1, 1, 0]], np.float32),
         "has_spectrum": np.array([[0, 1, 0], [0, 0, 0]], np.float32), "ids": np.array(["a", "b"]),
         "y": np.array([1, 0])}
    assert view(a, mode="composition")["has_spectrum"].sum() == 0
    assert view(a, mode="spectra")["mask"].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert view(a, np.array([1]), "both")["ids"].tolist() == ["b"]


def test_any_edge_training_path_equals_the_exported_path(features):
    """Training runs the spectral MLP only on rows with a spectrum; the exported (eval) graph runs it on
    every row and masks. Same logits and same gradients on real spectra, with hidden spectra and
    garbage in the padding (dropout 0, so the two modes differ only in that path)."""
    from xastopo.models.nn import AnyEdgeNet

    tr = features["train"]
    x = torch.as_tensor(tr["X"][:64].copy())
    z, m = torch.as_tensor(tr["Z"][:64]), torch.as_tensor(tr["mask"][:64])
    x[m == 0] = torch.randn(int((m == 0).sum()), x.shape[-1])
    gen = torch.Generator().manual_seed(0)
    h = m * (torch.rand(m.shape, generator=gen) > 0.4).float()
    assert 0 < h.sum() < m.sum()
    torch.manual_seed(3)
    net = AnyEdgeNet(n_points=x.shape[-1], type_embed=16, dropout=0.0)
    out = {}
    for mode in ("train", "eval"):
        getattr(net, mode)()
        net.zero_grad()
        logit = net(x, z, m, h)
        logit.square().sum().backward()
        out[mode] = (logit.detach(), {k: p.grad.clone() for k, p in net.named_parameters()})
    torch.testing.assert_close(out["train"][0], out["eval"][0], rtol=1e-5, atol=1e-6)
    for k, g in out["eval"][1].items():
        torch.testing.assert_close(out["train"][1][k], g, rtol=1e-4, atol=1e-6, msg=k)
    assert out["eval"][1]["no_spectrum"].abs().sum() > 0 and out["eval"][1]["spectral.0.weight"].abs().sum() > 0
