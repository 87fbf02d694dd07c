"""Resampling, edge-step normalization, windows, train-only standardization, persistence, weighting."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xastopo.config import load_params
from xastopo.data.split import split_materials
from xastopo.data.validation import SpectrumError
from xastopo.preprocessing import ElementWindow, Preprocessor, normalize_on_grid, resample_linear
from xastopo.preprocessing.dataset import featurize_split, fit_preprocessor, record_sites

# A window both Cu sources cover: processed rows span 8983.173 + 0..35 eV, raw ones start at most
# at 8988.73 eV (PROVENANCE.md) and the default constant extrapolation tolerates 5 eV.
CU_WINDOW = ElementWindow(lo=8985.5, hi=9017.5)
PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def params_pre(**featurize) -> Preprocessor:
    """A Preprocessor as `featurize` makes it (settings from params.yaml), some settings overridden."""
    return Preprocessor.from_params({**PARAMS, "featurize": {**PARAMS["featurize"], **featurize}})


def cu_pre(window: ElementWindow = CU_WINDOW, **featurize) -> Preprocessor:
    pre = params_pre(**featurize)
    pre.elements = {"Cu": ElementWindow(window.lo, window.hi)}
    return pre


# ------------------------------------------------------------------ resampling


def test_grid_is_n_points_evenly_spaced_over_window():
    pre = cu_pre(n_points=200)
    g = pre.grid("Cu")
    assert len(g) == 200 and g[0] == CU_WINDOW.lo and g[-1] == CU_WINDOW.hi
    np.testing.assert_allclose(np.diff(g), (CU_WINDOW.hi - CU_WINDOW.lo) / 199, rtol=1e-9)


def test_linear_function_resampled_exactly():
    rng = np.random.default_rng(0)
    e = np.sort(rng.uniform(8980.0, 9030.0, 173))  # non-uniform grid like FEFF's
    mu = 0.37 * (e - 8980.0) + 1.5
    grid = cu_pre().grid("Cu")
    r = resample_linear(e, mu, grid)
    np.testing.assert_allclose(r, 0.37 * (grid - 8980.0) + 1.5, rtol=1e-12, atol=1e-9)


def test_smooth_arctan_within_interpolation_error_bound():
    # linear interpolation error <= h^2/8 * max|f''|; for f = arctan(x/w), max|f''| = 3*sqrt(3)/8/w^2
    w, h = 2.0, 0.05
    e = np.arange(8970.0, 9040.0 + h, h)
    f = lambda x: np.arctan((x - 8993.0) / w)  # noqa: E731
    grid = cu_pre().grid("Cu")
    r = resample_linear(e, f(e), grid)
    bound = h**2 / 8 * 3 * np.sqrt(3) / 8 / w**2
    assert np.abs(r - f(grid)).max() <= bound * 1.0001


def test_resample_holds_end_values_within_tolerance_and_ignores_copied_runs():
    grid = np.linspace(100.0, 120.0, 41)
    e = np.linspace(102.0, 118.0, 33)
    mu = e - 100.0
    r = resample_linear(e, mu, grid, max_extrapolation_ev=2.0)
    assert np.all(r[grid <= 102.0] == 2.0) and np.all(r[grid >= 118.0] == 18.0)
    # a copied (flat) start does not count as coverage: data really start at 104 → 4 eV missing
    mu2 = np.where(e < 104.0, mu[e >= 104.0][0], mu)
    with pytest.raises(SpectrumError) as ei:
        resample_linear(e, mu2, grid, max_extrapolation_ev=2.0)
    assert ei.value.reason == "window_not_covered"


def test_window_not_covered_names_needed_range(all_spectra):
    """A processed Cu row (35 eV) cannot fill a 56 eV window; the error says what is needed."""
    row = all_spectra[(all_spectra["source"] == "omnixas_feff_processed")
                      & (all_spectra["absorbing_element"] == "Cu")].iloc[0]
    pre = cu_pre(ElementWindow(8985.5, 8985.5 + 56.0))
    with pytest.raises(SpectrumError) as ei:
        pre.site_spectrum("Cu", row["energy"], row["mu"])
    assert ei.value.reason == "window_not_covered" and ei.value.field == "energy"
    msg = str(ei.value)
    assert "8985.50-9041.50 eV is needed" in msg
    assert "spectrum covers" in msg and "5 eV" in msg


# --------------------------------------------------------------- normalization


def test_normalize_on_grid_pre_zero_post_one_and_scale_invariant():
    grid = np.linspace(0.0, 40.0, 161)
    mu = 0.2 + 1.7 * (np.arctan(grid - 10.0) / np.pi + 0.5) + 0.3 * np.exp(-((grid - 14) ** 2))
    n = normalize_on_grid(mu, grid, post_edge_ev=5.0)
    assert n[0] == 0.0
    assert n[grid >= 35.0].mean() == pytest.approx(1.0, abs=1e-12)
    for c in (1e-3, 0.85, 1000.0):
        np.testing.assert_allclose(normalize_on_grid(c * mu, grid, 5.0), n, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(normalize_on_grid(mu + 5.0, grid, 5.0), n, rtol=1e-10, atol=1e-12)


def test_normalize_rejects_spectrum_without_edge():
    grid = np.linspace(0.0, 40.0, 161)
    for mu in (np.ones_like(grid), 2.0 - grid / 40.0):
        with pytest.raises(SpectrumError) as ei:
            normalize_on_grid(mu, grid, 5.0)
        assert ei.value.reason == "no_edge_step"


def test_processed_scale_is_feff_mu_times_site_constant(all_spectra):
    """PROVENANCE: processed y = 1000 * mu_FEFF * xsedge50 / a0^2, so normalization must cancel a
    per-site constant. Check that constant on the real rows (it is why scale invariance matters)."""
    a0 = 0.529177210903  # Bohr radius, Angstrom
    pairs = _cu_pairs(all_spectra).head(5)
    for r in pairs.itertuples():
        e_p, y = np.asarray(r.energy_p), np.asarray(r.mu_p, float)
        # compare where the processed grid lies between raw points kept (e_start < E < e_start + 35)
        e_r = np.asarray(r.energy_r)
        kept = e_r[e_r < e_p[0] + 35.0]
        lo = np.searchsorted(e_p, kept[0]) + 1
        hi = np.searchsorted(e_p, kept[-1])
        mu_r = np.interp(e_p[lo:hi], r.energy_r, np.asarray(r.mu_r, float))
        expect = 1000 * mu_r * r.feff_xsedge50_r / a0**2
        np.testing.assert_allclose(y[lo:hi], expect, rtol=1e-5)


# --------------------------------------------- raw vs processed Cu (the key test)


def _cu_pairs(all_spectra: pd.DataFrame) -> pd.DataFrame:
    raw = all_spectra[all_spectra["source"] == "omnixas_feff_raw"]
    proc = all_spectra[(all_spectra["source"] == "omnixas_feff_processed")
                       & (all_spectra["absorbing_element"] == "Cu")]
    return raw.merge(proc, on=["mp_id", "site"], suffixes=("_r", "_p")).sort_values("spectrum_id_r")


def test_raw_and_processed_cu_give_same_normalized_spectrum(all_spectra):
    pairs = _cu_pairs(all_spectra)
    assert len(pairs) >= 800  # PROVENANCE: all processed Cu rows were rebuilt from raw runs
    pre = cu_pre(n_points=200)
    diffs = []
    for r in pairs.itertuples():
        a = pre.site_spectrum("Cu", r.energy_r, r.mu_r)
        b = pre.site_spectrum("Cu", r.energy_p, r.mu_p)
        assert a[0] == 0.0 and b[0] == 0.0
        diffs.append(np.abs(a - b).max())
    diffs = np.array(diffs)
    # re-interpolating the 0.25 eV processed grid cannot reproduce raw FEFF points exactly at sharp
    # white lines; a few hundredths of the edge step is the size of that effect
    assert diffs[:10].max() < 0.02, diffs[:10]
    assert diffs.max() < 0.03, diffs.max()
    assert np.median(diffs) < 0.01
    # the same spectra NOT normalized differ by the per-site scale (~0.85 in OmniXAS units)
    r = pairs.iloc[0]
    g = pre.grid("Cu")
    raw_r = resample_linear(np.asarray(r["energy_r"]), np.asarray(r["mu_r"], float), g, 5.0)
    proc_r = resample_linear(np.asarray(r["energy_p"]), np.asarray(r["mu_p"], float), g, 5.0)
    assert np.abs(raw_r - proc_r).max() > 0.05


def test_tolerance_discriminates_different_sites(all_spectra):
    """Control: the raw spectrum of one site against the processed one of another differs a lot."""
    pairs = _cu_pairs(all_spectra).head(10)
    pre = cu_pre()
    a = [pre.site_spectrum("Cu", r.energy_r, r.mu_r) for r in pairs.itertuples()]
    b = [pre.site_spectrum("Cu", r.energy_p, r.mu_p) for r in pairs.itertuples()]
    shifted = [np.abs(a[i] - b[(i + 1) % len(b)]).max() for i in range(len(a))]
    assert min(shifted) > 0.03


# ------------------------------------------------------------ standardization


@pytest.fixture(scope="module")
def split_records(labeled_records):
    split = split_materials(labeled_records, (0.7, 0.15, 0.15), seed=14)
    return labeled_records.merge(split, on="mp_id")


def _by_hand(pre: Preprocessor, records: pd.DataFrame, element: str) -> tuple[float, float, int]:
    means, stds = [], []
    for r in records[records["absorbing_element"] == element].itertuples(index=False):
        x = pre.element_spectrum(element, record_sites(r))
        means.append(np.mean(x))
        stds.append(np.sqrt(np.mean((x - np.mean(x)) ** 2)))
    return float(np.mean(means)), float(np.mean(stds)), len(means)


def test_standardization_fitted_on_train_only(split_records):
    train = split_records[split_records["split"] == "train"]
    val = split_records[split_records["split"] == "val"]
    pre, rejects = fit_preprocessor(cu_pre(), train)
    assert sum(rejects.values()) == 0
    assert set(pre.elements) == set(train["absorbing_element"])
    w = pre.elements["Cu"]
    mean, std, n = _by_hand(pre, train, "Cu")
    assert w.n_train == n == int((train["absorbing_element"] == "Cu").sum())
    assert w.mean == pytest.approx(mean, rel=1e-12) and w.std == pytest.approx(std, rel=1e-12)
    before = json.dumps(pre.to_dict(), sort_keys=True)
    arrays, _ = featurize_split(pre, val, desc="val")  # transforming val never refits
    assert json.dumps(pre.to_dict(), sort_keys=True) == before
    assert len(arrays["ids"]) > 0
    # and the statistics do depend on the data: including val would have given other numbers
    mean_tv, std_tv, _ = _by_hand(pre, pd.concat([train, val]), "Cu")
    assert abs(mean_tv - w.mean) > 1e-9 and abs(std_tv - w.std) > 1e-9
    # standardized train Cu spectra: their per-spectrum means average to 0
    x = [pre.standardize("Cu", pre.element_spectrum("Cu", record_sites(r)))
         for r in train[train["absorbing_element"] == "Cu"].itertuples(index=False)]
    assert np.mean([xi.mean() for xi in x]) == pytest.approx(0.0, abs=1e-9)
    assert np.mean([xi.std() for xi in x]) == pytest.approx(1.0, rel=1e-9)


def test_windows_fitted_from_train_coverage(split_records):
    train = split_records[split_records["split"] == "train"]
    pre = params_pre(window_ev=56.0, coverage_quantile=0.9).fit_windows(
        (r.absorbing_element, record_sites(r)) for r in train.itertuples(index=False))
    for w in pre.elements.values():
        assert 0 < w.hi - w.lo <= 56.0 + 1e-9
    # Ti has only processed rows (35 eV): its window is cut below 35 eV, Cu's raw runs span 141 eV
    assert pre.elements["Ti"].hi - pre.elements["Ti"].lo < 35.0
    assert pre.elements["Cu"].hi - pre.elements["Cu"].lo == pytest.approx(56.0, abs=1e-3)


def test_fit_returns_self_and_transform_matches_the_steps(split_records):
    train = split_records[split_records["split"] == "train"]
    items = [(r.absorbing_element, record_sites(r)) for r in train.itertuples(index=False)]
    pre = params_pre()
    assert pre.fit(items) is pre and sum(pre.rejected_.values()) == 0
    el, sites = items[0]
    np.testing.assert_array_equal(pre.transform(el, sites), pre.standardize(el, pre.element_spectrum(el, sites)))
    x, z = pre.material_inputs({el: sites})
    assert x.shape == (1, pre.n_points) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], pre.transform(el, sites).astype(np.float32))
    # the fit report is not a setting: it is not saved
    assert "rejected_" not in pre.to_dict()


def test_settings_come_from_params_or_the_artifact_only():
    """No setting has a default in code that could silently differ from params.yaml."""
    fields = {f.name: f for f in dataclasses.fields(Preprocessor)}
    settings = ("n_points", "window_ev", "coverage_quantile", "max_extrapolation_ev", "post_edge_ev",
                "flat_run_tol", "min_points")
    for name in settings:
        assert fields[name].default is dataclasses.MISSING, name
    with pytest.raises(TypeError):
        Preprocessor()  # type: ignore[call-arg]
    pre = Preprocessor.from_params(PARAMS)
    assert pre.n_points == PARAMS["featurize"]["n_points"]
    assert pre.min_points == PARAMS["ingest"]["min_points"]


def test_load_features_checks_width_against_preprocessor(tmp_path):
    from xastopo.preprocessing.dataset import load_features, save_arrays

    pre = cu_pre(n_points=50)
    x = np.zeros((2, 1, 40), np.float32)
    save_arrays({"X": x, "Z": np.ones((2, 1), np.int64), "mask": np.ones((2, 1), np.float32)}, tmp_path / "a.npz")
    with pytest.raises(ValueError, match="40 points but the fitted preprocessor has n_points=50"):
        load_features(tmp_path / "a.npz", pre)
    assert load_features(tmp_path / "a.npz", cu_pre(n_points=40))["X"].shape == (2, 1, 40)


def test_single_training_spectrum_std_is_one():
    pre = cu_pre()
    x = np.linspace(0.0, 1.2, pre.n_points) ** 2
    pre.fit_standardization([("Cu", x)])
    assert pre.elements["Cu"].std == 1.0
    assert pre.elements["Cu"].mean == pytest.approx(x.mean())
    assert pre.elements["Cu"].n_train == 1


# ---------------------------------------------------------------- persistence


def test_save_load_round_trip_and_checksum(tmp_path, split_records):
    train = split_records[split_records["split"] == "train"]
    pre, _ = fit_preprocessor(params_pre(), train)
    path = tmp_path / "sub" / "preprocessor.json"
    sha = pre.save(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    back = Preprocessor.load(path, sha256=sha)
    assert back == pre
    assert back.to_json() == pre.to_json()
    r = train.iloc[0]
    el, sites = r["absorbing_element"], record_sites(r)
    np.testing.assert_array_equal(back.standardize(el, back.element_spectrum(el, sites)),
                                  pre.standardize(el, pre.element_spectrum(el, sites)))
    with pytest.raises(ValueError, match="checksum mismatch"):
        Preprocessor.load(path, sha256="0" * 64)
    path.write_text(path.read_text().replace('"n_points": 200', '"n_points": 201'))
    with pytest.raises(ValueError, match="checksum mismatch"):
        Preprocessor.load(path, sha256=sha)
    with pytest.raises(FileNotFoundError):
        Preprocessor.load(tmp_path / "missing.json")


def test_load_rejects_other_format_version(tmp_path):
    d = cu_pre().to_dict()
    d["version"] = 999
    p = tmp_path / "p.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="version"):
        Preprocessor.load(p)


# ------------------------------------------------------------------ weighting


def test_element_spectrum_multiplicity_weighting(all_spectra):
    raw = all_spectra[all_spectra["source"] == "omnixas_feff_raw"].sort_values("spectrum_id")
    a_row, b_row = raw.iloc[0], raw.iloc[1]
    pre = cu_pre()
    a = pre.site_spectrum("Cu", a_row["energy"], a_row["mu"])
    b = pre.site_spectrum("Cu", b_row["energy"], b_row["mu"])
    assert np.abs(a - b).max() > 0.01  # two different spectra, or the test proves nothing
    ea, ma, eb, mb = a_row["energy"], a_row["mu"], b_row["energy"], b_row["mu"]
    got = pre.element_spectrum("Cu", [(ea, ma, 3.0), (eb, mb, 1.0)])
    np.testing.assert_allclose(got, 0.75 * a + 0.25 * b, rtol=1e-12, atol=1e-12)
    # weights only matter relatively; one site alone is that site
    got2 = pre.element_spectrum("Cu", [(ea, ma, 6.0), (eb, mb, 2.0)])
    np.testing.assert_allclose(got2, got, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(pre.element_spectrum("Cu", [(a_row["energy"], a_row["mu"], 4.0)]), a)
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(SpectrumError) as ei:
            pre.element_spectrum("Cu", [(a_row["energy"], a_row["mu"], bad)])
        assert ei.value.reason == "bad_weight"
    with pytest.raises(SpectrumError) as ei:
        pre.element_spectrum("Cu", [])
    assert ei.value.reason == "no_spectra"


def test_unknown_and_unsupported_elements():
    pre = cu_pre()
    with pytest.raises(SpectrumError) as ei:
        pre.grid("Xx")
    assert ei.value.reason == "unknown_element"
    with pytest.raises(SpectrumError) as ei:
        pre.grid("Fe")
    assert ei.value.reason == "element_not_supported" and "Cu" in str(ei.value)


def test_transform_many_is_transform_bit_for_bit_whatever_the_batch(split_records):
    """The batched path (one vectorized normalization per element for many materials, the service's
    ``InputBuilder.build``) gives exactly the numbers of one material at a time, whatever a material's
    run-mates, and each failing material its own error (first failing site, in site order), on real
    multi-site records and real spectra made bad."""
    train = split_records[split_records["split"] == "train"]
    pre = params_pre().fit([(r.absorbing_element, record_sites(r)) for r in train.itertuples(index=False)])
    cu = [record_sites(r) for r in split_records[split_records["absorbing_element"] == "Cu"].itertuples(index=False)]
    assert any(len(s) > 1 for s in cu)  # multi-site records are in the batch, or the weighting is untested
    e0, m0, w0 = cu[0][0]
    flat = [(e0, np.full(len(m0), 2.0), w0)]                       # no rising edge (normalization fails)
    short = [(e0[:5], m0[:5], w0)]                                 # validation fails
    late = [cu[1][0], (e0, np.full(len(m0), 2.0), w0)]             # the second site fails
    weightless = [(e0, m0, 0.0)]
    batch = [*cu[:5], flat, cu[5], short, late, weightless, *cu[6:]]
    rows, errors = pre.transform_many("Cu", batch)
    for j, sites in enumerate(batch):
        try:
            alone = pre.transform("Cu", sites)
        except SpectrumError as exc:
            assert errors[j] is not None and (errors[j].reason, str(errors[j])) == (exc.reason, str(exc)), j
            continue
        assert errors[j] is None, j
        np.testing.assert_array_equal(rows[j], alone)
        np.testing.assert_array_equal(pre.transform_many("Cu", [sites])[0][0], alone)  # alone in a batch
    assert [e.reason if e else None for e in errors[5:10]] == [
        "no_edge_step", None, "too_few_points", "no_edge_step", "bad_weight"]


def test_batched_resampling_is_np_interp_on_each_real_range(split_records):
    """Every real shipped spectrum of every element, resampled in blocks (``Preprocessor._resampled_many``:
    validated per length block, real ranges per row), gives bit for bit ``np.interp`` of the spectrum's real
    range (the original single-spectrum formula, written out here) or the same coverage error."""
    train = split_records[split_records["split"] == "train"]
    pre = params_pre().fit([(r.absorbing_element, record_sites(r)) for r in train.itertuples(index=False)])
    checked = 0
    for el, g in split_records.groupby("absorbing_element"):
        if el not in pre.elements:
            continue
        spectra = [(e, m) for r in g.itertuples(index=False) for e, m, _ in record_sites(r)]
        rows, errors = pre._resampled_many(el, spectra)  # noqa: SLF001 - the block path itself
        grid, most = pre.grid(el), pre.max_extrapolation_ev + 1e-9
        for k, (e, m) in enumerate(spectra):
            e, m = np.asarray(e, float), np.asarray(m, float)
            moving = np.flatnonzero(np.abs(m[1:] - m[:-1]) > pre.flat_run_tol)
            lo, hi = (0, len(m) - 1) if moving.size == 0 else (int(moving[0]), int(moving[-1]) + 1)
            if e[lo] - grid[0] > most or grid[-1] - e[hi] > most:
                assert errors[k] is not None and errors[k].reason == "window_not_covered", (el, k)
                continue
            assert errors[k] is None, (el, k, errors[k])
            np.testing.assert_array_equal(rows[k], np.interp(grid, e[lo:hi + 1], m[lo:hi + 1]))
            checked += 1
    assert checked > 500


def test_resample_rows_is_np_interp_of_the_real_range_wherever_the_grid_lies() -> None:
    """``resample_rows`` (a block of rows, each cut to its own real range) on synthetic rows with flat copied
    ends, for grids that start or end exactly on a data point, lie inside one interval, straddle the real
    range, or lie wholly before or after it (held ends; a wide extrapolation allowance so none is refused):
    every value is np.interp's over that row's real range, bit for bit."""
    from xastopo.data.validation import real_ranges
    from xastopo.preprocessing.spectrum import resample_rows

    rng = np.random.default_rng(11)
    e = np.sort(rng.uniform(0.0, 100.0, size=(6, 60)), axis=1)
    m = rng.normal(size=(6, 60)).cumsum(axis=1)
    m[1, :7], m[2, -9:], m[3, :4], m[3, -5:] = m[1, 7], m[2, -10], m[3, 4], m[3, -6]  # copied flat ends
    lo, hi = real_ranges(e, m)
    grids = [np.linspace(e[0, 10], e[0, 30], 50), np.linspace(e[0, 10] - 1e-9, e[0, 30], 50),
             np.linspace(e[0, 20] + 1e-3, e[0, 21] - 1e-3, 7), np.linspace(-20.0, 130.0, 200),
             np.linspace(-30.0, -10.0, 9), np.linspace(110.0, 140.0, 9), np.linspace(e[2, 50], 100.0, 20),
             np.concatenate([e[4, 5:40:3], [e[4, 41]]])]
    for grid in grids:
        out, errors = resample_rows(e, m, grid, max_extrapolation_ev=1e3)
        assert all(err is None for err in errors)
        for r in range(len(e)):
            want = np.interp(grid, e[r, lo[r]:hi[r] + 1], m[r, lo[r]:hi[r] + 1])
            np.testing.assert_array_equal(out[r], want)


def test_light_element_windows_relative_to_each_edge_keep_the_simulated_o_records():
    """FEFF10 O K edges of oxides lie several eV apart: on absolute energy the fitted O window starts above
    many of them and those records fail ("no rising edge"); windowed relative to each spectrum's edge
    (``featurize.align_to_edge``) none does, and every transformed spectrum has its edge on the reference.
    Real simulated O spectra from the project's shards (data/simulated)."""
    import glob

    from xastopo.preprocessing.edge import rising_edge_energy

    files = sorted(glob.glob(str(Path(__file__).resolve().parents[1] / "data/simulated/shards/*.parquet")))
    rows = pd.concat([pd.read_parquet(f, columns=["mp_id", "absorbing_element", "multiplicity", "energy", "mu"],
                                      filters=[("absorbing_element", "==", "O")]) for f in files])
    recs = [("O", [(np.asarray(r.energy), np.asarray(r.mu, float), float(r.multiplicity)) for r in g.itertuples()])
            for _, g in rows.groupby("mp_id")][:80]
    assert len(recs) == 80
    absolute = params_pre(align_to_edge=[]).fit(recs)
    aligned = params_pre(align_to_edge=["O", "N"]).fit(recs)
    assert absolute.rejected_["no_edge_step"] >= 20 and sum(aligned.rejected_.values()) == 0
    assert aligned.align_elements == ["O"] and absolute.align_elements == []  # only elements it has a window for
    assert "align_elements" not in absolute.to_dict()  # artifacts without aligned elements keep their bytes
    assert Preprocessor.from_dict(aligned.to_dict()).align_elements == ["O"]
    ref, w = aligned.elements["O"].edge_ev, aligned.elements["O"]
    s = aligned.measured_settings
    shifts = []
    for _, sites in recs[:20]:
        e, m, _ = sites[0]
        e, m = np.asarray(e, float), np.asarray(m, float)
        e_al = e + aligned._edge_shift("O", ref, e, m)  # noqa: SLF001 - the shift transform applies before the window
        assert abs(rising_edge_energy(e_al, m, s.edge_hold_ev, s.smooth_ev) - ref) < 1e-6
        shifts.append(float(e_al[0] - e[0]))
        np.testing.assert_allclose(np.diff(e_al), np.diff(e))  # a shift, nothing else
    assert np.ptp(shifts) > 2.0  # edges several eV apart, or the test proves nothing
    assert w.lo < ref < w.hi
    # hostile numbers are a SpectrumError naming the problem, never a crash or gigabytes of edge-finder grid
    n = len(e)
    for bad_e, bad_m in ((np.linspace(0.0, 1e8, n), np.asarray(m)),                       # a 1e8 eV span
                         (np.asarray(e), np.r_[np.zeros(n - 2), 1.0, 1.0])):               # two moving points
        with pytest.raises(SpectrumError) as ei:
            aligned.transform("O", [(bad_e, bad_m, 1.0)])
        assert ei.value.reason in ("alignment_failed", "window_not_covered"), ei.value
    # align=False (measured spectra, aligned by the measured path) leaves the energies alone: the shifted
    # spectrum read without alignment is the raw one read with it
    e0, m0, _ = recs[0][1][0]
    shifted = np.asarray(e0) + aligned._edge_shift("O", ref, np.asarray(e0, float), np.asarray(m0, float))  # noqa: SLF001
    assert abs(shifted[0] - e0[0]) > 1e-3
    np.testing.assert_array_equal(aligned.transform("O", [(shifted, m0, 1.0)], align=False),
                                  aligned.transform("O", [(e0, m0, 1.0)]))
    with pytest.raises(ValueError, match="align_to_edge needs the featurize.measured"):
        Preprocessor(**{**{k: v for k, v in aligned.to_dict().items() if k != "elements"}, "measured": None})


