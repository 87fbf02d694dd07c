"""The BentoML service on a real loopback server, with a real small exported model and real
test-split spectra: same predictions as the CLI and the ONNX session, every bad input a 4xx naming
the material and field, bearer token, metadata, adaptive batching under concurrent clients,
start-up failure on a bad artifact, and a Bento from `bentoml build` serving the same answers.

One server (module scope) serves most tests; it runs with a bearer token and, through a copy of
params.yaml, a smaller body limit so the 413 check does not need a 20 MB upload.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from xastopo.local_server import BIN, free_port
from xastopo.local_server import LocalServer as Server

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-3f9c"
BODY_LIMIT = 2_000_000
ATOL = 1e-6

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------ helpers
def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XASTOPO_")}
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True", PYTHONUNBUFFERED="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def auth(token: str | None = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def post(server: Server, path: str, body=None, token: str | None = TOKEN, **kw) -> requests.Response:
    if body is not None and "data" not in kw:
        kw["data"] = json.dumps(body)  # allow_nan: NaN/Infinity literals reach the server as sent
        kw.setdefault("headers", {})["Content-Type"] = "application/json"
    kw.setdefault("headers", {}).update(auth(token))
    return requests.post(f"{server.url}{path}", timeout=120, **kw)


def reference(model_dir: Path, request: dict) -> list:
    """Predictions of the ONNX session through the library (no server)."""
    from xastopo.inference import Predictor
    from xastopo.schema import PredictRequest

    req = PredictRequest.model_validate(request)
    return Predictor(model_dir, prefer_gpu=False).predict(req.materials)


def assert_same(preds: list[dict], ref: list, atol: float = ATOL) -> None:
    assert len(preds) == len(ref)
    for p, r in zip(preds, ref, strict=True):
        assert p["material_id"] == r.material_id
        assert abs(p["probability_topological"] - r.probability_topological) <= atol
        assert p["label"] == r.label
        assert p["elements_used"] == r.elements_used
        assert p["model_name"] == r.model_name and p["model_version"] == r.model_version
        assert p["warnings"] == r.warnings
        assert p["elements_with_spectrum"] == r.elements_with_spectrum
        assert p["elements_by_type"] == r.elements_by_type and p["composition_only"] == r.composition_only
        assert (p["uncertainty"] is None) == (r.uncertainty is None)
        if r.uncertainty is not None:
            assert abs(p["uncertainty"] - r.uncertainty) <= atol


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def server(tmp_path_factory, exported_model_dir: Path, sample_request: dict):
    tmp = tmp_path_factory.mktemp("service")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["serving"]["max_body_bytes"] = BODY_LIMIT
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    env = base_env(tmp / "bentoml_home")
    env.update(XASTOPO_MODEL_DIR=str(exported_model_dir), XASTOPO_PARAMS=str(tmp / "params.yaml"),
               XASTOPO_API_TOKEN=TOKEN, XASTOPO_DEVICE="cpu")
    srv = Server("serving.service:XasTopo", env, REPO_ROOT, tmp / "serve.log")
    try:
        srv.wait_ready()
        # BentoML's dispatcher learns its latency model on the first requests: warm it up
        one = {"materials": sample_request["materials"][:1]}
        for _ in range(12):
            assert post(srv, "/predict", one).status_code == 200, srv.tail()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def ref_predictions(exported_model_dir: Path, sample_request: dict) -> list:
    return reference(exported_model_dir, sample_request)


@pytest.fixture(scope="module")
def good_material(sample_request: dict) -> dict:
    """A real test-split material with one Cu spectrum."""
    return next(m for m in sample_request["materials"]
                if [s["element"] for s in m["spectra"]] == ["Cu"])


# ------------------------------------------------------------------------------------ tests
def test_health_endpoints_open(server: Server) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        assert requests.get(server.url + path, timeout=10).status_code == 200, path


def test_bearer_token(server: Server, good_material: dict) -> None:
    body = {"materials": [good_material]}
    r = post(server, "/predict", body, token=None)
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert post(server, "/predict", body, token="wrong").status_code == 401
    assert post(server, "/metadata", token=None).status_code == 401
    assert post(server, "/predict", body).status_code == 200


def test_predictions_match_onnx_session_and_cli(server: Server, exported_model_dir: Path, sample_request: dict,
                                                ref_predictions: list, tmp_path: Path) -> None:
    r = post(server, "/predict", sample_request)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "xastopo-classifier-test" and out["model_version"] == "7"
    assert_same(out["predictions"], ref_predictions)
    assert {p["label"] for p in out["predictions"]} == {"topological", "trivial"}

    req = tmp_path / "req.json"
    req.write_text(json.dumps(sample_request))
    csv = tmp_path / "out.csv"
    cli = subprocess.run([str(BIN / "xastopo"), "predict", str(req), "--out", str(csv),
                          "--model-dir", str(exported_model_dir)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    df = pd.read_csv(csv)
    assert df["material_id"].tolist() == [p["material_id"] for p in out["predictions"]]
    np.testing.assert_allclose(df["probability_topological"].to_numpy(),
                               [p["probability_topological"] for p in out["predictions"]], rtol=0, atol=ATOL)
    assert df["label"].tolist() == [p["label"] for p in out["predictions"]]
    assert df["elements_used"].tolist() == [";".join(p["elements_used"]) for p in out["predictions"]]


def test_service_and_cli_answer_identically(server: Server, exported_model_dir: Path, sample_request: dict,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same real request through the server and through `xastopo predict` (both over the
    inference halves): same materials, probabilities, labels, elements and warnings; and the CLI,
    given the server's environment, resolves the model directory the server reports."""
    r = post(server, "/predict", sample_request)
    assert r.status_code == 200, r.text
    served = r.json()["predictions"]
    req = tmp_path / "req.json"
    req.write_text(json.dumps(sample_request))
    csv = tmp_path / "out.csv"
    env = {**os.environ, "XASTOPO_MODEL_DIR": str(exported_model_dir),
           "XASTOPO_PARAMS": str(server.log.parent / "params.yaml")}  # the server's params (beside its log)
    cli = subprocess.run([str(BIN / "xastopo"), "predict", str(req), "--out", str(csv)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    df = pd.read_csv(csv, keep_default_na=False)
    assert df["material_id"].tolist() == [p["material_id"] for p in served]
    np.testing.assert_allclose(df["probability_topological"].to_numpy(float),
                               [p["probability_topological"] for p in served], rtol=0, atol=ATOL)
    assert df["label"].tolist() == [p["label"] for p in served]
    assert df["elements_used"].tolist() == [";".join(p["elements_used"]) for p in served]
    assert df["warnings"].tolist() == [" | ".join(p["warnings"]) for p in served]

    from xastopo.batch_predict import resolve_model_dir

    for key in ("XASTOPO_MODEL_DIR", "XASTOPO_PARAMS"):
        monkeypatch.setenv(key, env[key])
    assert post(server, "/metadata").json()["serving"]["model_dir"] == str(resolve_model_dir(None))


def test_metadata(server: Server, exported_model_dir: Path) -> None:
    r = post(server, "/metadata")
    assert r.status_code == 200, r.text
    m = r.json()
    meta = json.loads((exported_model_dir / "metadata.json").read_text())
    assert m["model_name"] == "xastopo-classifier-test" and m["model_version"] == "7"
    assert m["mlflow_run_id"] == meta["mlflow_run_id"] and m["dataset_hash"] == "md5:test-fixture"
    assert m["test_metrics"]["macro_f1"] == pytest.approx(meta["test_metrics"]["macro_f1"])
    assert m["preprocessing"]["n_points"] == 200 and "Cu" in m["preprocessing"]["elements"]
    assert m["execution_provider"] == "CPUExecutionProvider"
    assert m["serving"]["max_batch_size"] == 64 and m["serving"]["max_body_bytes"] == BODY_LIMIT
    assert m["serving"]["auth"] is True


def _spec(material: dict, **over) -> dict:
    s = copy.deepcopy(material["spectra"][0])
    s.update(over)
    return s


MEASURED_CU = Path(__file__).resolve().parents[3] / "shared/data/experimental/files/xaslib/Cu/Cu_Foil_rt_2016Foils.xdi"


def _measured_cu(stop_above_e0: float | None = None) -> dict:
    """A measured Cu foil (XASLIB) as an experimental spectrum; optionally cut this far above 8980 eV."""
    from xastopo.data.measured import read_measured

    s = read_measured(MEASURED_CU)
    keep = s.energy <= (8980.0 + stop_above_e0) if stop_above_e0 is not None else np.ones(len(s.energy), bool)
    return {"element": "Cu", "energy": s.energy[keep].tolist(), "mu": s.mu[keep].tolist(), "kind": "experimental"}


def _bad_cases(good: dict) -> list[tuple[str, object, int, str, str]]:
    """(id, request body, status, loc of the first error, message fragment). The bad material is
    at index 1, after a good one."""
    s = good["spectra"][0]
    e, mu = list(s["energy"]), list(s["mu"])

    def body(*spectra: dict, mid: str = "bad") -> dict:
        return {"materials": [good, {"material_id": mid, "spectra": list(spectra)}]}

    not_incr = e.copy()
    not_incr[10] = not_incr[9]
    half = len(e) // 3
    many = np.linspace(8900.0, 9200.0, 5001).tolist()
    tiny = {"material_id": "t", "spectra": [{"element": "Cu", "energy": [1.0, 2.0], "mu": [0.0, 1.0]}]}
    return [
        ("nan_energy", body(_spec(good, energy=e[:5] + [math.nan] + e[6:])), 422,
         "materials[1].spectra[0].energy", "NaN"),
        ("inf_mu", body(_spec(good, mu=mu[:3] + [math.inf] + mu[4:])), 422,
         "materials[1].spectra[0].mu", "infinite"),
        ("energy_not_increasing", body(_spec(good, energy=not_incr)), 422,
         "materials[1].spectra[0].energy", "strictly increasing"),
        ("length_mismatch", body(_spec(good, mu=mu[:-3])), 422,
         "materials[1].spectra[0].energy", f"but mu has {len(mu) - 3}"),
        ("too_few_points", body(_spec(good, energy=e[:10], mu=mu[:10])), 422,
         "materials[1].spectra[0].energy", "at least 20 needed"),
        ("window_not_covered", body(_spec(good, energy=e[:half], mu=mu[:half])), 422,
         "materials[1].spectra[0].energy", "eV is needed"),
        ("unknown_element", body(_spec(good, element="Xx")), 422,
         "materials[1].spectra[0].element", "unknown element symbol 'Xx'"),
        ("element_without_statistics", body(_spec(good, element="Zn")), 422,
         "materials[1].spectra[0].element", "no statistics for element 'Zn'"),
        ("no_spectra", body(), 422, "materials[1].spectra", "no spectra"),
        ("bad_formula", {"materials": [good, {"material_id": "f", "formula": "Xx2O"}]}, 422,
         "materials[1].formula", "unknown element symbol 'Xx'"),
        ("element_not_in_formula", {"materials": [good, {"material_id": "f", "formula": "Ti2O3",
                                                         "spectra": [_spec(good)]}]}, 422,
         "materials[1].spectra[0].element", "'Cu' is not in the formula 'Ti2O3'"),
        ("unknown_in_elements", {"materials": [good, {"material_id": "f", "elements": ["Cu", "Qq"]}]}, 422,
         "materials[1].elements[1]", "unknown element symbol 'Qq'"),
        ("formula_only_for_spectra_model", {"materials": [good, {"material_id": "f", "formula": "Cu2S"}]}, 422,
         "materials[1].spectra", "this model (kind 'nn') needs spectra"),
        ("duplicate_elements", body(_spec(good), _spec(good)), 422, "materials[1].spectra", "duplicate element 'Cu'"),
        ("too_many_points", body(_spec(good, energy=many, mu=many)), 422,
         "materials[1].spectra[0].energy", "too many points (5001 > 5000)"),
        ("too_many_materials", {"materials": [tiny] * 257}, 422, "materials", "too many materials (257 > 256)"),
        ("no_materials", {"materials": []}, 422, "materials", "no materials"),
        ("energy_not_numbers", body(_spec(good, energy=["a"] + e[1:])), 422,
         "materials[1].spectra[0].energy[0]", "number"),
        ("material_id_not_string", {"materials": [good, {**good, "material_id": 5}]}, 422,
         "materials[1].material_id", "string"),
        ("spectra_not_list", {"materials": [good, {"material_id": "x", "spectra": "Cu"}]}, 422,
         "materials[1].spectra", "array"),  # pydantic's JSON-mode words (the gate parses with pydantic)
        ("materials_not_list", {"materials": {"a": 1}}, 422, "materials", "array"),
        ("unknown_field", {"materials": [good, {**good, "extra": 1}]}, 422, "materials[1].extra", "not permitted"),
        ("experimental_stops_before_post_edge", body(_measured_cu(stop_above_e0=12.0)), 422,
         "materials[1].spectra[0].energy", "of post-edge is needed"),
        ("experimental_not_k_edge", body({**_measured_cu(), "element": "Ni"}), 422,
         "materials[1].spectra[0].energy", "does not contain the Ni K edge"),
        ("body_not_object", [good], 422, "", "JSON object"),
    ]


@pytest.fixture(scope="module")
def bad_cases(good_material: dict) -> dict:
    return {c[0]: c[1:] for c in _bad_cases(good_material)}


BAD_IDS = [c[0] for c in _bad_cases({"spectra": [{"energy": [0.0] * 30, "mu": [0.0] * 30}]})]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_is_4xx_naming_material_and_field(server: Server, bad_cases: dict, case: str) -> None:
    body, status, loc, fragment = bad_cases[case]
    r = post(server, "/predict", body)
    assert r.status_code == status, r.text
    out = r.json()
    first = out["errors"][0]
    assert first["loc"] == loc, out
    assert fragment in first["message"], out
    assert out["error"].startswith(loc), out
    if loc.startswith("materials[1]"):
        assert first["index"] == 1 and first["field"] == loc.removeprefix("materials[1].")


def test_experimental_kind_is_normalized_and_predicted(server: Server, exported_model_dir: Path) -> None:
    """A measured spectrum (kind experimental) is accepted, normalized and aligned by the one
    InputBuilder: the service answers as the Predictor does in-process."""
    req = {"materials": [{"material_id": "cu-foil", "spectra": [_measured_cu()]}]}
    r = post(server, "/predict", req)
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert p["elements_with_spectrum"] == ["Cu"]
    assert_same([p], reference(exported_model_dir, req))


def test_spectra_model_takes_a_formula_and_ignores_it(server: Server, good_material: dict,
                                                    ref_predictions: list, sample_request: dict) -> None:
    """The paper's nn reads spectra only: with the material's formula the answer is the old one,
    and the new fields say so (every element read with its spectrum, no uncertainty)."""
    i = sample_request["materials"].index(good_material)
    r = post(server, "/predict", {"materials": [{**good_material, "formula": "Cu2S"}]})
    assert r.status_code == 200, r.text
    p = r.json()["predictions"][0]
    assert_same([p], [ref_predictions[i]])
    assert p["uncertainty"] is None and p["elements_with_spectrum"] == ["Cu"] and p["elements_by_type"] == []
    assert p["composition_only"] is False


def test_window_message_names_needed_range(server: Server, bad_cases: dict, exported_model_dir: Path) -> None:
    pre = json.loads((exported_model_dir / "preprocessor.json").read_text())
    w = pre["elements"]["Cu"]
    body, *_ = bad_cases["window_not_covered"]
    msg = post(server, "/predict", body).json()["error"]
    assert f"{w['lo']:.2f}-{w['hi']:.2f} eV is needed" in msg and msg.startswith("materials[1].spectra[0].energy: Cu:")


def test_malformed_json_wrong_content_type_and_oversized_body(server: Server, sample_request: dict) -> None:
    r = post(server, "/predict", data=b'{"materials": [', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = post(server, "/predict", data=b"materials", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    big = json.dumps({"materials": sample_request["materials"] * 8}).encode()
    assert len(big) > BODY_LIMIT
    r = post(server, "/predict", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(big), 1 << 16):
            yield big[i:i + (1 << 16)]

    r = post(server, "/predict", data=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert post(server, "/predict", {"materials": sample_request["materials"][:2]}).status_code == 200


def test_concurrent_clients_are_batched_and_bad_ones_fail_alone(server: Server, sample_request: dict,
                                                               ref_predictions: list, bad_cases: dict) -> None:
    mats = sample_request["materials"]
    bad_bodies = [bad_cases[k][0] for k in ("window_not_covered", "element_without_statistics", "nan_energy")]
    jobs: list[tuple[str, object]] = []
    for i in range(48):
        jobs.append(("good", i % len(mats)))
        if i % 6 == 0:
            jobs.append(("bad", bad_bodies[(i // 6) % len(bad_bodies)]))
    before = post(server, "/batch_stats").json()["batch_sizes"]

    def run(job: tuple[str, object]) -> tuple[str, object, int, dict]:
        kind, what = job
        body = {"materials": [mats[what]]} if kind == "good" else what
        for _ in range(5):  # 503 = BentoML's latency guard shedding load on a busy 2-core box: retry
            r = post(server, "/predict", body)
            if r.status_code != 503:
                break
            time.sleep(0.2)
        return kind, what, r.status_code, r.json()

    with ThreadPoolExecutor(12) as ex:
        results = list(ex.map(run, jobs))
    for kind, what, status, out in results:
        if kind == "good":
            assert status == 200, out
            assert_same(out["predictions"], [ref_predictions[what]])
        else:
            assert status == 422, out
            assert out["errors"][0]["index"] == 1
    sizes = post(server, "/batch_stats").json()["batch_sizes"][len(before):]
    assert sum(sizes) == 48, sizes  # only validated, good materials reach the batch queue
    assert max(sizes) > 1, f"no request was batched with another: {sizes}"


def test_a_request_of_a_whole_batch_goes_past_the_batch_queue(server: Server, exported_model_dir: Path,
                                                               sample_request: dict) -> None:
    """A request of ``serving.max_batch_size`` materials is a batch on its own: the model worker runs it through
    ``infer_whole`` (``whole_sizes``), not the batch queue (``batch_sizes`` unchanged), with the library's
    answers; one material fewer still goes through the queue."""
    limit = int(yaml.safe_load((server.log.parent / "params.yaml").read_text())["serving"]["max_batch_size"])
    mats = sample_request["materials"]
    body = {"materials": [{**mats[i % len(mats)], "material_id": f"m{i}"} for i in range(limit)]}
    ref = reference(exported_model_dir, body)
    before = post(server, "/batch_stats").json()
    r = post(server, "/predict", body)
    assert r.status_code == 200, r.text
    assert_same(r.json()["predictions"], ref)
    after = post(server, "/batch_stats").json()
    assert after["whole_sizes"][len(before["whole_sizes"]):] == [limit]
    assert after["batch_sizes"] == before["batch_sizes"]
    r = post(server, "/predict", {"materials": body["materials"][1:]})
    assert r.status_code == 200, r.text
    assert_same(r.json()["predictions"], ref[1:])
    last = post(server, "/batch_stats").json()
    assert last["whole_sizes"] == after["whole_sizes"]
    assert sum(last["batch_sizes"][len(after["batch_sizes"]):]) == limit - 1


@pytest.mark.parametrize("damage", ["missing", "corrupted_metadata", "checksum_mismatch", "corrupted_onnx"])
def test_bad_artifact_stops_startup_with_one_clear_message(tmp_path: Path, exported_model_dir: Path,
                                                           damage: str) -> None:
    d = tmp_path / "export"
    shutil.copytree(exported_model_dir, d)
    expected = {"missing": "model artifact missing", "corrupted_metadata": "model artifact corrupted",
                "checksum_mismatch": "model artifact checksum mismatch",
                "corrupted_onnx": "model artifact corrupted"}[damage]
    if damage == "missing":
        (d / "model.onnx").unlink()
    elif damage == "corrupted_metadata":
        (d / "metadata.json").write_text('{"model_name": ')
    elif damage == "checksum_mismatch":
        (d / "preprocessor.json").write_text((d / "preprocessor.json").read_text() + "\n")
    else:  # a truncated ONNX file whose checksum was (wrongly) re-recorded
        from xastopo.inference import sha256_file

        onnx = d / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:1000])
        meta = json.loads((d / "metadata.json").read_text())
        meta["onnx_sha256"] = sha256_file(onnx)
        (d / "metadata.json").write_text(json.dumps(meta))
    env = base_env(tmp_path / "home")
    env["XASTOPO_MODEL_DIR"] = str(d)
    port = free_port()
    r = subprocess.run([str(BIN / "bentoml"), "serve", "serving.service:XasTopo", "--host", "127.0.0.1",
                        "--port", str(port)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert any(ln.startswith(f"xastopo: cannot start: {expected}") and str(d) in ln for ln in lines), lines
    assert "Traceback" not in r.stdout + r.stderr
    assert len(lines) <= 3, lines


def test_bad_params_stops_startup_with_one_line(tmp_path: Path, exported_model_dir: Path) -> None:
    """A serving setting missing from params.yaml: one line naming the key, before any worker starts."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    del params["serving"]["max_batch_size"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = base_env(tmp_path / "home")
    env.update(XASTOPO_MODEL_DIR=str(exported_model_dir), XASTOPO_PARAMS=str(tmp_path / "params.yaml"))
    r = subprocess.run([str(BIN / "bentoml"), "serve", "serving.service:XasTopo", "--host", "127.0.0.1",
                        "--port", str(free_port())], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert lines == ["xastopo: cannot start: params.yaml: missing key 'serving.max_batch_size'"], lines


def test_built_bento_serves_same_predictions(tmp_path: Path, exported_model_dir: Path, sample_request: dict,
                                             ref_predictions: list) -> None:
    ctx = tmp_path / "ctx"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "serving", ctx / "serving", ignore=ignore)
    shutil.copytree(REPO_ROOT / "src" / "xastopo", ctx / "src" / "xastopo", ignore=ignore)
    shutil.copy2(REPO_ROOT / "params.yaml", ctx / "params.yaml")
    shutil.copytree(exported_model_dir, ctx / "models" / "export")
    env = base_env(tmp_path / "bentoml_home")
    b = subprocess.run([str(BIN / "bentoml"), "build", "-f", str(ctx / "serving" / "bentofile.yaml"), str(ctx)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stdout + b.stderr
    tag = re.search(r"xastopo:[a-z0-9]+", b.stdout + b.stderr).group(0)
    bento = tmp_path / "bentoml_home" / "bentos" / "xastopo" / tag.split(":")[1]
    src = bento / "src"
    assert (src / "models" / "export" / "model.onnx").is_file() and (src / "src" / "xastopo" / "inference.py").is_file()
    package = {p.relative_to(ctx / "src") for p in (ctx / "src" / "xastopo").rglob("*.py")}
    assert {p.relative_to(src / "src") for p in (src / "src" / "xastopo").rglob("*.py")} == package
    # as in the image: the bento's environment (PYTHONPATH to its own copy of the package; the
    # image's BENTO_PATH is here the bento's folder), no model dir or params given, served from
    # elsewhere: the bento's own package, model and params.yaml
    envs = {e["name"]: e["value"] for e in yaml.safe_load((bento / "bento.yaml").read_text())["envs"]}
    assert envs["PYTHONPATH"].startswith("/home/bentoml/bento/")
    env["PYTHONPATH"] = str(bento / envs["PYTHONPATH"].removeprefix("/home/bentoml/bento/"))
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    where = subprocess.run([str(BIN / "python"), "-c", "import xastopo.config as c; print(c.PROJECT_ROOT)"],
                           cwd=run_dir, env=env, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()) == src.resolve(), where.stdout + where.stderr
    srv = Server(tag, env, run_dir, tmp_path / "bento_serve.log")
    try:
        srv.wait_ready()
        r = post(srv, "/predict", sample_request, token=None)
        assert r.status_code == 200, r.text + srv.tail()
        assert_same(r.json()["predictions"], ref_predictions)
        meta = post(srv, "/metadata", token=None).json()
        assert meta["serving"]["model_dir"] == str(src / "models" / "export")
    finally:
        srv.stop()
