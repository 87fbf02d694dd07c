"""Attributions (xastopo.explain) through the real ONNX graph of a real small exported ``nn_any``, on
real test-split materials: integrated gradients are complete (they sum to P - P(baseline)), occlusion
finds the energies that move the answer (removing its top 10 % moves P more than removing 10 % at random),
both rank energies alike, and a material read by type only has no attributions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from xastopo.elements import SYMBOLS
from xastopo.explain import Explainer, ExplainSettings
from xastopo.inference import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def materials(exported_any_model_dir: Path) -> list:
    d = np.load(exported_any_model_dir.parent / "test_arrays.npz")
    idx = np.where((d["has"] * d["mask"]).sum(axis=1) > 0)[0][:12]
    out = []
    for i in idx:
        m = d["mask"][i] > 0
        out.append((d["X"][i][m], d["Z"][i][m], d["has"][i][m]))
    assert len(out) == 12
    return out


def test_integrated_gradients_are_complete_and_agree_with_occlusion(exported_any_model_dir: Path,
                                                                     materials: list) -> None:
    pred = Predictor(exported_any_model_dir, prefer_gpu=False)
    ig = Explainer(pred, ExplainSettings(method="integrated_gradients", steps=16))
    occ = Explainer(pred, ExplainSettings(method="occlusion", window=10, stride=2))
    rhos = []
    for arrays in materials:
        a, b = ig.attribute(arrays), occ.attribute(arrays)
        assert a.probability == pytest.approx(b.probability, abs=1e-7)
        p = pred.predict_arrays(arrays[0][None], arrays[1][None], np.ones((1, len(arrays[1])), np.float32),
                                arrays[2][None])[0]
        assert a.probability == pytest.approx(p, abs=1e-6)  # the explained number is the prediction
        delta = a.probability - a.probability_at_baseline
        total = sum(float(x.sum()) for x in a.attributions if x is not None)
        assert abs(total - delta) <= 0.02 * max(abs(delta), 0.05), (total, delta)
        for k, (x, y) in enumerate(zip(a.attributions, b.attributions, strict=True)):
            assert (x is None) == (y is None) == (arrays[2][k] == 0)
            if x is not None:
                rhos.append(spearmanr(x, y)[0])
    assert np.nanmedian(rhos) > 0.5, rhos


def test_occlusion_finds_the_energies_that_move_the_answer(exported_any_model_dir: Path, materials: list) -> None:
    pred = Predictor(exported_any_model_dir, prefer_gpu=False)
    ex = Explainer(pred, ExplainSettings())
    rng = np.random.default_rng(0)
    top, rand = [], []
    for x, z, has in materials:
        r = ex.attribute((x, z, has))
        for a, attr in enumerate(r.attributions):
            if attr is None:
                continue
            base = ex.baseline(SYMBOLS[int(z[a]) - 1])
            sels = [np.argsort(-np.abs(attr))[:20]] + [rng.choice(len(attr), 20, replace=False) for _ in range(10)]
            xs = np.stack([x.copy() for _ in sels])
            for v, sel in enumerate(sels):
                xs[v, a, sel] = base[sel]
            n = len(xs)
            p = pred.predict_arrays(xs, np.repeat(z[None], n, 0), np.ones((n, len(z)), np.float32),
                                    np.repeat(has[None], n, 0))
            top.append(abs(r.probability - p[0]))
            rand.append(np.mean(np.abs(r.probability - p[1:])))
    assert np.mean(top) > 2 * np.mean(rand), (np.mean(top), np.mean(rand))


def test_composition_only_material_has_no_attributions(exported_any_model_dir: Path) -> None:
    pred = Predictor(exported_any_model_dir, prefer_gpu=False)
    x = np.zeros((2, pred.preprocessor.n_points), np.float32)
    r = Explainer(pred).attribute((x, np.asarray([29, 8]), np.zeros(2, np.float32)))
    assert r.attributions == [None, None] and r.spectrum_effects == [None, None]
    assert r.probability == pytest.approx(r.probability_at_baseline, abs=1e-7)


def test_settings_refuse_a_chunk_below_one() -> None:
    """``explain.chunk`` 0 made the chunked runs loop forever (or divide by zero): refused by name,
    from params and when built directly."""
    from xastopo.config import ConfigError

    for bad in (0, -3):
        with pytest.raises(ConfigError, match="explain.chunk"):
            ExplainSettings.from_params({"explain": {"chunk": bad}})
        with pytest.raises(ConfigError, match="explain.chunk"):
            ExplainSettings(chunk=bad)
    with pytest.raises(ConfigError, match="explain.max_test_materials"):
        ExplainSettings.from_params({"explain": {"max_test_materials": -1}})
    assert ExplainSettings.from_params({"explain": {"max_test_materials": 3}}).max_test_materials == 3


def test_integrated_gradients_memory_is_capped_by_chunk(exported_any_model_dir: Path, materials: list) -> None:
    """Integrated gradients build ``2 * steps * n_points`` variants per edge; they are made and run
    ``chunk`` at a time, so peak memory follows the chunk, not the variant count (numpy's allocations
    are traced by tracemalloc), and the attributions do not depend on the chunk."""
    import tracemalloc

    pred = Predictor(exported_any_model_dir, prefer_gpu=False)
    x, z, has = max(materials, key=lambda m: int((m[2] > 0).sum()) * len(m[1]))
    small = ExplainSettings(method="integrated_gradients", steps=16, chunk=64)
    big = ExplainSettings(method="integrated_gradients", steps=16, chunk=1 << 20)
    ref = Explainer(pred, big).attribute((x, z, has))
    explainer = Explainer(pred, small)
    explainer.attribute((x, z, has))  # warm-up: session buffers, caches
    tracemalloc.start()
    try:
        got = explainer.attribute((x, z, has))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    variant_bytes = x.nbytes + has.nbytes
    n_variants = 2 + int((has > 0).sum()) * (1 + 2 * small.steps * x.shape[1])
    assert peak < 0.1 * n_variants * variant_bytes, (peak, n_variants * variant_bytes)
    assert peak < 40 * small.chunk * variant_bytes + (1 << 20), peak
    for a, b in zip(got.attributions, ref.attributions, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_explain_stage_reads_the_configured_model_dir(exported_any_model_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The DVC stage finds the model as every other entry point does (``config.model_dir``:
    $XASTOPO_MODEL_DIR, else ``serving.model_dir``) and takes ``max_test_materials`` from
    ExplainSettings."""
    import yaml

    from xastopo.config import load_params
    from xastopo.stages import explain as stage

    d = dict(np.load(exported_any_model_dir.parent / "test_arrays.npz"))
    d["has_spectrum"] = d.pop("has")
    (tmp_path / "data" / "features").mkdir(parents=True)
    np.savez(tmp_path / "data" / "features" / "test_any.npz", **d)
    params = dict(load_params())
    params["explain"] = {**params["explain"], "max_test_materials": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XASTOPO_MODEL_DIR", str(exported_any_model_dir))
    monkeypatch.delenv("XASTOPO_PARAMS", raising=False)
    stage.main()
    import json

    report = json.loads((tmp_path / "reports" / "explain.json").read_text())
    assert report["n_materials"] == 3 and report["method"] == params["explain"]["method"]
    assert (tmp_path / "plots" / "explain" / "attribution_test.png").is_file()
