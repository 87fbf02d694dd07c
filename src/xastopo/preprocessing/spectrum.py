"""Single-spectrum operations: resampling onto a grid and edge-step normalization.

The shipped spectra come in two scales (FEFF's edge-step normalized mu, and OmniXAS "processed"
intensities = FEFF mu × a per-site constant). Normalizing on the element's window makes both the
same: subtract the value at the window start (pre-edge ≈ 0) and divide by the mean over the last
``post_edge_ev`` of the window (post-edge ≈ 1). The operation is invariant to the per-site scale, so
a processed Cu spectrum and the raw FEFF run it came from give the same result.
"""

from __future__ import annotations

import numpy as np

from xastopo.data.quality import edge_step, edge_steps, max_negative_jump  # noqa: F401 (re-export)
from xastopo.data.validation import SpectrumError, real_ranges

try:  # the compiled loop np.interp calls for real values: its Python wrapper was a quarter of each ~2 us call
    from numpy._core.multiarray import interp as _interp
except ImportError:  # another numpy layout: np.interp itself (the same loop, one wrapper more)
    def _interp(x, xp, fp, left, right):  # type: ignore[no-redef]
        return np.interp(x, xp, fp, left, right)


def resample_linear(
    energy: np.ndarray, mu: np.ndarray, grid: np.ndarray, max_extrapolation_ev: float = 0.0,
    flat_run_tol: float = 0.0,
) -> np.ndarray:
    """Linear interpolation of ``mu(energy)`` onto ``grid``.

    Copied flat runs at either end do not count as coverage. Values up to ``max_extrapolation_ev``
    beyond the real data are held constant (as the source processing did); further is an error
    naming the energy range that is needed. (One row of :func:`resample_rows`.)
    """
    # float64 first (exact for float32 input): the coverage check compares in the grid's precision, as before
    e, m = np.asarray(energy, dtype=np.float64), np.asarray(mu, dtype=np.float64)
    out, errors = resample_rows(e[None, :], m[None, :], grid, max_extrapolation_ev, flat_run_tol)
    if errors[0] is not None:
        raise errors[0]
    return out[0]


def resample_rows(
    energy: np.ndarray, mu: np.ndarray, grid: np.ndarray, max_extrapolation_ev: float = 0.0,
    flat_run_tol: float = 0.0,
) -> tuple[np.ndarray, list[SpectrumError | None]]:
    """:func:`resample_linear` of ``k`` validated spectra of one length ([k, n] float64 arrays) in one pass:
    (rows [k, len(grid)], errors [k]); a row whose real range does not cover the grid has its
    ``window_not_covered`` error and a row not to be used."""
    lo, hi = real_ranges(energy, mu, flat_run_tol)
    rows = np.arange(len(energy))
    e_lo, e_hi = energy[rows, lo], energy[rows, hi]
    need_lo, need_hi = float(grid[0]), float(grid[-1])
    short = (e_lo - need_lo > max_extrapolation_ev + 1e-9) | (need_hi - e_hi > max_extrapolation_ev + 1e-9)
    errors: list[SpectrumError | None] = [None] * len(energy)
    for r in np.flatnonzero(short) if short.any() else ():
        errors[r] = SpectrumError(
            "window_not_covered",
            f"spectrum covers {e_lo[r]:.2f}-{e_hi[r]:.2f} eV but {need_lo:.2f}-{need_hi:.2f} eV is needed "
            f"(up to {max_extrapolation_ev:g} eV missing at either end is tolerated)",
            "energy",
        )
    out = np.empty((len(energy), len(grid)))
    for r, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        # one np.interp per row: ~2 us each at ~170 points, less than a vectorized bracket search over all rows
        out[r] = _interp(grid, energy[r, a : b + 1], mu[r, a : b + 1], None, None)
    return out, errors


NO_EDGE_STEP = "spectrum has no rising edge in the window (post-edge <= pre-edge)"


def normalize_on_grid(resampled: np.ndarray, grid: np.ndarray, post_edge_ev: float) -> np.ndarray:
    """Edge-step normalize a spectrum already resampled on ``grid`` (see module docstring)."""
    out, ok = normalize_rows(np.asarray(resampled)[None, :], grid, post_edge_ev)
    if not ok[0]:
        raise SpectrumError("no_edge_step", NO_EDGE_STEP, "mu")
    return out[0]


def normalize_rows(rows: np.ndarray, grid: np.ndarray, post_edge_ev: float) -> tuple[np.ndarray, np.ndarray]:
    """Edge-step normalize spectra ``rows`` [k, n] resampled on one ``grid`` in one vectorized pass:
    (normalized rows, ``ok`` [k]); a row without a usable rising edge (post-edge <= pre-edge, or a
    non-finite step) has ``ok`` False and is not to be used (:func:`normalize_on_grid` raises for it)."""
    pre, step = edge_steps(grid, rows, post_edge_ev)
    post = pre + step
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(step) & (step > 1e-12 * np.maximum(1.0, np.abs(post)))
    safe = np.where(ok, step, 1.0)
    return (rows - pre[:, None]) / safe[:, None], ok
