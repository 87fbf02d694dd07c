"""Feature vectors that some model families build from the padded per-absorber arrays.

Numpy only: the SVM trainers and the Predictor (which must not import the models) share these, so
a served SVM sees exactly the features it was trained on.
"""

from __future__ import annotations

import numpy as np

from xastopo.elements import N_TYPES


def concat_features(x: np.ndarray, z: np.ndarray, mask: np.ndarray, element_z: list[int]) -> np.ndarray:
    """[N, A, P] padded spectra → [N, len(element_z) · P], zero where an element is absent."""
    n, _, p = x.shape
    out = np.zeros((n, len(element_z) * p), dtype=np.float32)
    col = {zz: i for i, zz in enumerate(element_z)}
    for i in range(n):
        for a in range(z.shape[1]):
            if mask[i, a] > 0 and int(z[i, a]) in col:
                k = col[int(z[i, a])]
                out[i, k * p : (k + 1) * p] = x[i, a]
    return out


def type_features(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Atom-type presence: [N, 93] one-hot of the absorbing elements' Z."""
    out = np.zeros((z.shape[0], N_TYPES), dtype=np.float32)
    for i in range(z.shape[0]):
        out[i, z[i][mask[i] > 0]] = 1.0
    return out


def model_inputs(features: str, x: np.ndarray, z: np.ndarray, mask: np.ndarray,
                 element_z: list[int] | None = None, has_spectrum: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """Padded arrays → the exported graph's named inputs, for a family's ``features`` kind.

    ``padded_any`` (models that read any subset of edges) also takes ``has_spectrum``; when it is not
    given every present absorber is taken to have its spectrum.
    """
    if features == "padded":
        return {"spectra": x, "z": z, "mask": mask}
    if features == "padded_any":
        has = mask if has_spectrum is None else has_spectrum
        return {"spectra": x, "z": z, "mask": mask, "has_spectrum": np.asarray(has * mask, dtype=np.float32)}
    if features == "concat_spectra":
        if element_z is None:
            raise ValueError("concat_spectra features need the training element order (element_z)")
        return {"features": concat_features(x, z, mask, list(element_z))}
    if features == "type_presence":
        return {"features": type_features(z, mask)}
    raise ValueError(f"unknown feature kind {features!r}")
