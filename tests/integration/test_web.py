"""The web page (/ui) in a real headless Chromium, on a real BentoML server on loopback with a real small
exported ``nn_any`` (tests/integration/conftest.py) plus the class means and model card the export stage
writes (``xastopo.export.model_card``), with the bearer token turned on.

The browser is Debian's ``chromium`` driven by Playwright through its executable path (Playwright's own
browser download is not available here). A missing browser or Playwright FAILS these tests, never skips
them: the README's and .ci/run's test command installs the browser first.

Checked: the page asks for the token and works once it is typed; a real shipped spectrum (a slice of
site_spectra.parquet) with its formula gives the numbers `xastopo predict` / `xastopo explain` give for
the same file; the edge plot shows the user's spectrum, both class means and the shaded energies; a
measured XDI file gives the CLI's numbers too; bad files
and a bad formula show their error next to them, without a traceback; the batch form streams progress and
its CSV equals the CLI's; ``POST /explain`` equals `xastopo explain`; the other endpoints still answer.
Screenshots go to reports/screenshots/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from xastopo.local_server import BIN
from xastopo.local_server import LocalServer as Server

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOTS = REPO_ROOT / "reports" / "screenshots"
TOKEN = "web-token-7d1e"
CHROMIUM = os.environ.get("XASTOPO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
XDI = Path("experimental/files/xaslib/Cu/CuO_tenorite_13K_01.xdi")
PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
STEP = PARAMS["serving"]["page_batch_step"]  # the batch form's progress step


def n_top(model_dir: Path) -> int:
    """Shaded energies per edge: ``explain.top_fraction`` of the model's points (as xastopo.explain)."""
    n = json.loads((model_dir / "preprocessor.json").read_text())["n_points"]
    return max(1, round(PARAMS["explain"]["top_fraction"] * n))

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------ fixtures
def _train_arrays(pre, rec: pd.DataFrame) -> dict:
    """Padded training arrays (standardized, as the export stage reads train_any.npz) of the records."""
    from xastopo.data.validation import SpectrumError
    from xastopo.elements import atomic_number
    from xastopo.preprocessing.batching import pad_has_spectrum, pad_materials
    from xastopo.preprocessing.dataset import record_sites

    mats, has, ys = [], [], []
    for _, g in rec.groupby("mp_id", sort=True):
        rows, zs = [], []
        for r in g.itertuples(index=False):
            try:
                rows.append(pre.transform(r.absorbing_element, record_sites(r)))
                zs.append(atomic_number(r.absorbing_element))
            except SpectrumError:
                continue
        if rows:
            mats.append((np.stack(rows).astype(np.float32), np.asarray(zs, dtype=np.int64)))
            has.append(np.ones(len(rows), dtype=np.float32))
            ys.append(int(g["y"].iloc[0]))
    x, z, mask = pad_materials(mats, pre.n_points)
    return {"X": x, "Z": z, "mask": mask, "has_spectrum": pad_has_spectrum(has, z.shape[1]),
            "y": np.asarray(ys, dtype=np.int64)}


def _calibration_metrics(model_dir: Path) -> dict:
    """A metrics file like train@nn_any's: test scores and a reliability curve of the fixture model."""
    from xastopo.inference import Predictor

    d = np.load(model_dir.parent / "test_arrays.npz")
    p = Predictor(model_dir, prefer_gpu=False).predict_arrays(d["X"], d["Z"], d["mask"], d["has"])
    bins = np.minimum((p * 10).astype(int), 9)
    curve = [{"bin": int(b), "n": int((bins == b).sum()), "predicted": float(p[bins == b].mean()),
              "observed": float(d["y"][bins == b].mean())} for b in range(10) if (bins == b).any()]
    meta = json.loads((model_dir / "metadata.json").read_text())
    return {"test": meta["test_metrics"], "calibration": {"test": {"after": {"curve": curve, "ece": None}}}}


