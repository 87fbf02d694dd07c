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
    materials: Sequence[tuple[np.ndarray, np.ndarray]], n_points: int, max_absorbers: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack ``(X [a_i, P], Z [a_i])`` per material into padded arrays (Z=0 and mask=0 on padding)."""
    a = max([len(z) for _, z in materials], default=1)
    a = max(a, max_absorbers or 1)
    n = len(materials)
    x = np.zeros((n, a, n_points), dtype=np.float32)
    z = np.zeros((n, a), dtype=np.int64)
    mask = np.zeros((n, a), dtype=np.float32)
    for i, (xi, zi) in enumerate(materials):
        k = len(zi)
        x[i, :k] = xi
        z[i, :k] = zi
        mask[i, :k] = 1.0
    return x, z, mask


def pad_has_spectrum(has: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Stack per-material ``has_spectrum`` vectors [a_i] into [batch, width] (0 on padding)."""
    out = np.zeros((len(has), width), dtype=np.float32)
    for i, h in enumerate(has):
        out[i, : len(h)] = h
    return out
