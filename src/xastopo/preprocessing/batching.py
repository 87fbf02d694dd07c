"""Padded model inputs: [batch, max_absorbers, n_points] spectra, [batch, max_absorbers] Z, mask.

The same layout feeds PyTorch, ONNX Runtime, the CLI and the service, so a material with one
absorber and one with five travel in one batch. Models that read any subset of edges also take
``has_spectrum`` [batch, max_absorbers]: 1 where the absorber came with a spectrum, 0 where it enters
by its type only (its row of the spectra is then zeros).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_materials(
    materials: Sequence[tuple[np.ndarray, ...]], n_points: int, max_absorbers: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack ``(X [a_i, P], Z [a_i], ...)`` per material into padded arrays (Z=0 and mask=0 on padding);
    items after Z are ignored.

    Why each field is concatenated once and scattered, not copied material by material: a run of 256
    materials cost ~1,000 small numpy assignments, ~10 % of `xastopo predict`'s time at 4,096 materials
    (benchmarks/model_ort_vs_torch.py); the arrays are the same, bit for bit."""
    n = len(materials)
    widths = np.fromiter((len(m[1]) for m in materials), dtype=np.intp, count=n)
    a = max(int(widths.max(initial=1)), max_absorbers or 1)
    x = _padded([m[0] for m in materials], widths, a, np.float32, (n_points,), "spectra")
    z = _padded([m[1] for m in materials], widths, a, np.int64, (), "absorbers")
    return x, z, _mask(widths, a).astype(np.float32)


def pad_has_spectrum(has: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Stack per-material ``has_spectrum`` vectors [a_i] into [batch, width] (0 on padding)."""
    widths = np.fromiter((len(h) for h in has), dtype=np.intp, count=len(has))
    return _padded(list(has), widths, width, np.float32, (), "has_spectrum")


def pad_inputs(materials: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n_points: int,
               skip_type_only: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X [a_i, P], Z [a_i], has [a_i])`` per material → padded (x, z, mask, has_spectrum).

    ``skip_type_only``: a material whose absorbers all enter by their type (``has`` all 0) gets zero rows
    without its X being read or copied. Why: a model that reads ``has`` (``padded_any``) multiplies such rows
    by 0, and the builder makes them zeros anyway; composition-only batches (the planner's formulas) then
    skip the largest copy. The arrays are those of :func:`pad_materials` + :func:`pad_has_spectrum` wherever
    the rows with ``has`` 0 are zeros, and the answers of such a model the same for any finite rows. Pass
    False for a model that does not read ``has``."""
    n = len(materials)
    widths = np.fromiter((len(m[1]) for m in materials), dtype=np.intp, count=n)
    a = max(int(widths.max(initial=1)), 1)
    z = _padded([m[1] for m in materials], widths, a, np.int64, (), "absorbers")
    has = _padded([m[2] for m in materials], widths, a, np.float32, (), "has_spectrum")
    keep = _mask(widths, a)
    with_spectrum = np.flatnonzero(has.any(axis=1)) if skip_type_only else np.arange(n)
    if len(with_spectrum) == n:
        x = _padded([m[0] for m in materials], widths, a, np.float32, (n_points,), "spectra")
    else:
        x = np.zeros((n, a, n_points), dtype=np.float32)
        if len(with_spectrum):
            parts = [materials[i][0] for i in with_spectrum.tolist()]
            flat = _rows(parts, widths[with_spectrum], np.float32, (n_points,), "spectra", with_spectrum)
            x.reshape(n * a, n_points)[(with_spectrum[:, None] * a + np.arange(a))[keep[with_spectrum]]] = flat
    return x, z, keep.astype(np.float32), has


def _mask(widths: np.ndarray, width: int) -> np.ndarray:
    """[n, width] bool: True on each material's first ``widths[i]`` slots."""
    return np.arange(width) < widths[:, None]


def _rows(parts: list[np.ndarray], widths: np.ndarray, dtype: type, row: tuple[int, ...], what: str,
          index: np.ndarray | None = None) -> np.ndarray:
    """The materials' rows stacked [sum(widths), *row] (numpy's unsafe casting, as an assignment into a
    zeroed array would cast); a material with another number of rows than ``widths`` says, or rows of
    another shape, is a ValueError naming it (``index``: the materials' own indices, when a subset)."""
    lens = np.fromiter((len(p) for p in parts), dtype=np.intp, count=len(parts))
    if not np.array_equal(lens, widths):
        i = int(np.flatnonzero(lens != widths)[0])
        raise ValueError(f"{what}: material {i if index is None else int(index[i])} has {int(lens[i])} rows "
                         f"for {int(widths[i])} absorbers")
    flat = np.concatenate(parts, dtype=dtype, casting="unsafe")
    if flat.shape[1:] != row:
        raise ValueError(f"{what}: rows of shape {flat.shape[1:]}, expected {row}")
    return flat


def _padded(parts: list[np.ndarray], widths: np.ndarray, width: int, dtype: type, row: tuple[int, ...],
            what: str) -> np.ndarray:
    """Per-material rows [widths[i], *row] → [n, width, *row] of ``dtype``, zeros on padding."""
    n = len(parts)
    if n == 0:
        return np.zeros((0, width, *row), dtype=dtype)
    if int(widths.max()) > width:
        raise ValueError(f"{what}: a material has {int(widths.max())} absorbers, more than the width {width}")
    flat = _rows(parts, widths, dtype, row, what)
    if len(flat) == n * width:  # every material fills the width (runs ordered by width mostly do)
        return flat.reshape(n, width, *row)
    out = np.zeros((n * width, *row), dtype=dtype)
    out[np.flatnonzero(_mask(widths, width))] = flat
    return out.reshape(n, width, *row)
