"""Measured spectra: reading the beamline files, normalization, alignment, refusals, prediction.

Real data only: the 287 files of ../shared/data/experimental (manifest.csv), the veidt_experiment rows
of the shipped spectra, and a real small exported ``nn_any`` built by the integration fixtures from the
real training split (its preprocessor fitted by ``fit_preprocessor`` like the featurize stage's, so it
has the reference edges): nothing here reads git-ignored pipeline outputs, and nothing skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA

from xastopo.config import load_params
from xastopo.data.measured import MeasuredError, read_measured
from xastopo.data.validation import SpectrumError
from xastopo.inference import ArtifactError, InputBuilder, InputError, MaterialSites, Predictor
from xastopo.preprocessing.edge import half_step_energy, rising_edge_energy
from xastopo.preprocessing.measured import MeasuredSettings, normalize_measured
from xastopo.preprocessing.preprocessor import Preprocessor

REPO = Path(__file__).resolve().parents[1]
EXP = SHARED_DATA / "experimental"  # the one ../shared/data path rule (tests/conftest.py); absent: fail, not skip
SPECTRA = SHARED_DATA / "spectra" / "site_spectra.parquet"
CU = EXP / "files/xaslib/Cu/Cu_Foil_rt_2016Foils.xdi"
ZN = EXP / "files/xaslib/Zn/Chorover13BM_ZnC2O4_rt_03.xdi"

# The real exported-model fixtures live with the integration tests; load them here by path (as
# tests/test_predict_cli.py does; the model is built once per session under its base temp dir).


@pytest.fixture(autouse=True)
def _measured_data_present() -> None:
    """The measured files are part of ../shared/data: absent, the tests fail (they never skip)."""
    assert (EXP / "manifest.csv").is_file(), f"{EXP}/manifest.csv absent: the tests need ../shared/data beside the repo"


@pytest.fixture(scope="module")
def settings() -> MeasuredSettings:
    return MeasuredSettings.from_params(load_params(REPO / "params.yaml")["featurize"]["measured"])


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    return pd.read_csv(EXP / "manifest.csv")


@pytest.fixture(scope="module")
def model_dir(exported_any_model_dir: Path) -> Path:
    """The fixtures' real exported nn_any; its preprocessor has the measured settings and a reference
    edge for every element (fitted by the featurize code path)."""
    pre = Preprocessor.load(exported_any_model_dir / "preprocessor.json")
    assert pre.measured is not None and "Cu" in pre.elements
    assert all(w.edge_ev is not None for w in pre.elements.values())
    return exported_any_model_dir


def _read(row) -> object:
    try:
        return read_measured(EXP / row.file, row.file)
    except MeasuredError as exc:
        if exc.reason != "no_element":
            raise
        return read_measured(EXP / row.file, row.file, element=row.element)


def test_every_file_is_read_or_refused_and_normalized(manifest: pd.DataFrame, settings: MeasuredSettings) -> None:
    """All 287 files: read (element from the header, or the manifest for the 4 without one), and either
    normalized with pre-edge ≈ 0 and edge step ≈ 1, or refused with a reason; L edges are refused."""
    refused, checked = {}, 0
    for row in manifest.itertuples(index=False):
        spec = _read(row)
        assert spec.element == row.element, row.file
        assert np.all(np.diff(spec.energy) > 0)
        try:
            n = normalize_measured(spec.energy, spec.mu, spec.element, settings, spec.edge)
        except SpectrumError as exc:
            refused[row.file] = exc.reason
            assert str(exc)
            continue
        pre = n.norm[(n.energy >= n.pre_range[0]) & (n.energy <= n.pre_range[1])]
        post = n.flat[(n.energy >= n.norm_range[0]) & (n.energy <= n.norm_range[1])]
        assert abs(np.median(pre)) < 0.02, row.file
        assert abs(np.median(post) - 1.0) < 0.05, row.file
        assert abs(n.e0 - __import__("xraydb").xray_edge(row.element, "K").energy) < settings.e0_search_ev
        checked += 1
    l_edges = set(manifest.loc[manifest["edge"] != "K", "file"])
    assert set(refused) == l_edges and set(refused.values()) == {"not_k_edge"}
    assert checked + len(refused) == len(manifest) and checked == (manifest["edge"] == "K").sum()


def test_veidt_experiment_rows(settings: MeasuredSettings) -> None:
    """The veidt rows (min-max scaled XANES) normalize with a constant pre-edge, or are refused with
    a reason (the two Al EELS rows start above the tabulated Al K edge)."""
    df = pd.read_parquet(SPECTRA)
    df = df[df["source"] == "veidt_experiment"]
    reasons = {}
    for r in df.itertuples(index=False):
        try:
            n = normalize_measured(np.asarray(r.energy), np.asarray(r.mu), r.absorbing_element, settings, r.edge)
        except SpectrumError as exc:
            reasons[r.spectrum_id] = exc.reason
            continue
        post = n.flat[(n.energy >= n.norm_range[0]) & (n.energy <= n.norm_range[1])]
        assert abs(n.norm[0]) < 0.05 and abs(np.median(post) - 1.0) < 0.08, r.spectrum_id
    assert len(df) == 30 and set(reasons.values()) <= {"wrong_edge"}
    assert all("-Al" in k for k in reasons)


def test_reader_from_bytes_csv_kev_and_columns() -> None:
    """Bytes + filename (an upload), a CSV in keV, user-named columns, and fluorescence If/I0."""
    spec = read_measured(CU.read_bytes(), "upload.xdi")
    assert spec.source == "upload.xdi" and spec.element == "Cu" and spec.mode.startswith("transmission")
    csv = "energy_kev,i0,it\n" + "\n".join(f"{e / 1000:.6f},{a},{b}" for e, a, b in
                                            zip(spec.energy, np.exp(spec.mu) * 1e5, np.full(len(spec.mu), 1e5),
                                                strict=True))
    a = read_measured(csv.encode(), "foil.csv", element="Cu", columns={"energy": "1", "i0": "i0", "itrans": "3"})
    assert np.allclose(a.energy, spec.energy, atol=1e-3) and np.allclose(a.mu, spec.mu, atol=1e-6)
    with pytest.raises(MeasuredError, match="foil.txt: cannot tell which columns hold mu"):
        read_measured(csv.replace(",", " ").replace("energy_kev i0 it", "a b c"), "foil.txt", element="Cu")
    with pytest.raises(MeasuredError, match="header names element Cu but Zn was given"):
        read_measured(CU, "cu.xdi", element="Zn")
    fl = read_measured(EXP / "files/xaslib/S/CaS_rt_002.xdi")
    assert fl.mode.startswith("fluorescence") and fl.element == "S"
    lines = CU.read_text().splitlines()
    data = [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("#")]
    lines[data[30]], lines[data[31]] = lines[data[31]], lines[data[30]]
    with pytest.raises(MeasuredError, match="not strictly increasing") as exc:
        read_measured("\n".join(lines), "swapped.xdi")
    assert exc.value.reason == "non_monotonic_energy"


def test_refusals_name_the_reason(settings: MeasuredSettings) -> None:
    """Stops before the post-edge, wrong element for the energy range, inverted columns."""
    cu = read_measured(CU)
    n = normalize_measured(cu.energy, cu.mu, "Cu", settings)
    cut = cu.energy <= n.e0 + 12
    with pytest.raises(SpectrumError, match="stop 1[0-2].* above the edge") as exc:
        normalize_measured(cu.energy[cut], cu.mu[cut], "Cu", settings)
    assert exc.value.reason == "stops_before_post_edge"
    zn = read_measured(ZN)
    with pytest.raises(SpectrumError, match="does not contain the Cu K edge.*Zn K edge") as exc:
        normalize_measured(zn.energy, zn.mu, "Cu", settings)
    assert exc.value.reason == "wrong_edge"
    with pytest.raises(SpectrumError, match="no rising edge") as exc:
        normalize_measured(cu.energy, -cu.mu, "Cu", settings)
    assert exc.value.reason == "no_edge_step"


@pytest.mark.slow
def test_measured_cu_through_the_predictor(model_dir: Path) -> None:
    """A measured Cu foil: aligned onto the training edge, read with its spectrum, and the spectrum
    changes the answer relative to the composition alone."""
    p = Predictor(model_dir)
    cu = read_measured(CU)
    e, norm = p.preprocessor.measured_site("Cu", cu.energy, cu.mu)
    ref = p.preprocessor.elements["Cu"].edge_ev
    st = p.preprocessor.measured_settings
    near = (e > ref - st.crop_before_ev) & (e < ref + st.crop_after_ev)
    assert abs(rising_edge_energy(e[near], norm[near], st.edge_hold_ev, st.smooth_ev) - ref) < 0.3
    m = MaterialSites("cu-foil", {"Cu": [(cu.energy, cu.mu, 1.0)]}, formula="Cu", measured={"Cu": [(str(CU), None)]})
    with_spec, comp = p.predict([m, MaterialSites("cu-comp", {}, formula="Cu")])
    assert with_spec.elements_with_spectrum == ["Cu"] and 0 <= with_spec.probability_topological <= 1
    assert comp.composition_only and abs(with_spec.probability_topological - comp.probability_topological) > 1e-3
    l3 = EXP / "files/xaslib/W/W_metal_rt_01.xdi"
    w = read_measured(l3)
    bad = MaterialSites("w", {"W": [(w.energy, w.mu, 1.0)]}, formula="W", measured={"W": [(str(l3), w.edge)]})
    with pytest.raises(InputError, match="W_metal_rt_01.xdi: W L3 edge"):
        p.predict([bad])


@pytest.mark.slow
def test_old_artifact_refuses_measured_with_reason(model_dir: Path, tmp_path: Path) -> None:
    """A preprocessor.json without the measured fields still loads; measured spectra are refused
    saying the model predates measured support."""
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    d = json.loads((tmp_path / "preprocessor.json").read_text())
    d.pop("measured", None)
    for w in d["elements"].values():
        w.pop("edge_ev", None)
    pre = Preprocessor.from_dict(d)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["preprocessor_sha256"] = pre.save(tmp_path / "preprocessor.json")
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    p = Predictor(tmp_path)
    cu = read_measured(CU)
    m = MaterialSites("x", {"Cu": [(cu.energy, cu.mu, 1.0)]}, measured={"Cu": [("cu.xdi", None)]})
    with pytest.raises(InputError, match="predates measured-spectrum support"):
        p.predict([m])


@pytest.mark.slow
def test_cli_predict_measured_and_refusal(model_dir: Path, tmp_path: Path) -> None:
    """`xastopo predict *.xdi --formula`: one row for the material; an L3 file exits 2 with one line."""
    cmd = [sys.executable, "-m", "xastopo.cli", "predict", "--model-dir", str(model_dir)]
    out = tmp_path / "p.csv"
    files = [str(EXP / "files/xaslib/Cu/cu_metal_10K.xdi"), str(EXP / "files/xaslib/Cu/cu_metal_rt.xdi")]
    r = subprocess.run([*cmd, *files, "--formula", "Cu", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert len(df) == 1 and df.loc[0, "elements_with_spectrum"] == "Cu" and df.loc[0, "material_id"] == "Cu"
    r = subprocess.run([*cmd, str(EXP / "files/xaslib/W/W_metal_rt_01.xdi"), "--formula", "W", "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "W_metal_rt_01.xdi: W L3 edge" in r.stderr and len(r.stderr.strip().splitlines()) <= 2


@pytest.mark.slow
def test_plot_measured(model_dir: Path, tmp_path: Path) -> None:
    from xastopo.measured_report import plot_measured

    pre = Preprocessor.load(model_dir / "preprocessor.json")
    features = model_dir.parent / "test_arrays.npz"  # the fixture's featurized split (X, Z, mask)
    assert features.is_file()
    info = plot_measured(read_measured(CU), pre, tmp_path / "s10.png", features)
    assert (tmp_path / "s10.png").stat().st_size > 10_000 and abs(info["shift_ev"]) < pre.measured_settings.max_shift_ev


# ------------------------------------------------------------------ review fixes (no model needed)
def _cu_csv() -> tuple[str, object]:
    """The Cu foil rewritten as a three-column transmission CSV (energy keV, i0, it)."""
    spec = read_measured(CU)
    rows = zip(spec.energy, np.exp(spec.mu) * 1e5, np.full(len(spec.mu), 1e5), strict=True)
    return "energy_kev,i0,it\n" + "\n".join(f"{e / 1000:.6f},{a},{b}" for e, a, b in rows), spec


@pytest.mark.parametrize(("columns", "missing"), [
    ({"energy": "1", "i0": "2"}, "itrans or ifluor"),
    ({"energy": "1", "itrans": "3"}, "i0"),
    ({"energy": "1", "ifluor": "it"}, "i0"),
    ({"energy": "1"}, "mu"),
])
def test_user_columns_without_mu_name_the_missing_role(columns: dict, missing: str) -> None:
    """``--columns`` that give no mu and no i0 + itrans/ifluor: a MeasuredError naming the missing role
    (it was a KeyError traceback)."""
    csv, _ = _cu_csv()
    with pytest.raises(MeasuredError, match=f"foil.csv: .*missing {missing}") as exc:
        read_measured(csv, "foil.csv", element="Cu", columns=columns)
    assert exc.value.reason == "bad_columns"


def test_reader_row_minimum_comes_from_the_caller() -> None:
    """The row minimum is the caller's (the preprocessor's ``ingest.min_points``), not a constant of
    the reader; without one the reader leaves the count to the preprocessor's validation."""
    spec = read_measured(CU)
    n = len(spec.energy)
    assert len(read_measured(CU, min_points=n).energy) == n
    with pytest.raises(MeasuredError, match=f"only {n} data rows \\(at least {n + 1} needed\\)") as exc:
        read_measured(CU, min_points=n + 1)
    assert exc.value.reason == "too_few_points"
    lines = CU.read_text().splitlines()
    head = [ln for ln in lines if ln.startswith("#")]
    data = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    short = "\n".join(head + data[:5])
    assert len(read_measured(short, "short.xdi").energy) == 5
    pre = Preprocessor.from_params(load_params(REPO / "params.yaml"))
    with pytest.raises(MeasuredError, match="short.xdi: only 5 data rows"):
        read_measured(short, "short.xdi", min_points=pre.min_points)


