"""Where a K edge is: the half-edge-step energy of the main absorption rise.

Used to compare spectra of one element computed by different codes (FEFF9 vs FEFF10, whose absolute
energies differ by several eV) and to align measured spectra to the computed ones (the reference
edges fitted on the training spectra, :meth:`xastopo.preprocessing.preprocessor.Preprocessor.fit_edges`).
Both finders share one smoothing and one pair of levels, and locate crossings with array operations
(the grid has ~10 points per eV: a Python loop over it was most of the time of ``fit_edges``).
"""

from __future__ import annotations

import numpy as np

#: the grid the edge is located on (eV) and the pre-edge level's span from the data start (eV)
GRID_EV = 0.1
PRE_LEVEL_EV = 2.0
#: post-edge level: median over this range above the steepest point (eV)
POST_LEVEL_EV = (15.0, 45.0)
#: Gaussian sigma (eV) of :func:`half_step_energy` when the caller has no setting (the FEFF-comparison
#: benchmarks); the measured-spectra path passes ``featurize.measured.smooth_ev``
DEFAULT_SMOOTH_EV = 1.0


def _smoothed_levels(e: np.ndarray, mu: np.ndarray, smooth_ev: float
                     ) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(grid, smoothed mu, index of the steepest rise, half-step level) shared by both edge finders.

    mu is put on a ``GRID_EV`` grid and smoothed with a Gaussian of sigma ``smooth_ev`` truncated at 3
    sigma; the level is pre + (post - pre) / 2 with pre = the mean over the first ``PRE_LEVEL_EV`` and
    post = the median over ``POST_LEVEL_EV`` above the steepest point (the last value if none there)."""
    g = np.arange(e[0], e[-1], GRID_EV)
    y = np.interp(g, e, mu)
    half = int(round(3 * smooth_ev / GRID_EV))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) * GRID_EV / smooth_ev) ** 2)
    ys = np.convolve(np.pad(y, half, mode="edge"), k / k.sum(), mode="valid")
    i_d = int(np.argmax(np.gradient(ys, g)))
    pre = float(ys[g <= g[0] + PRE_LEVEL_EV].mean())
    sel = (g >= g[i_d] + POST_LEVEL_EV[0]) & (g <= g[i_d] + POST_LEVEL_EV[1])
    post = float(np.median(ys[sel])) if sel.any() else float(ys[-1])
    return g, ys, i_d, pre + 0.5 * (post - pre)


def _crossing(g: np.ndarray, ys: np.ndarray, level: float, j: int) -> float:
    """Energy where ys crosses ``level`` between grid points j-1 and j (linear)."""
    return float(np.interp(level, [ys[j - 1], ys[j]], [g[j - 1], g[j]]))


def _walk(g: np.ndarray, ys: np.ndarray, i_d: int, level: float) -> float:
    """The crossing nearest the steepest point: downhill when it is above the level, uphill otherwise."""
    if ys[i_d] >= level:  # walk down to the last point below the level
        below = np.flatnonzero(ys[:i_d] < level)
        if len(below) == 0:
            return float(g[0])
        return _crossing(g, ys, level, int(below[-1]) + 1)
    up = np.flatnonzero(ys[i_d + 1:] >= level)  # walk up to the first point at or above it
    if len(up) == 0:
        return float(g[-1])
    return _crossing(g, ys, level, i_d + 1 + int(up[0]))


def half_step_energy(e: np.ndarray, mu: np.ndarray, smooth_ev: float = DEFAULT_SMOOTH_EV) -> float:
    """Energy of the half-edge-step point on the main absorption rise.

    mu is put on a 0.1 eV grid and smoothed (Gaussian, sigma ``smooth_ev``); the main rise is located
    at the steepest slope; step = post-edge level (median over 15-45 eV above it) minus the pre-edge
    level (mean over the first 2 eV); the half-step energy is where the smoothed mu crosses pre + step/2,
    searched downhill from the steepest point so that pre-edge features and the first point do not fool it.
    """
    g, ys, i_d, level = _smoothed_levels(np.asarray(e, float), np.asarray(mu, float), smooth_ev)
    return _walk(g, ys, i_d, level)


def rising_edge_energy(e: np.ndarray, mu: np.ndarray, hold_ev: float, smooth_ev: float) -> float:
    """Half-step energy of the main rise that *stays* up: the first upward crossing of
    pre + step/2 after which the smoothed mu stays above that level for ``hold_ev`` (or to the end of
    the data).

    The reference and measured edge energies used to align measured spectra (``preprocessing.measured``;
    ``hold_ev`` and ``smooth_ev`` are ``featurize.measured.edge_hold_ev`` / ``smooth_ev``).
    :func:`half_step_energy` walks down from the steepest point, so a strong pre-edge peak (chromates,
    vanadates: a peak of more than half the edge step, and the steepest rise) puts its edge on the
    peak, ~10 eV early; requiring the signal to hold above the level skips such narrow peaks. Same
    smoothing and levels as :func:`half_step_energy`, which is the fallback when no crossing holds.
    """
    e, mu = np.asarray(e, float), np.asarray(mu, float)
    g, ys, i_d, level = _smoothed_levels(e, mu, smooth_ev)
    n = len(g)
    hold = min(max(1, int(round(hold_ev / GRID_EV))), n)
    # runs of consecutive points at or above the level: [starts, ends); the first run long enough, or
    # reaching the end of the data, starts at the crossing (a run that fails at its start fails throughout)
    edges = np.diff(np.concatenate(([0], (ys >= level).astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    ok = np.flatnonzero((ends - starts >= hold) | (ends == n))
    if len(ok) == 0:
        return _walk(g, ys, i_d, level)
    j = int(starts[ok[0]])
    if j == 0:
        return float(g[0])
    return _crossing(g, ys, level, j)
