"""Checks every spectrum passes before it is used, with a reason code per failure.

The same checks run on raw files in `ingest` and on user spectra in the CLI and the service, so a
spectrum rejected in one place is rejected with the same words everywhere.
"""

from __future__ import annotations

from array import array
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
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an integer beyond float range
        raise SpectrumError("not_numeric", f"energy/mu must be numbers ({exc})", "energy") from exc
    if e.ndim != 1 or m.ndim != 1:
        raise SpectrumError("not_1d", "energy and mu must be one-dimensional lists", "energy")
    if e.size == 0 or m.size == 0:
        raise SpectrumError("empty", "spectrum is empty", "energy" if e.size == 0 else "mu")
    if e.size != m.size:
        raise SpectrumError(
            "length_mismatch", f"energy has {e.size} points but mu has {m.size}", "mu"
        )
    error = validate_rows(e[None, :], m[None, :], min_points)[0]
    if error is not None:
        raise error
    return e, m


def validate_rows(e: np.ndarray, m: np.ndarray, min_points: int = 20) -> list[SpectrumError | None]:
    """The checks of :func:`validate_spectrum` after conversion, for ``k`` spectra of one length at once
    (``e``, ``m``: float64 [k, n], n >= 1): per row its SpectrumError (the first failing check, in the
    single-spectrum order), or None. Why rows: a request's spectra of one element mostly share a length,
    and one vectorized pass costs what a few per-spectrum numpy calls did (``Preprocessor.element_spectra``)."""
    k, n = e.shape
    bad_e = ~np.isfinite(e).all(axis=1)
    bad_m = ~np.isfinite(m).all(axis=1)
    not_rising = e[:, 1:] <= e[:, :-1]
    bad_rise = not_rising.any(axis=1)
    errors: list[SpectrumError | None] = [None] * k
    if n >= min_points and not (bad_e | bad_m | bad_rise).any():
        return errors
    for r in range(k):
        if bad_e[r]:
            errors[r] = SpectrumError("non_finite", "energy contains NaN or infinite values", "energy")
        elif bad_m[r]:
            errors[r] = SpectrumError("non_finite", "mu contains NaN or infinite values", "mu")
        elif n < min_points:
            errors[r] = SpectrumError("too_few_points", f"spectrum has {n} points, at least {min_points} needed",
                                      "energy")
        elif bad_rise[r]:
            i = int(not_rising[r].argmax())
            errors[r] = SpectrumError("energy_not_increasing", "energy must be strictly increasing "
                                      f"(index {i + 1}: {e[r, i + 1]} after {e[r, i]})", "energy")
    return errors


def validate_many(
    spectra: Sequence[tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]], min_points: int = 20
) -> tuple[list[SpectrumError | None], list[tuple[list[int], np.ndarray, np.ndarray]]]:
    """:func:`validate_spectrum` of many ``(energy, mu)`` pairs: (errors [k], blocks), a block being the indices
    of valid spectra of one length and their float64 [rows, n] energy and mu arrays. Spectra of one length are
    converted and checked together (:func:`validate_rows`); one that cannot be stacked (lists of different
    lengths, not numbers, not flat) is validated alone, so every error is :func:`validate_spectrum`'s."""
    errors: list[SpectrumError | None] = [None] * len(spectra)
    groups: dict[int, list[int]] = {}
    alone: list[int] = []
    for i, (energy, mu) in enumerate(spectra):
        try:
            n, n_mu = len(energy), len(mu)
        except TypeError:
            n, n_mu = -1, 0
        if n == n_mu and n > 0:
            groups.setdefault(n, []).append(i)
        else:
            alone.append(i)
    blocks: list[tuple[list[int], np.ndarray, np.ndarray]] = []
    for n, idx in groups.items():
        try:
            e = stack_rows([spectra[i][0] for i in idx], n)
            m = stack_rows([spectra[i][1] for i in idx], n)
        except (TypeError, ValueError, OverflowError):
            alone.extend(idx)
            continue
        if e.shape != (len(idx), n) or m.shape != e.shape:
            alone.extend(idx)
            continue
        found = validate_rows(e, m, min_points)
        if any(err is not None for err in found):
            ok = [r for r, err in enumerate(found) if err is None]
            for i, err in zip(idx, found, strict=True):
                errors[i] = err
            idx, e, m = [idx[r] for r in ok], e[ok], m[ok]
        if idx:
            blocks.append((idx, e, m))
    for i in sorted(alone):
        try:
            e, m = validate_spectrum(spectra[i][0], spectra[i][1], min_points)
        except SpectrumError as exc:
            errors[i] = exc
            continue
        blocks.append(([i], e[None, :], m[None, :]))
    return errors, blocks


def stack_rows(rows: Sequence[Sequence[float] | np.ndarray], n: int) -> np.ndarray:
    """``rows`` (each of ``n`` numbers) as one float64 [len(rows), n] array, as ``np.asarray(rows, float64)``
    converts them (any conversion error is numpy's). Why: a request's spectra arrive as lists of Python
    floats, and ``array('d').fromlist`` copies those ~20 % faster than numpy's nested-list conversion (the
    largest single cost of the service's preprocessing); a value it does not take as a float (a string, an
    array) sends the whole block through numpy, so what is accepted and the value it becomes are numpy's."""
    if all(type(r) is list for r in rows):
        buf = array("d")
        try:
            for r in rows:
                buf.fromlist(r)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if len(buf) == len(rows) * n:
                return np.frombuffer(buf, dtype=np.float64).reshape(len(rows), n)
    return np.asarray(rows, dtype=np.float64)


def real_range(energy: np.ndarray, mu: np.ndarray, tol: float = 0.0) -> tuple[int, int]:
    """Indices [lo, hi] of the part of a spectrum that is not a copied (flat) run at either end.

    The OmniXAS processed spectra were ``np.interp``-ed onto a fixed grid, which copies the first
    and last FEFF values outward; those points carry no information about the energies they sit at.
    """
    lo, hi = real_ranges(energy[None, :], mu[None, :], tol)
    return int(lo[0]), int(hi[0])


def real_ranges(energy: np.ndarray, mu: np.ndarray, tol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`real_range` of ``k`` spectra of one length ([k, n] arrays) at once: (lo [k], hi [k])."""
    moving = np.abs(mu[:, 1:] - mu[:, :-1]) > tol
    n = mu.shape[1]
    if n < 2:  # nothing can move: the whole spectrum (as the single-spectrum rule: [0, n - 1])
        return np.zeros(len(mu), dtype=np.intp), np.full(len(mu), n - 1, dtype=np.intp)
    any_moving = moving.any(axis=1)
    lo = np.where(any_moving, moving.argmax(axis=1), 0)
    hi = np.where(any_moving, n - 1 - moving[:, ::-1].argmax(axis=1), n - 1)
    return lo, hi
