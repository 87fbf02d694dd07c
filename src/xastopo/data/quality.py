"""Edge-step arithmetic shared by the data-quality rules (``assemble``) and the preprocessing.

One definition of the edge step: the level at the first energy is the pre-edge, the mean over the
last ``post_edge_ev`` is the post-edge. ``assemble`` uses it to judge a spectrum physical on its own
range; the Preprocessor uses it to normalize on the element's window. It lives in ``data`` because
``data`` must not import ``preprocessing`` (the layers only import downward).
"""

from __future__ import annotations

import numpy as np

from xastopo.data.validation import real_range


def edge_step(energy: np.ndarray, mu: np.ndarray, post_edge_ev: float) -> tuple[float, float]:
    """(pre-edge level, edge step) of ``mu(energy)``: mu at the first point, post-edge mean minus it."""
    pre = float(mu[0])
    post = float(np.asarray(mu)[np.asarray(energy) >= energy[-1] - post_edge_ev].mean())
    return pre, post - pre


def own_range_normalized(energy: np.ndarray, mu: np.ndarray, post_edge_ev: float, tol: float) -> np.ndarray:
    """Edge-step normalize a spectrum on its own real range (copied end runs cut); NaN without a step.

    Used only to judge whether a spectrum is physical, before any window is fitted.
    """
    lo, hi = real_range(energy, mu, tol)
    e, m = energy[lo : hi + 1], np.asarray(mu[lo : hi + 1], float)
    pre, step = edge_step(e, m, post_edge_ev)
    return (m - pre) / step if step > 0 else np.full_like(m, np.nan)


def max_negative_jump(normalized: np.ndarray) -> float:
    """Largest point-to-point drop of a normalized spectrum, in edge-step units (NaN: no usable step)."""
    d = np.diff(normalized)
    if not np.all(np.isfinite(d)):
        return float("nan")  # no usable edge step: callers treat NaN as unphysical
    return float(max(0.0, -d.min())) if d.size else 0.0