def test_odd_inputs_off_the_service_path_keep_clear_errors() -> None:
    """Callers other than the service (library, parquet): float32 energies are checked for coverage in float64
    as before; a weight that is not a number is a ``bad_weight`` of its material only where its sites pass (a
    material whose first site fails keeps that site's error), never a TypeError (nor, for a weight beyond float
    range, an OverflowError) for the whole batch; an integer beyond float range in a spectrum is ``not_numeric``;
    the edge step of float32 rows is float64, as each row's own was."""
    e = np.linspace(100.0, 200.0, 50)
    m = np.arctan(e - 150.0) + 2.0
    grid = np.linspace(100.0 - 1e-8, 150.0, 20)
    for energy in (e, e.astype(np.float32)):
        with pytest.raises(SpectrumError) as ei:
            resample_linear(energy, m, grid)
        assert ei.value.reason == "window_not_covered"
    pre = cu_pre()
    x = np.linspace(CU_WINDOW.lo - 5, CU_WINDOW.hi + 5, 60)
    y = np.arctan(x - 8995.0) + 2.0
    _, errors = pre.element_spectra("Cu", [[(x[:5], y[:5], None)], [(x, y, None)], [(x, y, 1.0)], [(x, y, 10**400)]])
    assert [err.reason if err else None for err in errors] == ["too_few_points", "bad_weight", None, "bad_weight"]
    from xastopo.data.validation import validate_spectrum

    with pytest.raises(SpectrumError) as ei:
        validate_spectrum([10**400] * 30, list(range(30)))
    assert ei.value.reason == "not_numeric"
    from xastopo.data.quality import edge_steps

    rows = (np.arctan(np.linspace(-5, 5, 200)) + 2.0)[None, :].repeat(3, axis=0).astype(np.float32)
    pre_level, step = edge_steps(np.linspace(0.0, 56.0, 200), rows, 5.0)
    alone = np.add.reduce(rows[0, np.linspace(0.0, 56.0, 200) >= 51.0])
    assert step.dtype == np.float64 and step[0] == np.float64(alone) / 18 - rows[0, 0]