@pytest.fixture(scope="module")
def web_model_dir(tmp_path_factory, exported_any_model_dir: Path, split_records: pd.DataFrame) -> Path:
    """A copy of the fixture export with class_means.json and model_card.json, as `dvc repro export`
    writes them."""
    from xastopo.export.model_card import write_model_card
    from xastopo.preprocessing.preprocessor import Preprocessor

    root = tmp_path_factory.mktemp("web_model")
    out = root / "export"
    shutil.copytree(exported_any_model_dir, out)
    (root / "test_arrays.npz").write_bytes((exported_any_model_dir.parent / "test_arrays.npz").read_bytes())
    pre = Preprocessor.load(out / "preprocessor.json")
    np.savez(root / "train_any.npz", **_train_arrays(pre, split_records[split_records["split"] == "train"]))
    (root / "metrics.json").write_text(json.dumps(_calibration_metrics(out)))
    write_model_card(out, root / "train_any.npz", pre, root / "metrics.json")
    return out


@pytest.fixture(scope="module")
def web_server(tmp_path_factory, web_model_dir: Path):
    tmp = tmp_path_factory.mktemp("web_service")
    (tmp / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load((REPO_ROOT / "params.yaml").read_text())))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XASTOPO_")}
    env.update(BENTOML_HOME=str(tmp / "bentoml_home"), BENTOML_DO_NOT_TRACK="True", PYTHONUNBUFFERED="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", XASTOPO_MODEL_DIR=str(web_model_dir),
               XASTOPO_PARAMS=str(tmp / "params.yaml"), XASTOPO_DEVICE="cpu", XASTOPO_API_TOKEN=TOKEN)
    srv = Server("serving.service:XasTopo", env, REPO_ROOT, tmp / "serve.log")
    try:
        srv.wait_ready(180)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright; FAILS (not skips) when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: apt-get install -y chromium "
                    "(or set XASTOPO_CHROMIUM to its path)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, web_server: Server):
    ctx = browser.new_context(viewport={"width": 1200, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"{web_server.url}/ui/")
    pg.fill("#token", TOKEN)
    pg.dispatch_event("#token", "change")
    pg.wait_for_selector("#card-name")
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def shipped_slice(tmp_path_factory, all_spectra: pd.DataFrame, cu_oxide: dict) -> dict:
    """A real slice of site_spectra.parquet: every raw FEFF Cu site of a test-split Cu oxide, written as
    the parquet the CLI reads (without and with a formula column)."""
    rows = all_spectra[(all_spectra["mp_id"] == cu_oxide["material_id"]) & (all_spectra["absorbing_element"] == "Cu")]
    source = "omnixas_feff_raw" if (rows["source"] == "omnixas_feff_raw").any() else rows["source"].iloc[0]
    rows = rows[rows["source"] == source][["mp_id", "absorbing_element", "energy", "mu"]].reset_index(drop=True)
    tmp = tmp_path_factory.mktemp("slice")
    plain = tmp / f"{cu_oxide['material_id']}_Cu.parquet"
    rows.to_parquet(plain)
    with_formula = tmp / "with_formula.parquet"
    rows.assign(formula=cu_oxide["formula"]).to_parquet(with_formula)
    return {"plain": plain, "with_formula": with_formula, "formula": cu_oxide["formula"],
            "material_id": cu_oxide["material_id"], "n_sites": len(rows)}


def cli(*args: str, server: Server) -> subprocess.CompletedProcess:
    env = {**os.environ, "XASTOPO_PARAMS": str(server.log.parent / "params.yaml")}
    env.pop("XASTOPO_MODEL_DIR", None)
    return subprocess.run([str(BIN / "xastopo"), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def analyze(page, files: list[Path], formula: str = "") -> None:
    page.fill("#formula", formula)
    page.set_input_files("#files", [str(f) for f in files])
    page.click("#analyze")
    page.wait_for_function("!document.querySelector('#analyze').disabled")


# ------------------------------------------------------------------------------------ tests
def test_page_asks_for_the_token_and_other_endpoints_are_unchanged(browser, web_server: Server,
                                                                   web_model_dir: Path) -> None:
    for path in ("/ui/", "/ui/static/app.js", "/ui/static/style.css"):  # the shell: no data, public
        assert requests.get(web_server.url + path, timeout=30).status_code == 200, path
    for method, path in (("GET", "/ui/api/card"), ("POST", "/ui/api/analyze"), ("POST", "/ui/api/batch"),
                         ("POST", "/explain"), ("POST", "/predict"), ("POST", "/metadata")):
        assert requests.request(method, web_server.url + path, timeout=30).status_code == 401, path
    meta = requests.post(web_server.url + "/metadata", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert meta.status_code == 200 and meta.json()["model_name"] == "xastopo-any-test"

    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.goto(f"{web_server.url}/ui")  # redirected to /ui/
    pg.wait_for_function("document.querySelector('#card-body').textContent.includes('access token')")
    assert "needs an access token" in pg.inner_text("#auth-status")
    pg.fill("#token", "wrong")
    pg.dispatch_event("#token", "change")
    pg.wait_for_function("document.querySelector('#auth-status').textContent.includes('needs')")
    pg.fill("#token", TOKEN)
    pg.dispatch_event("#token", "change")
    pg.wait_for_selector("#card-name")
    card = json.loads((web_model_dir / "model_card.json").read_text())
    meta_file = json.loads((web_model_dir / "metadata.json").read_text())
    assert pg.inner_text("#card-name") == "xastopo-any-test" and pg.inner_text("#card-version") == "3"
    assert f"{card['training']['materials']:,}" in pg.inner_text("#card-training")
    assert pg.inner_text("#card-macro-f1") == f"{meta_file['test_metrics']['macro_f1']:.3f}"
    assert pg.locator("#calibration circle").count() == len(card["calibration_test"]["curve"])
    assert pg.locator("#card-limits li").count() == len(card["limits"])
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.locator("#card").screenshot(path=str(SHOTS / "web_model_card.png"))
    ctx.close()


def test_shipped_spectrum_gives_the_cli_numbers(page, web_server: Server, web_model_dir: Path,
                                                shipped_slice: dict, tmp_path: Path) -> None:
    out_csv, out_json = tmp_path / "p.csv", tmp_path / "e.json"
    for args in (("predict", str(shipped_slice["with_formula"]), "--out", str(out_csv)),
                 ("explain", str(shipped_slice["with_formula"]), "--out", str(out_json))):
        r = cli(*args, "--model-dir", str(web_model_dir), server=web_server)
        assert r.returncode == 0, r.stderr
    pred = pd.read_csv(out_csv, keep_default_na=False).iloc[0]
    ex = json.loads(out_json.read_text())["explanations"][0]

    analyze(page, [shipped_slice["plain"]], shipped_slice["formula"])
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#probability") == f"{pred.probability_topological:.4f}"
    assert abs(float(page.get_attribute("#probability", "data-value")) - pred.probability_topological) <= 1e-6
    assert page.inner_text("#uncertainty") == f"{pred.uncertainty:.4f}"
    assert page.inner_text("#label") == pred.label
    assert page.inner_text("#with-spectrum") == pred.elements_with_spectrum.replace(";", ", ")
    assert page.inner_text("#by-type") == (pred.elements_by_type.replace(";", ", ") or "none")
    assert page.inner_text("#file-list li .file-elements").strip() == "— Cu (computed)"
    note = page.inner_text("#method-note")
    assert f"P(topological) is {ex['probability_at_baseline']:.4f}" in note
    assert f"sum to {ex['attribution_total']:.4f}" in note
    cu = next(e for e in ex["edges"] if e["element"] == "Cu")
    effect = page.inner_text(".edge[data-element=Cu] .spectrum-effect")
    assert float(effect) == pytest.approx(cu["spectrum_effect"], abs=1e-4)
    svg = page.locator("svg.edge-plot[data-element=Cu]")
    assert svg.locator("rect.shade").count() == len(cu["top_energies"]) == n_top(web_model_dir)
    assert svg.locator("polyline.user").count() == 1
    assert svg.locator("polyline.mean-topological").count() == 1 and svg.locator("polyline.mean-trivial").count() == 1
    assert len(svg.locator("polyline.user").get_attribute("points").split()) == len(cu["energy"])
    shot(page, "web_prediction.png")


def test_measured_xdi_file(page, web_server: Server, web_model_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """A measured XDI file from ../shared/data/experimental, read by the CLI's measured reader: the
    numbers equal the CLI's."""
    xdi = shared_data / XDI
    assert xdi.is_file(), xdi
    analyze(page, [xdi], "CuO")
    page.wait_for_selector("#result:not([hidden])")
    out_csv, out_json = tmp_path / "m.csv", tmp_path / "m.json"
    for args in (("predict", str(xdi), "--formula", "CuO", "--out", str(out_csv)),
                 ("explain", str(xdi), "--formula", "CuO", "--out", str(out_json))):
        r = cli(*args, "--model-dir", str(web_model_dir), server=web_server)
        assert r.returncode == 0, r.stderr
    pred = pd.read_csv(out_csv, keep_default_na=False).iloc[0]
    ex = json.loads(out_json.read_text())["explanations"][0]
    assert page.inner_text("#probability") == f"{pred.probability_topological:.4f}"
    assert page.inner_text("#label") == pred.label
    assert page.inner_text("#with-spectrum") == pred.elements_with_spectrum.replace(";", ", ") == "Cu"
    assert page.inner_text("#by-type") == "O"
    assert f"P(topological) is {ex['probability_at_baseline']:.4f}" in page.inner_text("#method-note")
    assert "Cu (measured)" in page.inner_text("#file-list li .file-elements")
    assert page.locator("svg.edge-plot[data-element=Cu] rect.shade").count() == n_top(web_model_dir)
    shot(page, "web_measured_xdi.png")


def test_bad_files_and_formula_show_their_error_next_to_them(page, shipped_slice: dict, tmp_path: Path,
                                                             all_spectra: pd.DataFrame) -> None:
    garbage = tmp_path / "broken.parquet"
    garbage.write_bytes(b"this is not parquet")
    short = tmp_path / "short_window.parquet"
    rows = pd.read_parquet(shipped_slice["plain"])
    rows["energy"] = rows["energy"].map(lambda e: np.asarray(e)[: len(e) // 3])
    rows["mu"] = rows["mu"].map(lambda m: np.asarray(m)[: len(m) // 3])
    rows.to_parquet(short)
    other = tmp_path / "other.txt"
    other.write_text("energy mu\n1 2\n")

    analyze(page, [garbage, shipped_slice["plain"]], shipped_slice["formula"])
    err = page.inner_text("#file-list li[data-name='broken.parquet'] .file-error")
    assert "not a readable parquet file" in err
    assert page.inner_text(f"#file-list li[data-name='{shipped_slice['plain'].name}'] .file-error") == ""
    assert page.is_hidden("#result")

    analyze(page, [short], shipped_slice["formula"])
    err = page.inner_text("#file-list li[data-name='short_window.parquet'] .file-error")
    assert "Cu:" in err and "eV is needed" in err, err

    analyze(page, [shipped_slice["plain"]], "Cu2Xx")
    assert "unknown element symbol 'Xx'" in page.inner_text("#formula-error")

    analyze(page, [shipped_slice["plain"]], "Bi2Se3")
    assert "'Cu' is not in the formula 'Bi2Se3'" in page.inner_text(
        f"#file-list li[data-name='{shipped_slice['plain'].name}'] .file-error")
    text = page.inner_text("body")
    assert "Traceback" not in text and "Exception" not in text
    analyze(page, [garbage, short], shipped_slice["formula"])
    shot(page, "web_bad_file.png")


def test_batch_form_streams_progress_and_matches_the_cli(page, web_server: Server, web_model_dir: Path,
                                                         split_records: pd.DataFrame, tmp_path: Path) -> None:
    test = split_records[split_records["split"] == "test"].sort_values("mp_id")
    rows = []
    for r in test.itertuples(index=False):
        for e, m, w in zip(r.energy, r.mu, r.weights, strict=True):
            rows.append({"mp_id": r.mp_id, "absorbing_element": r.absorbing_element, "weight": float(w),
                         "energy": np.asarray(e, float), "mu": np.asarray(m, float)})
    df = pd.DataFrame(rows)
    assert df["mp_id"].nunique() > STEP  # more than one chunk: several progress events
    bad_id = df["mp_id"].iloc[0]
    df.loc[df["mp_id"] == bad_id, "energy"] = df.loc[df["mp_id"] == bad_id, "energy"].map(lambda e: e[:10])
    df.loc[df["mp_id"] == bad_id, "mu"] = df.loc[df["mp_id"] == bad_id, "mu"].map(lambda m: m[:10])
    path = tmp_path / "many.parquet"
    df.to_parquet(path)
    ref = tmp_path / "cli.csv"
    r = cli("predict", str(path), "--out", str(ref), "--skip-invalid", "--model-dir", str(web_model_dir),
            server=web_server)
    assert r.returncode == 0, r.stderr

    page.set_input_files("#batch-file", str(path))
    page.evaluate("window.__progress = []; new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach("
                  "(n) => window.__progress.push(n.textContent)))).observe("
                  "document.querySelector('#batch-status'), {childList: true, subtree: true})")
    with page.expect_download() as dl:
        page.click("#batch-run")
        page.wait_for_selector("#batch-download:not([hidden])")
        page.click("#batch-download")
    got = tmp_path / "page.csv"
    dl.value.save_as(str(got))
    progress = page.evaluate("window.__progress")
    assert any(s.startswith(f"predicted {STEP} / ") for s in progress), progress
    assert dl.value.suggested_filename == "many_predictions.csv"
    a, b = pd.read_csv(got, keep_default_na=False), pd.read_csv(ref, keep_default_na=False)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == df["mp_id"].nunique()
    assert a["material_id"].tolist() == b["material_id"].tolist()
    good = b["label"] != ""
    assert (~good).sum() == 1 and b.loc[~good, "material_id"].item() == bad_id
    np.testing.assert_allclose(a.loc[good, "probability_topological"].astype(float),
                               b.loc[good, "probability_topological"].astype(float), rtol=0, atol=1e-6)
    for col in ("label", "elements_used", "elements_with_spectrum", "elements_by_type", "warnings"):
        assert a[col].tolist() == b[col].tolist(), col
    assert "1 invalid" in page.inner_text("#batch-download")
    shot(page, "web_batch.png")

    page.set_input_files("#batch-file", str(tmp_path / "page.csv"))  # predictions CSV: not material_id,formula
    page.click("#batch-run")
    page.wait_for_function("document.querySelector('#batch-error').textContent.length > 0")
    assert "missing column(s) formula" in page.inner_text("#batch-error")


def test_explain_endpoint_equals_the_cli(web_server: Server, web_model_dir: Path, cu_oxide: dict,
                                         tmp_path: Path) -> None:
    body = {"materials": [{"material_id": "formula-only", "formula": cu_oxide["formula"]},
                          {"material_id": "elements-only", "elements": ["Bi", "Se"]},
                          {"material_id": cu_oxide["material_id"], "formula": cu_oxide["formula"],
                           "spectra": [cu_oxide["cu"]]},
                          {"material_id": "spectrum-only", "spectra": [cu_oxide["cu"]]}]}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = requests.post(f"{web_server.url}/explain", json=body, headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    served = r.json()["explanations"]
    req = tmp_path / "req.json"
    req.write_text(json.dumps(body))
    out = tmp_path / "e.json"
    c = cli("explain", str(req), "--out", str(out), "--model-dir", str(web_model_dir), server=web_server)
    assert c.returncode == 0, c.stderr
    ref = json.loads(out.read_text())["explanations"]
    assert len(served) == len(ref) == 4
    for s, e in zip(served, ref, strict=True):
        assert s["prediction"]["material_id"] == e["prediction"]["material_id"]
        assert s["prediction"]["probability_topological"] == pytest.approx(e["prediction"]["probability_topological"],
                                                                           abs=1e-6)
        assert s["probability_at_baseline"] == pytest.approx(e["probability_at_baseline"], abs=1e-6)
        assert [x["element"] for x in s["edges"]] == [x["element"] for x in e["edges"]]
        for se, ee in zip(s["edges"], e["edges"], strict=True):
            np.testing.assert_allclose(se["attribution"], ee["attribution"], rtol=0, atol=1e-6)
            assert se["top_energies"] == ee["top_energies"]
    composition_only = served[0]
    assert all(not x["with_spectrum"] for x in composition_only["edges"])
    cu = next(x for x in served[2]["edges"] if x["element"] == "Cu")
    n_points = json.loads((web_model_dir / "preprocessor.json").read_text())["n_points"]
    assert cu["with_spectrum"] and len(cu["attribution"]) == len(cu["energy"]) == n_points
    # the /predict answer for the same request is the explanation's prediction
    p = requests.post(f"{web_server.url}/predict", json=body, headers=auth, timeout=120).json()["predictions"]
    for a, s in zip(p, served, strict=True):
        assert a["probability_topological"] == pytest.approx(s["prediction"]["probability_topological"], abs=1e-6)
    bad = {"materials": [{"material_id": "x", "formula": "Xx2"}]}
    r = requests.post(f"{web_server.url}/explain", json=bad, headers=auth, timeout=60)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "materials[0].formula"
    many = {"materials": [body["materials"][0]] * (PARAMS["explain"]["max_materials"] + 1)}
    r = requests.post(f"{web_server.url}/explain", json=many, headers=auth, timeout=60)
    assert r.status_code == 422 and "explain.max_materials" in r.json()["error"]
