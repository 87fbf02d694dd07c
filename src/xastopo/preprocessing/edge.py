"""Where a K edge is: the half-edge-step energy of the main absorption rise.

Used to compare spectra of one element computed by different codes (FEFF9 vs FEFF10, whose absolute
energies differ by several eV) and, later, to align measured spectra to the computed ones.
"""

from __future__ import annotations

import numpy as np


def half_step_energy(e: np.ndarray, mu: np.ndarray) -> float:
    """Energy of the half-edge-step point on the main absorption rise.

    mu is put on a 0.1 eV grid and smoothed (Gaussian, sigma 1 eV); the main rise is located at the
    steepest slope; step = post-edge level (median over 15-45 eV above it) minus the pre-edge level (mean
    over the first 2 eV); the half-step energy is where the smoothed mu crosses pre + step/2, searched
    downhill from the steepest point so that pre-edge features and the first point do not fool it.
    """
    e, mu = np.asarray(e, float), np.asarray(mu, float)
    g = np.arange(e[0], e[-1], 0.1)
    y = np.interp(g, e, mu)
    k = np.exp(-0.5 * (np.arange(-30, 31) * 0.1 / 1.0) ** 2)
    ys = np.convolve(np.pad(y, 30, mode="edge"), k / k.sum(), mode="valid")
    i_d = int(np.argmax(np.gradient(ys, g)))
    pre = float(ys[g <= g[0] + 2.0].mean())
    sel = (g >= g[i_d] + 15) & (g <= g[i_d] + 45)
    post = float(np.median(ys[sel])) if sel.any() else float(ys[-1])
    level = pre + 0.5 * (post - pre)
    if ys[i_d] >= level:  # walk down to the crossing
        j = i_d
        while j > 0 and ys[j - 1] >= level:
            j -= 1
        if j == 0:
            return float(g[0])
        return float(np.interp(level, [ys[j - 1], ys[j]], [g[j - 1], g[j]]))
    j = i_d  # walk up to the crossing
    while j < len(g) - 1 and ys[j + 1] < level:
        j += 1
    if j == len(g) - 1:
        return float(g[-1])
    return float(np.interp(level, [ys[j], ys[j + 1]], [g[j], g[j + 1]]))
