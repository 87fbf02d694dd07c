"""`xastopo predict` on real test-split spectra with a real small exported model.

Parquet input with several sites per element (combined with their weights exactly as in training)
and a JSON request; bad inputs and a missing model exit != 0 with one readable line, no traceback.
With a real small ``nn_any`` (reads a composition plus any subset of edges): a CSV of formulas
(composition only) and a parquet with a formula column, answered as the library answers the same
materials as a JSON request. The exported models are built by the integration fixtures (shared per
session, ~40 s): marked slow.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
XASTOPO = Path(sys.executable).parent / "xastopo"

# The real exported-model fixtures live with the integration tests; load them here by path (the
# model itself is built once per session and reused under the session's base temp dir).

pytestmark = pytest.mark.slow


def run_cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(XASTOPO), "predict", *args], cwd=cwd, capture_output=True, text=True, timeout=180)


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> str:
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def test_parquet_sites_combined_as_in_training(tmp_path: Path, exported_model_dir: Path, sample_sites: pd.DataFrame,
                                               split_records: pd.DataFrame) -> None:
    from xastopo.inference import Predictor
    from xastopo.preprocessing.dataset import featurize_split
    from xastopo.preprocessing.preprocessor import Preprocessor

    counts = sample_sites.groupby(["mp_id", "absorbing_element"]).size()
    assert counts.max() >= 2, "the slice must have an element with several sites"
    assert sample_sites.groupby("mp_id")["absorbing_element"].nunique().max() >= 2
    src = tmp_path / "sites.parquet"
    sample_sites.to_parquet(src)
    out = tmp_path / "out.csv"
    r = run_cli(str(src), "--out", str(out), "--model-dir", str(exported_model_dir))
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert df["material_id"].tolist() == list(dict.fromkeys(sample_sites["mp_id"]))  # input order
    assert list(df.columns) == ["material_id", "probability_topological", "label", "elements_used", "warnings",
                                "uncertainty", "elements_with_spectrum", "elements_by_type", "composition_only"]
    assert df["uncertainty"].isna().all() and not df["composition_only"].any()
    assert (df["elements_with_spectrum"] == df["elements_used"]).all() and df["elements_by_type"].isna().all()

    # reference: the training featurization of the same records, through the ONNX session
    pre = Preprocessor.load(exported_model_dir / "preprocessor.json")
    recs = split_records[split_records["mp_id"].isin(set(sample_sites["mp_id"]))]
    arrays, rejects = featurize_split(pre, recs, desc="ref")
    assert sum(rejects.values()) == 0
    predictor = Predictor(exported_model_dir, prefer_gpu=False)
    ref = dict(zip(arrays["ids"], predictor.predict_arrays(arrays["X"], arrays["Z"], arrays["mask"]), strict=True))
    got = dict(zip(df["material_id"], df["probability_topological"], strict=True))
    assert set(got) == set(ref)
    np.testing.assert_allclose([got[k] for k in ref], [ref[k] for k in ref], rtol=0, atol=1e-6)
    thr = predictor.threshold
    assert all((df["label"] == "topological") == (df["probability_topological"] >= thr))
    multi = df[df["elements_used"].str.contains(";")]
    assert len(multi) >= 1


def test_json_request_matches_predictor(tmp_path: Path, exported_model_dir: Path, sample_request: dict) -> None:
    from xastopo.inference import Predictor
    from xastopo.schema import PredictRequest

    src = tmp_path / "req.json"
    src.write_text(json.dumps(sample_request))
    out = tmp_path / "out.csv"
    r = run_cli(str(src), "--out", str(out), "--model-dir", str(exported_model_dir))
    assert r.returncode == 0, r.stderr
    assert f"wrote {len(sample_request['materials'])} predictions" in r.stdout
    df = pd.read_csv(out)
    ref = Predictor(exported_model_dir, prefer_gpu=False).predict(
        PredictRequest.model_validate(sample_request).materials)
    assert df["material_id"].tolist() == [p.material_id for p in ref]
    np.testing.assert_allclose(df["probability_topological"], [p.probability_topological for p in ref],
                               rtol=0, atol=1e-6)
    assert df["label"].tolist() == [p.label for p in ref]


def test_model_dir_from_environment(tmp_path: Path, exported_model_dir: Path, sample_request: dict) -> None:
    import os

    src = tmp_path / "req.json"
    src.write_text(json.dumps({"materials": sample_request["materials"][:3]}))
    env = {**os.environ, "XASTOPO_MODEL_DIR": str(exported_model_dir)}
    r = subprocess.run([str(XASTOPO), "predict", str(src), "--out", str(tmp_path / "o.csv")], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "o.csv")) == 3


def _bad_json(good: dict) -> dict[str, tuple[object, tuple[str, ...]]]:
    s = good["spectra"][0]
    e, mu = s["energy"], s["mu"]
    third = len(e) // 3

    def one(**over) -> dict:
        return {"materials": [good, {"material_id": "bad-1", "spectra": [{**s, **over}]}]}

    return {
        "nan": (one(mu=mu[:4] + [math.nan] + mu[5:]), ("materials[1].spectra[0].mu", "NaN")),
        "not_increasing": (one(energy=[e[0]] * 2 + e[2:]), ("materials[1].spectra[0]", "strictly increasing")),
        "window": (one(energy=e[:third], mu=mu[:third]), ("materials[1].spectra[0].energy: Cu:", "eV is needed",
                                                         "material_id bad-1")),
        "no_statistics": (one(element="Zn"), ("materials[1].spectra[0].element", "no statistics for element 'Zn'")),
        "unknown_element": (one(element="Qq"), ("materials[1].spectra[0].element", "unknown element")),
        "wrong_type": ({"materials": [{"material_id": "x", "spectra": [{**s, "energy": "high"}]}]},
                       ("materials[0].spectra[0].energy",)),
        "no_spectra": ({"materials": [{"material_id": "x", "spectra": []}]}, ("materials[0].spectra", "no spectra")),
    }


@pytest.mark.parametrize("case", ["nan", "not_increasing", "window", "no_statistics", "unknown_element",
                                  "wrong_type", "no_spectra"])
def test_bad_json_one_line(tmp_path: Path, exported_model_dir: Path, sample_request: dict, case: str) -> None:
    good = next(m for m in sample_request["materials"] if [s["element"] for s in m["spectra"]] == ["Cu"])
    body, fragments = _bad_json(good)[case]
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(body))
    r = run_cli(str(src), "--out", str(tmp_path / "o.csv"), "--model-dir", str(exported_model_dir))
    assert_one_line_error(r, "error:", *fragments)
    assert not (tmp_path / "o.csv").exists()


def test_bad_files_one_line(tmp_path: Path, exported_model_dir: Path, sample_sites: pd.DataFrame) -> None:
    md = ("--model-dir", str(exported_model_dir))
    out = ("--out", str(tmp_path / "o.csv"))
    (tmp_path / "broken.json").write_text('{"materials": [')
    assert_one_line_error(run_cli(str(tmp_path / "broken.json"), *out, *md), "not valid JSON")
    assert_one_line_error(run_cli(str(tmp_path / "absent.parquet"), *out, *md), "file not found")
    (tmp_path / "x.bin").write_text("hello")
    assert_one_line_error(run_cli(str(tmp_path / "x.bin"), *out, *md), "expected a .parquet, .json or .csv")
    (tmp_path / "x.txt").write_text("hello")  # a .txt is a measured spectrum: its reader says what is wrong
    assert_one_line_error(run_cli(str(tmp_path / "x.txt"), *out, *md), "x.txt: no numeric data columns found")
    sample_sites.drop(columns=["mu"]).to_parquet(tmp_path / "nomu.parquet")
    assert_one_line_error(run_cli(str(tmp_path / "nomu.parquet"), *out, *md), "missing column(s) mu")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    assert_one_line_error(run_cli(str(tmp_path / "junk.parquet"), *out, *md), "not a readable parquet")
    # a site whose spectrum is too short, inside an otherwise good parquet
    bad = sample_sites.copy()
    bad.at[0, "energy"] = bad.at[0, "energy"][:5]
    bad.at[0, "mu"] = bad.at[0, "mu"][:5]
    bad.to_parquet(tmp_path / "short.parquet")
    line = assert_one_line_error(run_cli(str(tmp_path / "short.parquet"), *out, *md), "materials[0]",
                                 "at least 20 needed")
    assert str(bad.at[0, "mp_id"]) in line
    r = run_cli(str(tmp_path / "short.parquet"), *out, *md, "--skip-invalid")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "o.csv")
    assert df["warnings"].iloc[0].startswith("invalid: materials[0]")
    assert df["probability_topological"].notna()[1:].all()


def test_missing_or_damaged_model_dir_one_line(tmp_path: Path, exported_model_dir: Path,
                                               sample_request: dict) -> None:
    import shutil

    src = tmp_path / "req.json"
    src.write_text(json.dumps({"materials": sample_request["materials"][:2]}))
    out = ("--out", str(tmp_path / "o.csv"))
    assert_one_line_error(run_cli(str(src), *out, "--model-dir", str(tmp_path / "nope")),
                          "model artifact missing", str(tmp_path / "nope"))
    d = tmp_path / "export"
    shutil.copytree(exported_model_dir, d)
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:-10])
    assert_one_line_error(run_cli(str(src), *out, "--model-dir", str(d)), "checksum mismatch", "model.onnx")


def test_two_halves(exported_model_dir: Path, sample_request: dict) -> None:
    """request → arrays (InputBuilder, no ONNX session) collects every bad material with its index and
    field; arrays → predictions (Predictor) gives the answers of `Predictor.predict` in order."""
    from xastopo.inference import InputBuilder, Predictor
    from xastopo.schema import PredictRequest

    builder = InputBuilder(exported_model_dir)
    assert not hasattr(builder, "session")
    good = next(m for m in sample_request["materials"] if [s["element"] for s in m["spectra"]] == ["Cu"])
    body, _ = _bad_json(good)["window"]
    zn, _ = _bad_json(good)["no_statistics"]
    mats = PredictRequest.model_validate({"materials": body["materials"] + zn["materials"][1:]}).materials
    inputs = builder.build(mats)
    assert [(e.index, e.field) for e in inputs.errors] == [(1, "spectra[0].energy"), (2, "spectra[0].element")]
    assert inputs.valid == [0] and inputs.arrays[1] is None and inputs.arrays[2] is None
    assert inputs.errors[1].item() == {"loc": "materials[2].spectra[0].element", "index": 2,
                                       "field": "spectra[0].element", "message": inputs.errors[1].message}

    predictor = Predictor(exported_model_dir, prefer_gpu=False)
    req = PredictRequest.model_validate(sample_request).materials
    inputs = predictor.build(req)
    assert not inputs.errors
    whole = predictor.predict_inputs(inputs)
    assert whole == predictor.predict(req)
    probs = predictor.probabilities(inputs.valid_arrays(), batch_size=7)  # chunked ONNX runs
    chunked = builder.predictions(inputs, probs)
    np.testing.assert_allclose([p.probability_topological for p in chunked],
                               [p.probability_topological for p in whole], rtol=0, atol=1e-6)
    assert [p.model_dump(exclude={"probability_topological"}) for p in chunked] == \
        [p.model_dump(exclude={"probability_topological"}) for p in whole]


def test_batch_build_is_one_material_at_a_time(exported_model_dir: Path, exported_any_model_dir: Path,
                                               sample_request: dict, any_request: dict) -> None:
    """``InputBuilder.build`` transforms the computed spectra per element for the whole batch
    (``Preprocessor.transform_many``): every material's arrays are bit for bit those it gets alone
    (``material_inputs``), with bad materials among them, for both feature kinds."""
    from xastopo.inference import InputBuilder, InputError
    from xastopo.schema import PredictRequest

    good = next(m for m in sample_request["materials"] if [s["element"] for s in m["spectra"]] == ["Cu"])
    bad = [_bad_json(good)[k][0]["materials"][1] for k in ("window", "no_statistics")]
    for model_dir, body in ((exported_model_dir, sample_request), (exported_any_model_dir, any_request)):
        builder = InputBuilder(model_dir)
        mats = PredictRequest.model_validate({"materials": [*bad[:1], *body["materials"], *bad[1:]]}).materials
        inputs = builder.build(mats)
        failed = []
        for i, m in enumerate(mats):
            try:
                arrays, notes = builder.material_inputs(i, m)
            except InputError as exc:
                assert inputs.arrays[i] is None
                failed.append(exc.item())
                continue
            assert inputs.notes[i] == notes
            for got, alone in zip(inputs.arrays[i], arrays, strict=True):
                assert got.dtype == alone.dtype
                np.testing.assert_array_equal(got, alone)
        assert [e.item() for e in inputs.errors] == failed and failed  # the window error at least
        assert len(inputs.valid) == len(mats) - len(failed) >= len(body["materials"])


def test_spinning_sessions_answer_the_same(exported_any_model_dir: Path, any_request: dict) -> None:
    """``Predictor(spinning=True)`` (``predict.ort_spinning``: `xastopo predict` in one process) only lets ONNX
    Runtime's idle threads spin: the session says so, and every answer is the one of a session that does not
    spin (the service's); the CLI's cached predictor is kept per setting."""
    from xastopo.inference import Predictor
    from xastopo.schema import PredictRequest
    from xastopo.screening import cached_predictor

    req = PredictRequest.model_validate(any_request).materials
    spin, calm = Predictor(exported_any_model_dir, prefer_gpu=False, spinning=True), \
        Predictor(exported_any_model_dir, prefer_gpu=False)
    entry = "session.intra_op.allow_spinning"
    assert spin.session.get_session_options().get_session_config_entry(entry) == "1"
    assert calm.session.get_session_options().get_session_config_entry(entry) == "0"
    assert spin.predict(req) == calm.predict(req)
    assert cached_predictor(exported_any_model_dir, True).spinning
    assert not cached_predictor(exported_any_model_dir).spinning
    assert cached_predictor(exported_any_model_dir, True, 2) is not cached_predictor(exported_any_model_dir, True)


def test_concurrent_runs_answer_bit_for_bit(exported_any_model_dir: Path, sample_sites: pd.DataFrame) -> None:
    """``Predictor(concurrent_runs=2)`` (``predict.concurrent_runs``) runs several ONNX runs at once in a second,
    single-threaded session: every probability and uncertainty is the one of runs one at a time, for any
    cut of the materials; a single run keeps the first session (threads shared per operator); 0 = one per core."""
    import os

    from xastopo.inference import MaterialSites, Predictor

    one = Predictor(exported_any_model_dir, prefer_gpu=False)
    two = Predictor(exported_any_model_dir, prefer_gpu=False, concurrent_runs=2)
    mats = []
    for mp, g in sample_sites.groupby("mp_id", sort=True):
        spectra: dict[str, list] = {}
        for r in g.itertuples(index=False):
            site = (np.asarray(r.energy, float), np.asarray(r.mu, float), 1.0)
            spectra.setdefault(r.absorbing_element, []).append(site)
        mats.append(MaterialSites(str(mp), spectra))
    arrays = one.build(mats).valid_arrays()
    # wider materials: neighbours' absorbers joined (valid inputs: any list of absorbers), half read by type
    for k in (2, 3):
        arrays += [tuple(np.concatenate(parts) for parts in zip(*arrays[i:i + k], strict=True))
                   for i in range(0, 12, k)]
    arrays += [(x, z, np.zeros_like(h)) for x, z, h in arrays[::2]]
    assert len(arrays) > 20 and len({len(a[1]) for a in arrays}) >= 3
    want = one.outputs(arrays)
    for batch in (1, 3, 7, len(arrays) - 1, None):
        got = two.outputs(arrays, batch)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), batch
    # a row read by its type (has 0) is multiplied by 0 in the graph: what it holds changes no answer, so
    # the padding may leave it zeros without copying it (pad_inputs)
    rng = np.random.default_rng(3)
    noisy = [(np.where(h.astype(bool)[:, None], x, rng.normal(size=x.shape)).astype(np.float32), z, h)
             for x, z, h in arrays]
    assert any(not h.all() for _, _, h in noisy)
    for predictor in (one, two):
        got = predictor.outputs(noisy, 5)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    session, pool = two._concurrent()
    assert session.get_session_options().intra_op_num_threads == 1 and pool._max_workers == 2
    assert two.session.get_session_options().intra_op_num_threads == 0  # a single run: the first session's threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert Predictor(exported_any_model_dir, prefer_gpu=False, concurrent_runs=0).concurrent_runs == cores


def test_params_file_places_the_model(tmp_path: Path, exported_model_dir: Path, sample_request: dict) -> None:
    """--params elsewhere: its relative serving.model_dir is taken from the params file's folder."""
    import shutil

    import yaml

    conf = tmp_path / "conf"
    shutil.copytree(exported_model_dir, conf / "model")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["serving"]["model_dir"] = "model"
    (conf / "params.yaml").write_text(yaml.safe_dump(params))
    src = tmp_path / "req.json"
    src.write_text(json.dumps({"materials": sample_request["materials"][:3]}))
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    r = run_cli(str(src), "--out", str(tmp_path / "o.csv"), "--params", str(conf / "params.yaml"), cwd=run_dir)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "o.csv")) == 3
    del params["predict"]  # a params file from before the predict block: still answers (as it did then)
    (conf / "params.yaml").write_text(yaml.safe_dump(params))
    r = run_cli(str(src), "--out", str(tmp_path / "o.csv"), "--params", str(conf / "params.yaml"), cwd=run_dir)
    assert r.returncode == 0, r.stderr
    params["predict"] = {"ort_spinning": "fast"}
    (conf / "params.yaml").write_text(yaml.safe_dump(params))
    assert_one_line_error(run_cli(str(src), "--out", str(tmp_path / "o.csv"), "--params", str(conf / "params.yaml"),
                                  cwd=run_dir), "predict.ort_spinning", "true or false")
    params["predict"] = {"concurrent_runs": "all"}
    (conf / "params.yaml").write_text(yaml.safe_dump(params))
    assert_one_line_error(run_cli(str(src), "--out", str(tmp_path / "o.csv"), "--params", str(conf / "params.yaml"),
                                  cwd=run_dir), "predict.concurrent_runs", "whole number")
    del params["predict"]
    params["serving"]["model_dir"] = "absent"
    (conf / "params.yaml").write_text(yaml.safe_dump(params))
    assert_one_line_error(run_cli(str(src), "--out", str(tmp_path / "o.csv"), "--params", str(conf / "params.yaml"),
                                  cwd=run_dir), "model artifact missing", str(conf / "absent"))


