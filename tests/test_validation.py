"""validate_spectrum reason codes and real_range (copied flat runs of the processed sources)."""

from __future__ import annotations

import numpy as np
import pytest

from xastopo.data.validation import SpectrumError, real_range, real_ranges, validate_many, validate_spectrum

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


def test_validate_many_gives_each_spectrum_the_error_it_gets_alone():
    """The batched validation (spectra of one length converted and checked together, the service's path)
    answers every spectrum of a hostile mix exactly as :func:`validate_spectrum` does alone: same reason,
    message and field, same float64 values for the valid ones, whatever its run-mates."""
    nan_e, nan_m, back = E.copy(), MU.copy(), E.copy()
    nan_e[7], nan_m[-1], back[12] = np.nan, np.inf, back[11]
    spectra = [
        (E, MU), (list(E), list(MU)), (nan_e, MU), (E, nan_m), (back, MU), (E[:19], MU[:19]), (E[:25], MU[:25]),
        (E, MU[:-1]), ([], []), (["a"] * len(E), MU), (np.ones((5, 5)), np.ones((5, 5))), (None, MU),
        ([[1.0, 2.0]] * len(E), MU), (list(E[:-1]) + [[1.0]], MU), (E.astype(np.float32), MU), (nan_e, nan_m),
        ([str(v) for v in E], MU), (E[:25], MU[:25] * 2),
        # lists of Python numbers that are not floats (array('d') takes them; the values must be numpy's)
        ([int(v) for v in E], list(MU)), (list(E), [True] + list(MU[1:])), ([np.float32(v) for v in E], list(MU)),
        (list(E[:-1]) + [10**400], list(MU)), (list(E), [str(v) for v in MU]), (list(E), list(MU)),
    ]
    errors, blocks = validate_many(spectra, min_points=20)
    got = {i: (e[r], m[r]) for idx, e, m in blocks for r, i in enumerate(idx)}
    assert sorted(got) == [i for i, err in enumerate(errors) if err is None]
    for i, (energy, mu) in enumerate(spectra):
        try:
            e, m = validate_spectrum(energy, mu, min_points=20)
        except SpectrumError as exc:
            assert errors[i] is not None and (errors[i].reason, str(errors[i]), errors[i].field) == (
                exc.reason, str(exc), exc.field), i
            continue
        assert errors[i] is None, (i, errors[i])
        np.testing.assert_array_equal(got[i][0], e)
        np.testing.assert_array_equal(got[i][1], m)
        assert got[i][0].dtype == np.float64
    reasons = [e.reason if e else None for e in errors]
    assert reasons[:10] == [None, None, "non_finite", "non_finite", "energy_not_increasing", "too_few_points", None,
                            "length_mismatch", "empty", "not_numeric"]


def test_real_ranges_is_real_range_per_row():
    """The row-wise form gives each row what the single-spectrum reference gives (flat starts, flat ends,
    both, none, all flat, a tolerance), written here as the original flatnonzero form."""
    rng = np.random.default_rng(3)
    rows = []
    for a, b in ((0, 0), (5, 0), (0, 7), (3, 4), (29, 0), (30, 0)):
        m = rng.normal(size=30).cumsum()
        m[:a], m[30 - b:] = m[min(a, 29)], m[29 - b] if b else m[-1]
        rows.append(m)
    rows.append(np.array([1.0, 1.0 + 1e-9] + [1.0] * 27 + [2.0]))
    mu = np.stack(rows)
    for tol in (0.0, 1e-6):
        lo, hi = real_ranges(np.tile(np.arange(30.0), (len(mu), 1)), mu, tol)
        for r, m in enumerate(mu):
            moving = np.flatnonzero(np.abs(np.diff(m)) > tol)
            want = (0, 29) if moving.size == 0 else (int(moving[0]), int(moving[-1]) + 1)
            assert (int(lo[r]), int(hi[r])) == want == real_range(np.arange(30.0), m, tol), (r, tol)
    assert real_range(np.arange(1.0), np.ones(1)) == (0, 0) and real_range(np.arange(0.0), np.ones(0)) == (0, -1)


def test_stack_rows_is_numpys_conversion():
    """``stack_rows`` (lists of Python floats copied through ``array('d')``, anything else through numpy) gives
    exactly ``np.asarray(rows, float64)``: the same values and the same refusal, whatever the rows hold."""
    from xastopo.data.validation import stack_rows

    rng = np.random.default_rng(5)
    floats = [list(rng.normal(size=30) * 10.0 ** rng.integers(-300, 300)) for _ in range(7)]
    cases = [floats, [list(range(30))] * 3, [[True, False] * 15, floats[0]], [np.arange(30.0), floats[1]],
             [[np.float32(v) for v in floats[2]], floats[3]], [[str(v) for v in floats[4]], floats[5]],
             [(*floats[6],), floats[0]], [floats[0][:-1] + [None]]]  # None: numpy's NaN (validation refuses it)
    for rows in cases:
        np.testing.assert_array_equal(stack_rows(rows, 30), np.asarray(rows, dtype=np.float64))
        assert stack_rows(rows, 30).dtype == np.float64 and stack_rows(rows, 30).shape == (len(rows), 30)
    for rows in ([floats[0][:-1] + [10**400]], [floats[0][:-1] + ["x"]], [floats[0][:-1] + [[1.0]]]):
        with pytest.raises((TypeError, ValueError, OverflowError)) as numpy_error:
            np.asarray(rows, dtype=np.float64)
        with pytest.raises(numpy_error.type):
            stack_rows(rows, 30)
