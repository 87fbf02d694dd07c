"""The service on a real loopback server with a real small exported ``nn_any`` (every element of the
composition an absorber, any subset with spectra): new-shape requests (formula / elements, composition
only, a spectrum of an element without statistics) answered identically by the service, the CLI and
the library; the new refusals as 422 naming the material and field; the old request shape unchanged;
the metadata; and concurrent mixed requests batched together.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml

from xastopo.local_server import BIN
from xastopo.local_server import LocalServer as Server

REPO_ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-6

pytestmark = pytest.mark.slow


def post(server: Server, path: str, body=None) -> requests.Response:
    for _ in range(5):  # 503 = BentoML's latency guard shedding load on a busy 2-core box: retry
        r = requests.post(f"{server.url}{path}", json=body, timeout=120)
        if r.status_code != 503:
            return r
        time.sleep(0.2)
    return r


def library(model_dir: Path, request: dict) -> list:
    from xastopo.inference import Predictor
    from xastopo.schema import parse_request

    return Predictor(model_dir, prefer_gpu=False).predict(parse_request(request).materials)


def assert_same_answers(served: list[dict], ref: list) -> None:
    assert len(served) == len(ref)
    for p, r in zip(served, ref, strict=True):
        assert p["material_id"] == r.material_id
        assert abs(p["probability_topological"] - r.probability_topological) <= ATOL
        assert abs(p["uncertainty"] - r.uncertainty) <= ATOL
        assert {k: p[k] for k in ("label", "elements_used", "elements_with_spectrum", "elements_by_type",
                                  "composition_only", "warnings", "model_name", "model_version")} == \
            r.model_dump(include={"label", "elements_used", "elements_with_spectrum", "elements_by_type",
                                  "composition_only", "warnings", "model_name", "model_version"})


@pytest.fixture(scope="module")
def any_server(tmp_path_factory, exported_any_model_dir: Path, any_request: dict):
    tmp = tmp_path_factory.mktemp("service_any")
    (tmp / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load((REPO_ROOT / "params.yaml").read_text())))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XASTOPO_")}
    env.update(BENTOML_HOME=str(tmp / "bentoml_home"), BENTOML_DO_NOT_TRACK="True", PYTHONUNBUFFERED="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", XASTOPO_MODEL_DIR=str(exported_any_model_dir),
               XASTOPO_PARAMS=str(tmp / "params.yaml"), XASTOPO_DEVICE="cpu")
    srv = Server("serving.service:XasTopo", env, REPO_ROOT, tmp / "serve.log")
    try:
        srv.wait_ready()
        one = {"materials": any_request["materials"][:1]}
        for _ in range(12):  # the dispatcher learns its latency model on the first requests
            assert post(srv, "/predict", one).status_code == 200, srv.tail()
        yield srv
    finally:
        srv.stop()


def test_new_shape_same_answers_from_service_cli_and_library(any_server: Server, exported_any_model_dir: Path,
                                                              any_request: dict, tmp_path: Path) -> None:
    r = post(any_server, "/predict", any_request)
    assert r.status_code == 200, r.text + any_server.tail()
    served = r.json()["predictions"]
    assert r.json()["model_name"] == "xastopo-any-test" and r.json()["model_version"] == "3"
    assert_same_answers(served, library(exported_any_model_dir, any_request))

    req = tmp_path / "req.json"
    req.write_text(json.dumps(any_request))
    csv = tmp_path / "out.csv"
    cli = subprocess.run([str(BIN / "xastopo"), "predict", str(req), "--out", str(csv), "--model-dir",
                          str(exported_any_model_dir)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert cli.returncode == 0, cli.stderr
    df = pd.read_csv(csv, keep_default_na=False)
    assert df["material_id"].tolist() == [p["material_id"] for p in served]
    for row, p in zip(df.itertuples(index=False), served, strict=True):
        assert abs(float(row.probability_topological) - p["probability_topological"]) <= ATOL
        assert abs(float(row.uncertainty) - p["uncertainty"]) <= ATOL
        assert row.label == p["label"]
        for col in ("elements_used", "elements_with_spectrum", "elements_by_type"):
            assert getattr(row, col) == ";".join(p[col]), col
        assert row.warnings == " | ".join(p["warnings"])
        assert str(row.composition_only) == str(p["composition_only"])


def test_composition_only_and_elements_read_by_type(any_server: Server, any_request: dict, cu_oxide: dict) -> None:
    from xastopo.elements import formula_elements

    preds = post(any_server, "/predict", any_request).json()["predictions"]
    elements = formula_elements(cu_oxide["formula"])
    formula_only, elements_only, cu_o = preds[:3]
    for p in (formula_only, elements_only):
        assert p["composition_only"] is True and p["elements_with_spectrum"] == []
        assert p["elements_by_type"] == p["elements_used"]
        assert any(w.startswith("composition only") for w in p["warnings"])
    assert formula_only["elements_used"] == elements and elements_only["elements_used"] == ["Se", "Bi"]
    assert cu_o["composition_only"] is False and cu_o["elements_with_spectrum"] == ["Cu"]
    assert "O" in cu_o["elements_by_type"]
    assert "O: no training spectra for this element; used by its type only" in cu_o["warnings"]


def _refusals(any_request: dict) -> list[tuple[str, dict, str, str]]:
    formula_only, _, cu_o, *_ = any_request["materials"]
    bad_cu = copy.deepcopy(cu_o)
    third = len(bad_cu["spectra"][0]["energy"]) // 3
    bad_cu["spectra"][0]["energy"] = bad_cu["spectra"][0]["energy"][:third]
    bad_cu["spectra"][0]["mu"] = bad_cu["spectra"][0]["mu"][:third]
    o_only = {"material_id": "x", "formula": "Cu2S", "spectra": [cu_o["spectra"][1]]}
    return [
        ("bad_formula", {"material_id": "x", "formula": "Xx2O3"}, "materials[1].formula",
         "unknown element symbol 'Xx'"),
        ("element_not_in_formula", o_only, "materials[1].spectra[0].element", "'O' is not in the formula 'Cu2S'"),
        ("neither_spectra_nor_formula", {"material_id": "x"}, "materials[1].spectra", "no spectra"),
        ("formula_and_elements", {**formula_only, "elements": ["Cu"]}, "materials[1].elements", "not both"),
        ("unknown_in_elements", {"material_id": "x", "elements": ["Bi", "Zz"]}, "materials[1].elements[1]",
         "unknown element symbol 'Zz'"),
        ("invalid_spectrum_still_refused", bad_cu, "materials[1].spectra[0].energy", "eV is needed"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in _refusals({"materials": [{}, {}, {"spectra": [
    {"energy": [0.0] * 30, "mu": [0.0] * 30}, {}]}]})])
def test_new_refusals_are_422_naming_material_and_field(any_server: Server, any_request: dict, case: str) -> None:
    _, material, loc, fragment = next(c for c in _refusals(any_request) if c[0] == case)
    r = post(any_server, "/predict", {"materials": [any_request["materials"][0], material]})
    assert r.status_code == 422, r.text
    first = r.json()["errors"][0]
    assert first["loc"] == loc and fragment in first["message"], r.json()
    assert r.json()["error"].startswith(loc) and first["index"] == 1


def test_old_request_shape_unchanged(any_server: Server, exported_any_model_dir: Path, sample_request: dict) -> None:
    r = post(any_server, "/predict", sample_request)
    assert r.status_code == 200, r.text
    served = r.json()["predictions"]
    assert_same_answers(served, library(exported_any_model_dir, sample_request))
    for p, m in zip(served, sample_request["materials"], strict=True):
        els = [s["element"] for s in m["spectra"]]
        assert sorted(p["elements_used"]) == sorted(els) == sorted(p["elements_with_spectrum"])
        assert p["elements_by_type"] == [] and p["composition_only"] is False


def test_metadata_adds_composition_and_uncertainty(any_server: Server, exported_any_model_dir: Path) -> None:
    m = post(any_server, "/metadata").json()
    assert m["model_kind"] == "nn_any" and m["model_name"] == "xastopo-any-test"
    assert m["reads_composition"] is True and m["uncertainty"] is True
    assert m["outputs"] == ["probability", "uncertainty"] and m["feature_kind"] == "padded_any"
    assert m["execution_provider"] == "CPUExecutionProvider" and "serving" in m and "preprocessing" in m


def test_concurrent_mixed_requests_batched(any_server: Server, exported_any_model_dir: Path,
                                           any_request: dict) -> None:
    """Composition-only and spectra materials of concurrent clients share batches (has travels with
    each item) and each gets the library's answer."""
    mats = any_request["materials"]
    ref = library(exported_any_model_dir, any_request)
    before = post(any_server, "/batch_stats").json()["batch_sizes"]

    def run(i: int) -> tuple[int, requests.Response]:
        return i % len(mats), post(any_server, "/predict", {"materials": [mats[i % len(mats)]]})

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(run, range(24)))
    for k, r in results:
        assert r.status_code == 200, r.text
        assert_same_answers(r.json()["predictions"], [ref[k]])
    sizes = post(any_server, "/batch_stats").json()["batch_sizes"][len(before):]
    assert sum(sizes) == 24 and max(sizes) > 1, sizes