# ------------------------------------------------------------------ nn_any: formulas and compositions
def library_answers(model_dir: Path, materials: list[dict]) -> list:
    from xastopo.inference import Predictor
    from xastopo.schema import parse_request

    return Predictor(model_dir, prefer_gpu=False).predict(parse_request({"materials": materials}).materials)


def assert_rows_match(df: pd.DataFrame, ref: list) -> None:
    assert df["material_id"].tolist() == [p.material_id for p in ref]
    np.testing.assert_allclose(df["probability_topological"].astype(float),
                               [p.probability_topological for p in ref], rtol=0, atol=1e-6)
    np.testing.assert_allclose(df["uncertainty"].astype(float), [p.uncertainty for p in ref], rtol=0, atol=1e-6)
    assert df["label"].tolist() == [p.label for p in ref]
    for col in ("elements_used", "elements_with_spectrum", "elements_by_type"):
        assert df[col].tolist() == [";".join(getattr(p, col)) for p in ref], col
    assert df["warnings"].tolist() == [" | ".join(p.warnings) for p in ref]
    assert df["composition_only"].astype(str).tolist() == [str(p.composition_only) for p in ref]


def test_csv_of_formulas_composition_only(tmp_path: Path, exported_any_model_dir: Path) -> None:
    src = tmp_path / "candidates.csv"
    src.write_text("material_id,formula,note\ncand-1,Bi2Se3,a TI\ncand-2,Cu2O,\ncand-3, Ca(OH)2 ,x\n")
    out = tmp_path / "screen.csv"
    r = run_cli(str(src), "--out", str(out), "--model-dir", str(exported_any_model_dir))
    assert r.returncode == 0, r.stderr
    assert "wrote 3 predictions" in r.stdout
    df = pd.read_csv(out, keep_default_na=False)
    ref = library_answers(exported_any_model_dir, [{"material_id": "cand-1", "formula": "Bi2Se3"},
                                                   {"material_id": "cand-2", "formula": "Cu2O"},
                                                   {"material_id": "cand-3", "formula": "Ca(OH)2"}])
    assert_rows_match(df, ref)
    assert df["composition_only"].astype(str).tolist() == ["True"] * 3
    assert df["elements_with_spectrum"].tolist() == [""] * 3
    assert df["elements_by_type"].tolist() == ["Se;Bi", "O;Cu", "H;O;Ca"]


