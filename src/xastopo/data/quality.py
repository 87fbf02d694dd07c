"""Edge-step arithmetic shared by the data-quality rules (``assemble``) and the preprocessing.

One definition of the edge step: the level at the first energy is the pre-edge, the mean over the
last ``post_edge_ev`` is the post-edge. ``assemble`` uses it to judge a spectrum physical on its own
range; the Preprocessor uses it to normalize on the element's window. It lives in ``data`` because
``data`` must not import ``preprocessing`` (the layers only import downward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xastopo.data.validation import real_range


def edge_step(energy: np.ndarray, mu: np.ndarray, post_edge_ev: float) -> tuple[float, float]:
    """(pre-edge level, edge step) of ``mu(energy)``: mu at the first point, post-edge mean minus it."""
    pre, step = edge_steps(energy, np.asarray(mu)[None, :], post_edge_ev)
    return float(pre[0]), float(step[0])


def edge_steps(energy: np.ndarray, rows: np.ndarray, post_edge_ev: float) -> tuple[np.ndarray, np.ndarray]:
    """(pre-edge levels, edge steps) of spectra ``rows`` [k, n] sharing one ``energy`` axis [n] (spectra
    resampled on an element's grid): one pass for a whole batch (the service's preprocessing).

    Each row's post-edge sum must be the pairwise sum numpy gives that row alone as a 1-D array (a
    material's answer must not depend on its run-mates, and the features must stay those the models were
    trained on). A boolean column selection of a 2-D array comes back in Fortran order, and there
    ``sum(axis=1)`` adds the rows up column by column, in sequence: the last bits changed with the batch
    size. Made C-contiguous first, ``add.reduce(axis=1)`` runs numpy's 1-D pairwise loop on each row (one
    call instead of one per row; tested against the per-row sums for batch sizes 1 to 10,000)."""
    e = np.asarray(energy)
    sub = np.ascontiguousarray(rows[:, e >= e[-1] - post_edge_ev])
    # float32 rows are summed in float32, as each row alone was, and divided in float64 (as before)
    post = np.asarray(np.add.reduce(sub, axis=1), dtype=np.float64) / sub.shape[1]
    pre = rows[:, 0]
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


@dataclass(frozen=True)
class WhiteLineRule:
    """When a large drop is a white line decaying, not a glitch (``assemble.white_line`` in params.yaml).

    FEFF10 computes light-element K edges (C, N, O, Li, B) with sharp white lines: several edge steps high,
    then falling by more than ``max_negative_jump`` between two grid points. A glitch is something else:
    a drop far above the edge, a drop that starts below the post-edge level (a step down, not a peak
    decaying) or one that plunges below the pre-edge. A spectrum whose every large drop is a white-line
    decay is kept, for the ``sources`` listed.
    """

    window_ev: float      # a drop this far or less above the edge (first half-step crossing) may be a white line
    min_start: float      # ... and must start at least this high (edge-step units): it falls from a peak
    max_dip: float        # ... and what follows must stay above -max_dip (no plunge below the pre-edge)
    sources: tuple[str, ...]

    @classmethod
    def from_params(cls, params: dict, sources: tuple[str, ...] | None = None) -> WhiteLineRule:
        """From ``assemble.white_line``; ``sources`` overrides the block's (e.g. every source, for a report)."""
        w = params["assemble"]["white_line"]
        return cls(float(w["window_ev"]), float(w["min_start"]), float(w["max_dip"]),
                   tuple(w["sources"]) if sources is None else tuple(sources))


def drop_verdict(energy: np.ndarray, mu: np.ndarray, post_edge_ev: float, tol: float, threshold: float,
                 rule: WhiteLineRule | None) -> str:
    """'ok' (no drop above ``threshold``), 'white_line' (every large drop is a white-line decay by
    ``rule``), or why the spectrum is unphysical: 'no_edge_step', 'drop_beyond_white_line_window',
    'drop_not_from_a_peak', 'dip_below_pre_edge', or 'negative_jump' (no rule given)."""
    energy = np.asarray(energy, float)
    lo, hi = real_range(energy, mu, tol)
    e = energy[lo : hi + 1]
    n = own_range_normalized(energy, np.asarray(mu, float), post_edge_ev, tol)
    jump = max_negative_jump(n)
    if not np.isfinite(jump):
        return "no_edge_step"
    if jump <= threshold:
        return "ok"
    if rule is None:
        return "negative_jump"
    edge = e[int(np.argmax(n >= 0.5))]
    for k in np.nonzero(-np.diff(n) > threshold)[0]:
        if e[k] - edge > rule.window_ev:
            return "drop_beyond_white_line_window"
        if n[k] < rule.min_start:
            return "drop_not_from_a_peak"
        if n[k + 1 :].min() < -rule.max_dip:
            return "dip_below_pre_edge"
    return "white_line"