@pytest.mark.parametrize("element", ["Es", "Fm", "No"])
def test_element_without_tabulated_k_edge_is_wrong_edge(settings: MeasuredSettings, element: str) -> None:
    """Es and heavier have no tabulated K edge (xraydb returns None): a SpectrumError, not an
    AttributeError (a 500 in the service)."""
    cu = read_measured(CU)
    with pytest.raises(SpectrumError, match=f"no tabulated K edge for {element}") as exc:
        normalize_measured(cu.energy, cu.mu, element, settings)
    assert exc.value.reason == "wrong_edge" and exc.value.field == "element"


@pytest.mark.parametrize(("last_ev", "extra"), [(1e200, 5), (1e300, 1), (1.7e308, 5)])
def test_numeric_breakdown_is_a_spectrum_error(settings: MeasuredSettings, last_ev: float, extra: int) -> None:
    """Finite but absurd energies (a corrupt last rows) broke the post-edge fit with LinAlgError or
    OverflowError; they are refused with a reason like any unusable spectrum."""
    cu = read_measured(CU)
    e = np.concatenate([cu.energy, last_ev * (np.arange(1, extra + 1) / extra)])  # finite
    m = np.concatenate([cu.mu, np.full(extra, cu.mu[-1])])
    assert np.all(np.isfinite(e)) and np.all(np.diff(e) > 0)
    with np.errstate(all="ignore"), pytest.raises(SpectrumError) as exc:
        normalize_measured(e, m, "Cu", settings)
    assert exc.value.reason == "fit_failed" and "normalization" in str(exc.value)


