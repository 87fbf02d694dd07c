"""Featurize assembled records: fit the Preprocessor on train, then turn every split into arrays."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from xastopo.data.validation import SpectrumError
from xastopo.elements import atomic_number
from xastopo.preprocessing.batching import pad_has_spectrum, pad_materials
from xastopo.preprocessing.preprocessor import Preprocessor


def record_sites(row) -> list[tuple[np.ndarray, np.ndarray, float]]:
    return [(np.asarray(e, float), np.asarray(m, float), float(w))
            for e, m, w in zip(row.energy, row.mu, row.weights, strict=True)]


def fit_preprocessor(pre: Preprocessor, train: pd.DataFrame) -> tuple[Preprocessor, Counter]:
    """Fit windows and standardization on the training records only; (pre, rejections per reason)."""
    pre.fit([(r.absorbing_element, record_sites(r)) for r in train.itertuples(index=False)])
    return pre, pre.rejected_


def featurize_split(pre: Preprocessor, records: pd.DataFrame, desc: str = "featurize") -> tuple[dict, Counter]:
    """Records of one split → padded arrays and per-reason rejection counts.

    An absorber that cannot be featurized (window not covered, element never seen in training) is
    dropped and counted; a material left with no absorber is dropped and counted too.
    """
    rejects: Counter = Counter()
    per_mat: dict[str, list[tuple[int, np.ndarray]]] = {}
    meta: dict[str, tuple[int, int]] = {}
    for r in tqdm(list(records.itertuples(index=False)), desc=desc, unit="rec", mininterval=2.0):
        meta[r.mp_id] = (int(r.y), int(r.y3))
        try:
            x = pre.transform(r.absorbing_element, record_sites(r))
        except SpectrumError as exc:
            rejects[f"absorber_{exc.reason}"] += 1
            continue
        per_mat.setdefault(r.mp_id, []).append((atomic_number(r.absorbing_element), x))
    ids = sorted(per_mat)
    rejects["material_without_usable_absorber"] = len(set(meta) - set(per_mat))
    mats = []
    for m in ids:
        items = sorted(per_mat[m], key=lambda t: t[0])
        mats.append((np.stack([x for _, x in items]), np.array([z for z, _ in items])))
    x, z, mask = pad_materials(mats, pre.n_points)
    y = np.array([meta[m][0] for m in ids], dtype=np.int64)
    y3 = np.array([meta[m][1] for m in ids], dtype=np.int64)
    return {"X": x, "Z": z, "mask": mask, "y": y, "y3": y3, "ids": np.array(ids, dtype=str)}, rejects


def featurize_any(pre: Preprocessor, materials: pd.DataFrame, records: pd.DataFrame,
                  desc: str = "featurize") -> tuple[dict, Counter]:
    """Every material of one split → padded arrays with every element of its composition an absorber.

    ``materials``: rows (mp_id, elements, y, y3), ``elements`` space-separated; ``records``: the
    assembled spectra records of those materials. An element with a record the preprocessor can turn
    into a standardized spectrum has ``has_spectrum`` 1; any other element (no spectrum, or one that
    cannot be used: counted by reason) enters by type with a zero row and ``has_spectrum`` 0.
    """
    rejects: Counter = Counter()
    spectra: dict[tuple[str, str], np.ndarray] = {}
    for r in tqdm(list(records.itertuples(index=False)), desc=desc, unit="rec", mininterval=2.0):
        try:
            spectra[(r.mp_id, r.absorbing_element)] = pre.transform(r.absorbing_element, record_sites(r))
        except SpectrumError as exc:
            rejects[f"absorber_{exc.reason}"] += 1
    rec_els = records.groupby("mp_id")["absorbing_element"].apply(set).to_dict() if len(records) else {}
    mats, has = [], []
    zero = np.zeros(pre.n_points, dtype=np.float32)
    for m in materials.itertuples(index=False):
        els = sorted(set(str(m.elements).split()) | rec_els.get(m.mp_id, set()), key=atomic_number)
        rows = [spectra.get((m.mp_id, el)) for el in els]
        mats.append((np.stack([zero if x is None else x for x in rows]), np.array([atomic_number(e) for e in els])))
        has.append(np.array([x is not None for x in rows], dtype=np.float32))
    x, z, mask = pad_materials(mats, pre.n_points)
    rejects["materials_with_a_spectrum"] = int(sum(h.any() for h in has))
    return {"X": x, "Z": z, "mask": mask, "has_spectrum": pad_has_spectrum(has, z.shape[1]),
            "y": materials["y"].to_numpy(np.int64), "y3": materials["y3"].to_numpy(np.int64),
            "ids": materials["mp_id"].to_numpy(dtype=str)}, rejects


def save_arrays(arrays: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def load_features(path: str | Path, pre: Preprocessor) -> dict[str, np.ndarray]:
    """A featurized split, checked against the fitted preprocessor that made it (``n_points``)."""
    arrays = load_arrays(Path(path))
    width = int(arrays["X"].shape[-1])
    if width != pre.n_points:
        raise ValueError(f"{path}: spectra have {width} points but the fitted preprocessor has n_points="
                         f"{pre.n_points}; the features and models/preprocessor.json are from different "
                         "featurize runs (run `dvc repro featurize`)")
    return arrays
