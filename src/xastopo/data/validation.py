"""Checks every spectrum passes before it is used, with a reason code per failure.

The same checks run on raw files in `ingest` and on user spectra in the CLI and the service, so a
spectrum rejected in one place is rejected with the same words everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SpectrumError(ValueError):
    """A spectrum failed validation. ``reason`` is a short code, ``field`` the offending field."""

    def __init__(self, reason: str, message: str, field: str = "mu", element: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.element = element


def validate_spectrum(
    energy: Sequence[float] | np.ndarray, mu: Sequence[float] | np.ndarray, min_points: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 arrays, or raise :class:`SpectrumError` naming the problem."""
    try:
        e = np.asarray(energy, dtype=np.float64)
        m = np.asarray(mu, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SpectrumError("not_numeric", f"energy/mu must be numbers ({exc})", "energy") from exc
    if e.ndim != 1 or m.ndim != 1:
        raise SpectrumError("not_1d", "energy and mu must be one-dimensional lists", "energy")
    if e.size == 0 or m.size == 0:
        raise SpectrumError("empty", "spectrum is empty", "energy" if e.size == 0 else "mu")
    if e.size != m.size:
        raise SpectrumError(
            "length_mismatch", f"energy has {e.size} points but mu has {m.size}", "mu"
        )
    # ndarray methods, not np.all/np.any/np.diff: this runs for every spectrum of every request, and the
    # module-level wrappers were ~a third of its time (benchmarks/preprocessing_share.py)
    if not np.isfinite(e).all():
        raise SpectrumError("non_finite", "energy contains NaN or infinite values", "energy")
    if not np.isfinite(m).all():
        raise SpectrumError("non_finite", "mu contains NaN or infinite values", "mu")
    if e.size < min_points:
        raise SpectrumError(
            "too_few_points", f"spectrum has {e.size} points, at least {min_points} needed", "energy"
        )
    not_rising = e[1:] <= e[:-1]
    if not_rising.any():
        i = int(not_rising.argmax())
        raise SpectrumError(
            "energy_not_increasing",
            f"energy must be strictly increasing (index {i + 1}: {e[i + 1]} after {e[i]})",
            "energy",
        )
    return e, m


def real_range(energy: np.ndarray, mu: np.ndarray, tol: float = 0.0) -> tuple[int, int]:
    """Indices [lo, hi] of the part of a spectrum that is not a copied (flat) run at either end.

    The OmniXAS processed spectra were ``np.interp``-ed onto a fixed grid, which copies the first
    and last FEFF values outward; those points carry no information about the energies they sit at.
    """
    moving = np.flatnonzero(np.abs(mu[1:] - mu[:-1]) > tol)
    if moving.size == 0:
        return 0, len(mu) - 1
    return int(moving[0]), int(moving[-1]) + 1
