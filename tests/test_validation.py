"""validate_spectrum reason codes and real_range (copied flat runs of the processed sources)."""

from __future__ import annotations

import numpy as np
import pytest

from xastopo.data.validation import SpectrumError, real_range, validate_spectrum

E = np.linspace(8980.0, 9040.0, 50)
MU = np.arctan((E - 8990.0) / 2.0) / np.pi + 0.5


def reason(energy, mu, min_points=20) -> SpectrumError:
    with pytest.raises(SpectrumError) as ei:
        validate_spectrum(energy, mu, min_points)
    return ei.value


def test_valid_spectrum_returns_float64_copies():
    e, m = validate_spectrum(list(E), MU.astype(np.float32))
    assert e.dtype == np.float64 and m.dtype == np.float64
    np.testing.assert_array_equal(e, E)
    np.testing.assert_allclose(m, MU, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_mu(bad):
    mu = MU.copy()
    mu[7] = bad
    err = reason(E, mu)
    assert err.reason == "non_finite" and err.field == "mu"


def test_non_finite_energy():
    e = E.copy()
    e[3] = np.nan
    err = reason(e, MU)
    assert err.reason == "non_finite" and err.field == "energy"


def test_non_increasing_energy_names_index():
    e = E.copy()
    e[10] = e[9]  # repeated energy
    err = reason(e, MU)
    assert err.reason == "energy_not_increasing" and err.field == "energy"
    assert "index 10" in str(err)
    err = reason(E[::-1], MU)  # decreasing
    assert err.reason == "energy_not_increasing"


def test_too_few_points():
    err = reason(E[:19], MU[:19], min_points=20)
    assert err.reason == "too_few_points" and "19" in str(err) and "20" in str(err)
    validate_spectrum(E[:20], MU[:20], min_points=20)  # exactly the minimum is fine


def test_empty():
    assert reason([], []).reason == "empty"
    assert reason(E, []).reason == "empty"


def test_length_mismatch():
    err = reason(E, MU[:-1])
    assert err.reason == "length_mismatch"
    assert str(len(E)) in str(err) and str(len(E) - 1) in str(err)


def test_not_numeric_and_not_1d():
    assert reason(["a"] * 30, MU[:30]).reason == "not_numeric"
    assert reason(np.ones((5, 5)), np.ones((5, 5))).reason == "not_1d"


def test_real_range_no_flat_runs():
    assert real_range(E, MU) == (0, len(E) - 1)


def test_real_range_finds_copied_runs():
    # np.interp beyond the data copies the end values outward, as in the OmniXAS processed rows
    grid = np.arange(8983.0, 9018.0, 0.25)
    e_data = np.linspace(8986.1, 9016.9, 80)
    mu = np.interp(grid, e_data, np.arctan((e_data - 8990) / 2) + 2.0)
    lo, hi = real_range(grid, mu)
    # the last copied point is the last grid point below the data start; after it values change
    assert grid[lo] < e_data[0] <= grid[lo + 1]
    assert grid[hi - 1] < e_data[-1] <= grid[hi]
    assert np.all(mu[: lo + 1] == mu[0]) and np.all(mu[hi:] == mu[-1])


def test_real_range_on_real_processed_rows(all_spectra):
    """Every processed row's copied start is constant and what follows it is not."""
    proc = all_spectra[all_spectra["source"] == "omnixas_feff_processed"].head(300)
    n_with_run = 0
    for e, m in zip(proc["energy"], proc["mu"], strict=True):
        m = np.asarray(m, float)
        lo, hi = real_range(np.asarray(e), m)
        assert 0 <= lo < hi <= len(m) - 1
        assert np.all(m[: lo + 1] == m[0]) and m[lo + 1] != m[lo]
        assert np.all(m[hi:] == m[-1]) and m[hi - 1] != m[hi]
        n_with_run += lo > 0
    assert n_with_run > 100  # PROVENANCE: most processed rows start with a flat run


def test_real_range_all_flat():
    mu = np.ones(30)
    assert real_range(np.arange(30.0), mu) == (0, 29)


def test_real_range_tolerance():
    mu = np.array([1.0, 1.0 + 1e-9, 1.0, 2.0, 3.0, 3.0])
    assert real_range(np.arange(6.0), mu, tol=0.0) == (0, 4)
    assert real_range(np.arange(6.0), mu, tol=1e-6) == (2, 4)