def _levels(e: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, float]:
    """The previous implementation's grid, smoothed mu, steepest point and half-step level."""
    g = np.arange(e[0], e[-1], 0.1)
    y = np.interp(g, e, mu)
    k = np.exp(-0.5 * (np.arange(-30, 31) * 0.1 / 1.0) ** 2)
    ys = np.convolve(np.pad(y, 30, mode="edge"), k / k.sum(), mode="valid")
    i_d = int(np.argmax(np.gradient(ys, g)))
    pre = float(ys[g <= g[0] + 2.0].mean())
    sel = (g >= g[i_d] + 15) & (g <= g[i_d] + 45)
    post = float(np.median(ys[sel])) if sel.any() else float(ys[-1])
    return g, ys, i_d, pre + 0.5 * (post - pre)


def _half_step_reference(g: np.ndarray, ys: np.ndarray, i_d: int, level: float) -> float:
    """The previous (Python-loop) ``half_step_energy`` walk, kept as the specification."""
    if ys[i_d] >= level:
        j = i_d
        while j > 0 and ys[j - 1] >= level:
            j -= 1
        return float(g[0]) if j == 0 else float(np.interp(level, [ys[j - 1], ys[j]], [g[j - 1], g[j]]))
    j = i_d
    while j < len(g) - 1 and ys[j + 1] < level:
        j += 1
    return float(g[-1]) if j == len(g) - 1 else float(np.interp(level, [ys[j], ys[j + 1]], [g[j], g[j + 1]]))