def test_edge_steps_of_a_batch_are_each_rows_own():
    """``edge_steps`` of a batch: every row's post-edge sum is the one numpy gives that row alone as a 1-D
    array, bit for bit, for batch sizes 1 to 10,000 and post-edge widths from one point to the whole grid
    (a boolean column selection comes back in Fortran order, where ``sum(axis=1)`` would add column by
    column and change the last bits with the batch size)."""
    from xastopo.data.quality import edge_steps

    rng = np.random.default_rng(3)
    e = np.linspace(8979.0, 9035.0, 200)
    for k in (1, 2, 3, 7, 64, 257, 10_000):
        rows = rng.normal(size=(k, 200)).cumsum(axis=1) * 10.0 ** rng.uniform(-3, 3, size=(k, 1))
        for post_edge_ev in (0.0, 5.0, 10.0, 33.3, 56.0):
            pre, step = edge_steps(e, rows, post_edge_ev)
            sub = rows[:, e >= e[-1] - post_edge_ev]
            want = np.array([np.add.reduce(np.array(r)) for r in sub]) / sub.shape[1] - rows[:, 0]
            np.testing.assert_array_equal(step, want)
            np.testing.assert_array_equal(pre, rows[:, 0])


def _pad_one_by_one(materials, n_points, max_absorbers=None):
    """The padding as it was written first, material by material: the reference the vectorized one keeps."""
    a = max(max([len(m[1]) for m in materials], default=1), max_absorbers or 1)
    x = np.zeros((len(materials), a, n_points), dtype=np.float32)
    z = np.zeros((len(materials), a), dtype=np.int64)
    mask = np.zeros((len(materials), a), dtype=np.float32)
    for i, (xi, zi) in enumerate(materials):
        x[i, :len(zi)], z[i, :len(zi)], mask[i, :len(zi)] = xi, zi, 1.0
    return x, z, mask


