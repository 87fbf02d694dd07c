"""The paper's baselines and the composition-only reference, on the same padded inputs.

- ``svm``: SVC on the per-element standardized spectra concatenated in a fixed element order,
  zero-filled where the material lacks that element.
- ``svm_type``: SVC on atom-type presence (one-hot Z). The paper copies the one-hots 200× to match
  the spectra's width; copying k times multiplies every squared distance by k, and with
  ``gamma="scale"`` (1 / (n_features · var)) the k in n_features cancels it, so one copy with
  ``gamma="scale"`` is the same classifier.
- ``pca_kmeans``: per element, PCA keeping ≥ 80 % variance, k-means with 2 clusters (train),
  clusters matched to classes by the Hungarian algorithm on class-size-normalized counts.
- ``composition``: gradient boosting on element presence of the formula.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from xastopo.preprocessing.features import concat_features, type_features  # noqa: F401 (re-export)


def hungarian_assignment(clusters: np.ndarray, labels: np.ndarray, n_clusters: int = 2,
                         n_classes: int = 2) -> np.ndarray:
    """Cluster → class map minimizing misclassification corrected for class imbalance.

    Each count is divided by its class size, so the matching maximizes balanced accuracy and a
    majority class cannot claim every cluster by size alone.
    """
    counts = np.zeros((n_clusters, n_classes))
    for c, y in zip(clusters, labels, strict=True):
        counts[int(c), int(y)] += 1
    sizes = counts.sum(axis=0)
    rates = counts / np.where(sizes > 0, sizes, 1)
    rows, cols = linear_sum_assignment(-rates)
    mapping = np.zeros(n_clusters, dtype=np.int64)
    mapping[rows] = cols
    return mapping


class PcaKMeans:
    """Per-element PCA + k-means(2) classifier with Hungarian cluster→class matching."""

    def __init__(self, explained_variance: float = 0.8, n_init: int = 10, seed: int = 0) -> None:
        self.explained_variance = explained_variance
        self.n_init = n_init
        self.seed = seed
        self.models: dict[int, tuple[PCA, KMeans, np.ndarray]] = {}

    def fit(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray, y: np.ndarray) -> PcaKMeans:
        for el in sorted(set(z[mask > 0].tolist())):
            rows, cols = np.nonzero((z == el) & (mask > 0))
            xs, ys = x[rows, cols], y[rows]
            if len(xs) < 3 or len(set(ys.tolist())) < 2:
                continue  # too few spectra or one class only: no clustering for this element
            pca = PCA(n_components=self.explained_variance, svd_solver="full").fit(xs)
            km = KMeans(n_clusters=2, n_init=self.n_init, random_state=self.seed).fit(pca.transform(xs))
            self.models[el] = (pca, km, hungarian_assignment(km.labels_, ys))
        return self

    def element_scores(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray) -> list[dict[int, float]]:
        """Per material, per element: P(topological) from relative distances to the two centroids."""
        out: list[dict[int, float]] = []
        for i in range(x.shape[0]):
            d: dict[int, float] = {}
            for a in range(z.shape[1]):
                el = int(z[i, a])
                if mask[i, a] <= 0 or el not in self.models:
                    continue
                pca, km, mapping = self.models[el]
                dist = km.transform(pca.transform(x[i, a][None]))[0]  # distance to each cluster
                topo = int(np.where(mapping == 1)[0][0]) if (mapping == 1).any() else 0
                triv = 1 - topo
                d[el] = float(dist[triv] / (dist[triv] + dist[topo] + 1e-12))
            out.append(d)
        return out

    def predict_proba(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Material score = mean over its clustered elements (0.5 where none has a model)."""
        return np.array([np.mean(list(d.values())) if d else 0.5 for d in self.element_scores(x, z, mask)])


_FORMULA_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")


def _all_z() -> dict[str, int]:
    """Z of every element (composition may hold transuranics, unlike absorbing elements)."""
    from pymatgen.core.periodic_table import Element

    return {e.symbol: e.Z for e in Element}


ALL_Z = _all_z()
N_COMPOSITION = max(ALL_Z.values()) + 1


def formula_elements(formula: str) -> list[str]:
    """Element symbols of a formula string such as 'Cu2 S1' or 'CuFeS2' (unknown symbols raise)."""
    els = [m.group(1) for m in _FORMULA_TOKEN.finditer(str(formula))]
    bad = [e for e in els if e not in ALL_Z]
    if bad:
        raise KeyError(f"unknown element(s) {bad} in formula {formula!r}")
    return sorted(set(els))


def composition_features(formulas: list[str]) -> np.ndarray:
    """Element presence, [N, max Z + 1] indexed by Z."""
    out = np.zeros((len(formulas), N_COMPOSITION), dtype=np.float32)
    for i, f in enumerate(formulas):
        for e in formula_elements(f):
            out[i, ALL_Z[e]] = 1.0
    return out