def test_csv_of_formulas_bad_input(tmp_path: Path, exported_any_model_dir: Path, exported_model_dir: Path) -> None:
    md = ("--model-dir", str(exported_any_model_dir))
    out = ("--out", str(tmp_path / "o.csv"))
    cases = {
        "nocol.csv": ("material_id,composition\na,Cu2O\n", ("missing column(s) formula",)),
        "empty.csv": ("", ("not a readable csv",)),
        "dup.csv": ("material_id,formula\na,Cu2O\na,CuO\n", ("line 3", "material_id a repeats line 2")),
        "bad.csv": ("material_id,formula\na,Cu2O\nb,Xx2O\n", ("materials[1].formula", "unknown element symbol 'Xx'",
                                                                 "material_id b")),
    }
    for name, (text, fragments) in cases.items():
        (tmp_path / name).write_text(text)
        assert_one_line_error(run_cli(str(tmp_path / name), *out, *md), "error:", *fragments)
        assert not (tmp_path / "o.csv").exists()
    r = run_cli(str(tmp_path / "bad.csv"), *out, *md, "--skip-invalid")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "o.csv")
    assert df["warnings"].iloc[1].startswith("invalid: materials[1].formula")
    assert df["probability_topological"].notna()[0]
    (tmp_path / "o.csv").unlink()
    # a model that reads spectra only cannot answer from a formula
    (tmp_path / "ok.csv").write_text("material_id,formula\na,Cu2O\n")
    assert_one_line_error(run_cli(str(tmp_path / "ok.csv"), *out, "--model-dir", str(exported_model_dir)),
                          "materials[0].spectra", "this model (kind 'nn') needs spectra", "material_id a")