def test_padding_equals_material_by_material_padding() -> None:
    """``pad_materials``/``pad_has_spectrum``/``pad_inputs`` (one concatenation per field, then a scatter) give the
    arrays of copying each material into a zeroed array, bit for bit and dtype for dtype: batches of 0-11 materials of
    0-5 absorbers (all one width, the common case of runs ordered by width, or mixed), float64/float32
    spectra, int32/int64 Z, bool/float has; a material that does not fit is a ValueError, never a silent
    reshape."""
    from xastopo.preprocessing.batching import pad_has_spectrum, pad_inputs, pad_materials

    rng = np.random.default_rng(7)
    for trial in range(600):
        n, p = int(rng.integers(0, 12)), int(rng.integers(1, 9))
        widths = rng.integers(0, 6, n) if trial % 2 else np.full(n, int(rng.integers(1, 4)))
        mats = [((rng.normal(size=(k, p)) * 1e3).astype([np.float32, np.float64][trial % 2]),
                 rng.integers(1, 100, k).astype([np.int64, np.int32][trial % 3 == 0])) for k in widths]
        has = [rng.integers(0, 2, k).astype([np.float32, bool][trial % 2]) for k in widths]
        least = [None, 0, 1, 7][trial % 4]
        want, got = _pad_one_by_one(mats, p, least), pad_materials(mats, p, least)
        for w, g in zip(want, got, strict=True):
            assert w.dtype == g.dtype and w.shape == g.shape and np.array_equal(w, g), trial
            assert g.flags.c_contiguous and g.flags.writeable
        width = want[1].shape[1]
        want_has = np.zeros((n, width), dtype=np.float32)
        for i, h in enumerate(has):
            want_has[i, :len(h)] = h
        got_has = pad_has_spectrum(has, width)
        assert got_has.dtype == np.float32 and np.array_equal(got_has, want_has)
        # the Predictor's padding (x, z, mask, has at once): the same arrays where a row read by its type
        # (has 0) is zeros, as the builder makes them; only materials with a spectrum are copied
        typed = [(x * h.astype(bool)[:, None], z, h) for (x, z), h in zip(mats, has, strict=True)]
        ref = _pad_one_by_one([(x, z) for x, z, _ in typed], p)
        ref = (*ref, pad_has_spectrum(has, ref[1].shape[1]))
        for w, g in zip(ref, pad_inputs(typed, p), strict=True):
            assert w.dtype == g.dtype and w.shape == g.shape and np.array_equal(w, g), trial
    view = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    view.flags.writeable = False  # the builder hands out read-only rows: padding copies them
    x, _, _ = pad_materials([(view[0], np.array([1, 2, 3])), (view[1], np.array([4, 5, 6]))], 4)
    x[0, 0, 0] = -1.0
    assert view[0, 0, 0] == 0.0
    with pytest.raises(ValueError, match="spectra: material 0 has 2 rows for 1 absorbers"):
        pad_materials([(np.zeros((2, 4)), np.array([1]))], 4)
    with pytest.raises(ValueError, match="spectra: rows of shape \\(5,\\), expected \\(4,\\)"):
        pad_materials([(np.zeros((1, 5)), np.array([1]))], 4)
    # the totals agree but one material's rows would slide into the next: refused, naming the material
    shifted = [(np.ones((3, 4)), np.array([1, 2]), np.ones(2)), (np.ones((1, 4)), np.array([3, 4]), np.ones(2))]
    for pad in (lambda: pad_materials(shifted, 4), lambda: pad_inputs(shifted, 4)):
        with pytest.raises(ValueError, match="spectra: material 0 has 3 rows for 2 absorbers"):
            pad()
    typed = [(np.zeros((2, 4)), np.array([1, 2]), np.zeros(2)), (np.ones((3, 4)), np.array([3, 4]), np.ones(2))]
    with pytest.raises(ValueError, match="spectra: material 1 has 3 rows for 2 absorbers"):
        pad_inputs(typed, 4)  # the subset of materials with a spectrum names the material by its own index
    with pytest.raises(ValueError, match="has_spectrum: material 0 has 1 rows for 2 absorbers"):
        pad_inputs([(np.zeros((2, 4)), np.array([1, 2]), np.ones(1))], 4)
    junk = [(np.full((2, 4), 5.0), np.array([1, 2]), np.zeros(2))]  # type-only rows that are not zeros:
    assert not pad_inputs(junk, 4)[0].any() and (pad_inputs(junk, 4, skip_type_only=False)[0] == 5).all()
    with pytest.raises(ValueError, match="has_spectrum: a material has 3 absorbers, more than the width 2"):
        pad_has_spectrum([np.ones(3), np.ones(1)], 2)
