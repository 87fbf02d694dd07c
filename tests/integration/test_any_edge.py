"""The request side of ``nn_any`` (every element of the composition an absorber, any subset with
spectra) through the library's two halves, on a real small exported ``nn_any`` and real spectra:
ONNX parity with the torch ensemble (has_spectrum 0 and 1), composition-only answers, a spectrum of
an element without statistics read by type with a warning, still-refused invalid spectra, and the
old feature kinds unchanged (formula ignored beyond the subset check, spectra required).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from xastopo.schema import parse_request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def any_predictor(exported_any_model_dir: Path):
    from xastopo.inference import Predictor

    return Predictor(exported_any_model_dir, prefer_gpu=False)


def test_onnx_matches_torch_ensemble(exported_any_model_dir: Path, any_predictor) -> None:
    """The served graph (through the Predictor) = the saved ensemble in torch, probabilities and
    uncertainties, with the test split's has_spectrum and with more spectra hidden."""
    import torch

    from xastopo.models.nn import CalibratedEnsemble, build_any_edge_net

    root = exported_any_model_dir.parent
    ckpt = torch.load(root / "models" / "nn_any" / "model.pt", map_location="cpu", weights_only=False)
    nets = []
    for state in ckpt["members"]:
        net = build_any_edge_net(ckpt["config"], ckpt["n_points"])
        net.load_state_dict(state)
        nets.append(net)
    model = CalibratedEnsemble(nets, ckpt["temperature"]).eval()
    d = dict(np.load(root / "test_arrays.npz"))
    hidden = d["has"] * (np.random.default_rng(0).random(d["has"].shape) > 0.5)
    for has in (d["has"], hidden.astype(np.float32)):
        assert (has[d["mask"] > 0] == 0).any() and (has[d["mask"] > 0] == 1).any()
        x = d["X"] * has[..., None]
        p, u = any_predictor.predict_arrays_with_uncertainty(x, d["Z"], d["mask"], has)
        with torch.no_grad():
            tp, tu = model(*(torch.as_tensor(a) for a in (x, d["Z"], d["mask"], has)))
        np.testing.assert_allclose(p, tp.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(u, tu.numpy(), rtol=0, atol=1e-5)
        assert np.median(u) > 1e-3  # two members: a real spread, not 0 == 0
        np.testing.assert_array_equal(any_predictor.predict_arrays(x, d["Z"], d["mask"], has), p)
    assert any_predictor.has_uncertainty and any_predictor.output_names == ["probability", "uncertainty"]
    # the export parity check's call (no has_spectrum): every present absorber has its spectrum
    np.testing.assert_array_equal(any_predictor.predict_arrays(d["X"], d["Z"], d["mask"]),
                                  any_predictor.predict_arrays(d["X"], d["Z"], d["mask"], d["mask"]))


def test_arrays_every_element_an_absorber(exported_any_model_dir: Path, any_request: dict, cu_oxide: dict) -> None:
    from xastopo.elements import formula_elements
    from xastopo.inference import InputBuilder

    builder = InputBuilder(exported_any_model_dir)
    assert builder.reads_composition
    mats = parse_request(any_request).materials
    inputs = builder.build(mats)
    assert not inputs.errors
    elements = formula_elements(cu_oxide["formula"])
    z_of = {el: i for i, el in enumerate(elements)}
    x, z, has = inputs.arrays[0]  # formula only
    assert z.tolist() == [int(v) for v in sorted(z)] and len(z) == len(elements)
    assert not has.any() and not x.any()
    x, z, has = inputs.arrays[2]  # Cu + O spectra: O has no statistics, read by its type only
    assert has.tolist() == [1.0 if el == "Cu" else 0.0 for el in elements]
    assert x[z_of["Cu"]].any() and not x[z_of["O"]].any()
    assert inputs.notes[2] == ["O: no training spectra for this element; used by its type only"]
    x3, z3, has3 = inputs.arrays[3]  # the same Cu spectrum without the O one: the same arrays
    np.testing.assert_array_equal(x3, x)
    np.testing.assert_array_equal(has3, has)
    assert inputs.notes[3] == []
    x, z, has = inputs.arrays[4]  # old shape: the spectra's elements, all with spectra
    assert has.tolist() == [1.0] * len(z)


def test_answers(any_predictor, any_request: dict, cu_oxide: dict) -> None:
    from xastopo.elements import formula_elements

    preds = any_predictor.predict(parse_request(any_request).materials)
    elements = formula_elements(cu_oxide["formula"])
    f, e, cu_o, cu, old = preds[:5]
    assert f.composition_only and f.elements_by_type == elements == f.elements_used
    assert f.elements_with_spectrum == [] and any("composition only" in w for w in f.warnings)
    assert e.composition_only and e.elements_used == ["Se", "Bi"]
    assert not cu_o.composition_only and cu_o.elements_with_spectrum == ["Cu"]
    assert cu_o.elements_by_type == [el for el in elements if el != "Cu"] and cu_o.elements_used == elements
    assert "O: no training spectra for this element; used by its type only" in cu_o.warnings
    # an O spectrum the model cannot read changes nothing but the warning
    assert cu_o.probability_topological == cu.probability_topological
    assert cu.warnings == [w for w in cu_o.warnings if not w.startswith("O:")]
    assert old.elements_used == old.elements_with_spectrum == ["Cu"] and old.elements_by_type == []
    for p in preds:
        assert p.uncertainty is not None and 0.0 <= p.uncertainty <= 0.5  # two members: half their gap
        assert 0.0 <= p.probability_topological <= 1.0
        assert p.label == ("topological" if p.probability_topological >= any_predictor.threshold else "trivial")
    # chunked ONNX runs give the same answers
    inputs = any_predictor.build(parse_request(any_request).materials)
    again = any_predictor.predict_inputs(inputs, batch_size=2)
    np.testing.assert_allclose([p.probability_topological for p in again],
                               [p.probability_topological for p in preds], rtol=0, atol=1e-6)
    assert [p.model_dump(exclude={"probability_topological", "uncertainty"}) for p in again] == \
        [p.model_dump(exclude={"probability_topological", "uncertainty"}) for p in preds]


def test_invalid_spectrum_still_refused(any_predictor, any_request: dict) -> None:
    """Read-by-type is for elements without statistics only; a bad spectrum of a known element is
    refused, naming the material and field, as for the other models."""
    from xastopo.inference import InputError

    bad = copy.deepcopy(any_request["materials"][2])
    cu = bad["spectra"][0]
    third = len(cu["energy"]) // 3
    cu["energy"], cu["mu"] = cu["energy"][:third], cu["mu"][:third]
    inputs = any_predictor.build(parse_request({"materials": [any_request["materials"][0], bad]}).materials)
    assert inputs.valid == [0]
    err = inputs.errors[0]
    assert isinstance(err, InputError) and (err.index, err.field) == (1, "spectra[0].energy")
    assert "eV is needed" in err.message and err.message.startswith("Cu:")


def test_metadata_says_what_is_new(any_predictor) -> None:
    card = any_predictor.describe()
    assert card["model_kind"] == "nn_any" and card["feature_kind"] == "padded_any"
    assert card["reads_composition"] is True and card["uncertainty"] is True
    assert card["outputs"] == ["probability", "uncertainty"]


def test_spectra_models_unchanged(exported_model_dir: Path, any_request: dict, sample_request: dict) -> None:
    """The paper's nn (kind padded): the formula changes nothing beyond the subset check, answers
    carry the new fields with their old meaning, and a material without spectra is refused."""
    from xastopo.inference import InputError, Predictor

    nn = Predictor(exported_model_dir, prefer_gpu=False)
    assert not nn.reads_composition and not nn.has_uncertainty and nn.describe()["uncertainty"] is False
    mats = any_request["materials"]
    with_formula, without = nn.predict(parse_request({"materials": [mats[3], mats[4]]}).materials)
    plain = nn.predict(parse_request({"materials": [{**mats[3], "formula": None}]}).materials)[0]
    assert with_formula.probability_topological == plain.probability_topological
    assert with_formula.elements_used == ["Cu"] == with_formula.elements_with_spectrum
    for p in (with_formula, without):
        assert p.uncertainty is None and p.elements_by_type == [] and not p.composition_only
    inputs = nn.build(parse_request({"materials": mats[:3]}).materials)
    assert [(e.index, e.field) for e in inputs.errors] == [(0, "spectra"), (1, "spectra"), (2, "spectra[1].element")]
    assert "this model (kind 'nn') needs spectra" in inputs.errors[0].message
    assert "no statistics for element 'O'" in inputs.errors[2].message
    # the old request shape: the same answers as before the composition fields (arrays → ONNX)
    req = parse_request(sample_request).materials
    inputs = nn.build(req)
    x, z, mask = nn.padded(inputs.valid_arrays())[:3]
    np.testing.assert_allclose([p.probability_topological for p in nn.predict(req)],
                               nn.predict_arrays(x, z, mask), rtol=0, atol=1e-7)
    with pytest.raises(InputError):
        nn.predict(parse_request({"materials": [mats[0]]}).materials)


def test_simulation_planner_by_uncertainty(exported_any_model_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """``xastopo simulate --by-uncertainty --dry-run`` on the real labels and structures with a real exported
    ensemble: it plans the materials the model is least sure of from their formula (higher uncertainty than
    the default plan on the same budget); bad uses are one line and exit 2."""
    import json
    import subprocess
    import sys

    import pandas as pd
    import yaml

    from xastopo.screening import composition_uncertainty

    raw = shared_data
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"raw_dir": str(raw)}, "simulate": {"max_sites": 8}}))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "xastopo.cli_simulate", "--params", str(params), "--out",
                               str(tmp_path / "out"), "--dry-run", *args], capture_output=True, text=True)

    runs = {k: cli("--budget-cpu-hours", "0.5", *extra) for k, extra in
            (("uncertainty", ("--by-uncertainty", "--model-dir", str(exported_any_model_dir))), ("default", ()))}
    for r in runs.values():
        assert r.returncode == 0, r.stderr[-2000:]
    assert "(by uncertainty)" in runs["uncertainty"].stderr
    ids = {k: json.loads(r.stdout)["materials"] for k, r in runs.items()}
    formulas = dict(pd.read_parquet(raw / "structures" / "structures.parquet", columns=["mp_id", "formula_sum"])
                    .itertuples(index=False, name=None))
    unc = composition_uncertainty(exported_any_model_dir, {i: formulas[i] for k in ids for i in ids[k]})
    mean = {k: np.mean([unc[i] for i in v if i in unc]) for k, v in ids.items()}
    assert len(ids["uncertainty"]) >= 5 and mean["uncertainty"] > 2 * mean["default"], mean
    for args, needle in ((("--by-uncertainty", "--n-materials", "3", "--model-dir", str(tmp_path)), "--model-dir"),
                         (("--by-uncertainty", "--materials", "mp-149"), "--materials"),
                         (("--model-dir", str(exported_any_model_dir), "--n-materials", "3"), "--by-uncertainty")):
        r = cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