def test_parquet_with_formula_column(tmp_path: Path, exported_any_model_dir: Path, sample_request: dict,
                                     split_records: pd.DataFrame, labels: pd.DataFrame) -> None:
    """One formula per material (blank rows take it from the material's other rows); the answers are
    the library's for the same spectra and formulas as a JSON request; rows that disagree stop the run."""
    formulas = dict(zip(labels["mp_id"], labels["formula"], strict=True))
    mats = [m for m in sample_request["materials"] if isinstance(formulas.get(m["material_id"]), str)][:6]
    rows = []
    for k, m in enumerate(mats):
        for s in m["spectra"]:
            for site in range(2):  # the same site twice: the first row with the formula, the second blank
                rows.append({"mp_id": m["material_id"], "absorbing_element": s["element"], "energy": s["energy"],
                             "mu": s["mu"], "formula": formulas[m["material_id"]] if site == 0 or k % 2 else None})
    src = tmp_path / "sites.parquet"
    pd.DataFrame(rows).to_parquet(src)
    out = tmp_path / "out.csv"
    r = run_cli(str(src), "--out", str(out), "--model-dir", str(exported_any_model_dir))
    assert r.returncode == 0, r.stderr
    ref = library_answers(exported_any_model_dir,
                          [{**m, "formula": formulas[m["material_id"]]} for m in mats])
    assert_rows_match(pd.read_csv(out, keep_default_na=False), ref)
    assert any(p.elements_by_type for p in ref)  # the formulas add elements read by type

    bad = pd.DataFrame(rows)
    first = bad["mp_id"] == mats[0]["material_id"]
    bad.loc[first.idxmax(), "formula"] = "Cu2O"
    bad.loc[first[::-1].idxmax(), "formula"] = "CuO"
    bad.to_parquet(tmp_path / "disagree.parquet")
    assert_one_line_error(run_cli(str(tmp_path / "disagree.parquet"), "--out", str(tmp_path / "o.csv"), "--model-dir",
                                  str(exported_any_model_dir)),
                          f"material {mats[0]['material_id']}", "different formulas", "'Cu2O'", "'CuO'")