def _rising_edge_reference(e: np.ndarray, mu: np.ndarray, hold_ev: float) -> float:
    """The previous (Python-loop) ``rising_edge_energy``, kept as the specification the vectorized
    one must reproduce exactly."""
    g, ys, i_d, level = _levels(e, mu)
    above = ys >= level
    hold = max(1, int(round(hold_ev / 0.1)))
    run = np.zeros(len(g) + 1, dtype=int)
    for i in range(len(g) - 1, -1, -1):
        run[i] = run[i + 1] + 1 if above[i] else 0
    ok = np.flatnonzero((run[:-1] >= min(hold, len(g))) | ((run[:-1] > 0) & (np.arange(len(g)) + run[:-1] == len(g))))
    if len(ok) == 0:
        return _half_step_reference(g, ys, i_d, level)
    j = int(ok[0])
    if j == 0:
        return float(g[0])
    return float(np.interp(level, [ys[j - 1], ys[j]], [g[j - 1], g[j]]))


@pytest.fixture(scope="module")
def edge_spectra() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Real spectra of every shipped computed source and element (a few each), plus two measured files."""
    df = pd.read_parquet(SPECTRA, columns=["source", "absorbing_element", "energy", "mu"])
    df = df[df["source"] != "veidt_experiment"]
    out = [(r.absorbing_element, np.asarray(r.energy, float), np.asarray(r.mu, float))
           for _, g in df.groupby(["source", "absorbing_element"], sort=True) for r in g.head(4).itertuples()]
    for f in (CU, ZN):
        s = read_measured(f)
        out.append((s.element, s.energy, s.mu))
    return out


def test_edge_energies_vectorized_identical(edge_spectra: list) -> None:
    """The shared, vectorized edge finder gives bit-identical energies to the loop it replaced (the
    fitted reference edges, hence models/preprocessor.json, do not move), with and without the hold
    (also on inverted spectra, where no crossing holds and the half-step walk is the fallback)."""
    for el, e, mu in edge_spectra:
        for hold in (0.0, 4.0, 1e6):
            assert rising_edge_energy(e, mu, hold, 1.0) == _rising_edge_reference(e, mu, hold), el
        assert half_step_energy(e, mu) == _half_step_reference(*_levels(e, mu)), el
        assert rising_edge_energy(e, -mu, 4.0, 1.0) == _rising_edge_reference(e, -mu, 4.0), el  # no edge


def test_edge_smoothing_is_the_measured_setting(edge_spectra: list) -> None:
    """The edge finder's Gaussian smoothing is ``featurize.measured.smooth_ev`` (it was a hard-coded
    1 eV): changing the setting moves the fitted reference edges."""
    params = load_params(REPO / "params.yaml")
    records = [(el, [(e, mu, 1.0)]) for el, e, mu in edge_spectra[:-2]]
    edges = {}
    for smooth in (params["featurize"]["measured"]["smooth_ev"], 3.0):
        p = {**params, "featurize": {**params["featurize"],
                                     "measured": {**params["featurize"]["measured"], "smooth_ev": smooth}}}
        pre = Preprocessor.from_params(p).fit_windows(records).fit_edges(records)
        edges[smooth] = {el: w.edge_ev for el, w in pre.elements.items()}
    a, b = edges.values()
    assert a.keys() == b.keys() and any(a[el] != b[el] for el in a)


@pytest.mark.parametrize(("change", "fragment"), [
    ({"smooth_ev": "wide"}, "smooth_ev"),
    ({"smooth_ev": float("nan")}, "smooth_ev"),
    ({"min_fit_points": 0}, "min_fit_points"),
    ({"min_fit_points": 2.5}, "min_fit_points"),
    ({"edge_hold_ev": True}, "edge_hold_ev"),
    ({"pre1_ev": -10.0, "pre2_ev": -30.0}, "pre1_ev"),
    ({"bogus_ev": 1.0}, "bogus_ev"),
    ({"max_shift_ev": None}, "max_shift_ev"),
])
def test_malformed_measured_settings_refused_at_load(tmp_path: Path, change: dict, fragment: str) -> None:
    """A malformed ``measured`` block of preprocessor.json is a ValueError when the artifact is loaded
    (InputBuilder turns it into ArtifactError at start-up), not a 500 at the first measured request."""
    d = Preprocessor.from_params(load_params(REPO / "params.yaml")).to_dict()
    d["measured"] = {**d["measured"], **change}
    with pytest.raises(ValueError, match=fragment):
        Preprocessor.from_dict(d)
    (tmp_path / "preprocessor.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=f"preprocessor.json: .*{fragment}"):
        Preprocessor.load(tmp_path / "preprocessor.json")
    missing = Preprocessor.from_params(load_params(REPO / "params.yaml")).to_dict()
    del missing["measured"]["edge_hold_ev"]
    with pytest.raises(ValueError, match="missing.*edge_hold_ev"):
        Preprocessor.from_dict(missing)


# ------------------------------------------------------------------ review fixes (real model)
@pytest.mark.slow
def test_unusable_measured_spectra_are_input_errors(model_dir: Path) -> None:
    """A measured spectrum whose numbers break the normalization's arithmetic (finite but absurd
    energies: LinAlgError, OverflowError) is an InputError naming the material, field and file (it
    escaped as a 500); the other materials of the request are answered."""
    p = Predictor(model_dir)
    cu = read_measured(CU)
    wild = []
    for k, (last_ev, extra) in enumerate([(1e300, 1), (1.7e308, 5)]):
        e = np.concatenate([cu.energy, last_ev * (np.arange(1, extra + 1) / extra)])
        m = np.concatenate([cu.mu, np.full(extra, cu.mu[-1])])
        wild.append(MaterialSites(f"wild{k}", {"Cu": [(e, m, 1.0)]}, formula="Cu",
                                  measured={"Cu": [(f"wild{k}.xdi", None)]}))
    ok = MaterialSites("ok", {"Cu": [(cu.energy, cu.mu, 1.0)]}, formula="Cu", measured={"Cu": [("cu.xdi", None)]})
    with np.errstate(all="ignore"):
        inputs = p.build([*wild, ok])
    assert inputs.valid == [2] and [e.index for e in inputs.errors] == [0, 1]
    for k, err in enumerate(inputs.errors):
        assert err.field == "spectra[Cu].energy" and f"wild{k}.xdi" in err.message, err
        assert "normalization failed" in err.message


@pytest.mark.slow
def test_malformed_measured_settings_stop_start_up(model_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(model_dir, tmp_path, dirs_exist_ok=True)
    d = json.loads((tmp_path / "preprocessor.json").read_text())
    d["measured"]["smooth_ev"] = "wide"
    text = json.dumps(d, indent=2, sort_keys=True) + "\n"
    (tmp_path / "preprocessor.json").write_text(text)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["preprocessor_sha256"] = __import__("hashlib").sha256(text.encode()).hexdigest()
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="smooth_ev"):
        InputBuilder(tmp_path)
