"""What the export stage adds beside the model for people: the training class means and a model card.

* ``class_means.json`` — per element, the mean training spectrum (after preprocessing on the model's
  window, edge-step units, i.e. standardization undone) of its topological materials, of its trivial
  materials and of both, with their counts. The web page draws a user's spectrum beside them, and
  :mod:`xastopo.explain` uses the both-class mean as the attribution baseline.
* ``model_card.json`` — training data counts (materials, with a spectrum, per class and per element),
  the test metrics and calibration (reliability curve, ECE/Brier) of the champion's metrics file, the
  uncertainty check, and the limits a user must know, derived from the fitted preprocessor.

Both are read from files the pipeline already wrote (``data/features/train_any.npz`` or
``train.npz``, ``metrics/<family>.json``); their checksums go into ``metadata.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xastopo.artifacts import sha256_file
from xastopo.elements import SYMBOLS
from xastopo.preprocessing import preprocessor as preprocessing
from xastopo.preprocessing.preprocessor import Preprocessor

CLASSES = {1: "topological", 0: "trivial"}


def class_means(train: dict, pre: Preprocessor) -> dict:
    """Mean training spectrum per element and class (edge-step units) from padded training arrays
    ``{X, Z, mask, y[, has_spectrum]}`` (standardized as the model reads them)."""
    x, z, mask, y = train["X"], train["Z"], train["mask"], np.asarray(train["y"])
    has = train.get("has_spectrum")
    present = (mask > 0) if has is None else (mask > 0) & (has > 0)
    out: dict = {"version": 1, "n_points": pre.n_points, "units": "edge step (normalized, not standardized)",
                 "elements": {}}
    for el in sorted(pre.elements):
        zz = SYMBOLS.index(el) + 1
        mats, absorber = np.nonzero(present & (z == zz))
        if len(mats) == 0:
            continue
        w = pre.elements[el]
        spectra = x[mats, absorber].astype(np.float64) * w.std + w.mean
        cls = y[mats]
        entry = {"energy": [round(float(v), 4) for v in pre.grid(el)],
                 "all": {"n": int(len(mats)), "mean": [float(v) for v in spectra.mean(axis=0)]}}
        for label, name in CLASSES.items():
            sel = cls == label
            entry[name] = {"n": int(sel.sum()),
                           "mean": [float(v) for v in spectra[sel].mean(axis=0)] if sel.any() else None}
        out["elements"][el] = entry
    return out


def training_counts(train: dict) -> dict:
    """Materials in the training split, with at least one spectrum, per class."""
    y = np.asarray(train["y"])
    has = train.get("has_spectrum")
    with_spectrum = (np.asarray(has).sum(axis=1) > 0) if has is not None else np.ones(len(y), bool)
    return {"materials": int(len(y)), "with_spectrum": int(with_spectrum.sum()),
            "topological": int((y == 1).sum()), "trivial": int((y == 0).sum()),
            "with_spectrum_topological": int((with_spectrum & (y == 1)).sum()),
            "with_spectrum_trivial": int((with_spectrum & (y == 0)).sum())}


def limits(pre: Preprocessor, metrics: dict) -> list[str]:
    """Plain-language limits of the model, from the fitted preprocessor and its metrics. "Few training
    spectra" is :meth:`Preprocessor.few_training`, the rule the answers' warnings use."""
    els = ", ".join(f"{el} ({pre.elements[el].n_train})" for el in sorted(pre.elements))
    few = [el for el in sorted(pre.elements) if pre.few_training(el)]
    min_train = preprocessing.MIN_TRAIN_WARNING
    out = [f"Spectra are read only for elements with training spectra: {els} (training materials in brackets); "
           "any other element of the formula enters by its type only.",
           "Each spectrum must cover the element's window (absolute energy, eV, within "
           f"{pre.max_extrapolation_ev:g} eV at either end); spectra are K-edge XANES computed like the "
           "training set (FEFF).",
           "The label is a calibrated probability against a threshold fitted on validation; the uncertainty "
           "is the spread of the ensemble and ranks answers by trust, it is not an error bar."]
    if few:
        out.append(f"Few training spectra (< {min_train} materials): {', '.join(few)} — answers resting on "
                   "these spectra are weak.")
    test = metrics.get("test") or {}
    if test.get("n"):
        out.append(f"Test scores come from {test['n']} materials with shipped spectra; each F1 is uncertain by "
                   "several hundredths.")
    return out


def model_card(train: dict, pre: Preprocessor, metrics: dict) -> dict:
    """The card's numbers (``model_card.json``): counts, metrics, calibration, uncertainty, limits."""
    cal = (metrics.get("calibration") or {}).get("test") or {}
    after, before = cal.get("after") or {}, cal.get("before") or {}
    return {
        "version": 1,
        "training": training_counts(train),
        "training_spectra_per_element": {el: int(pre.elements[el].n_train) for el in sorted(pre.elements)},
        "test": metrics.get("test"),
        "calibration_test": {"curve": after.get("curve"), "ece": after.get("ece"), "brier": after.get("brier"),
                             "ece_before": before.get("ece"), "brier_before": before.get("brier")},
        "uncertainty": metrics.get("uncertainty"),
        "limits": limits(pre, metrics),
    }


def write_model_card(out_dir: Path, train_npz: Path, pre: Preprocessor, metrics: Path | dict) -> dict:
    """Write class_means.json and model_card.json into the export and record their checksums in its
    metadata.json (written by :func:`xastopo.export.onnx_export.finalize` just before). ``metrics``: the
    champion's metrics (``champion.json`` carries them, so the export depends on no other family's
    metrics file), or a path to a metrics file."""
    with np.load(train_npz, allow_pickle=False) as f:
        train = {k: f[k] for k in f.files}
    if isinstance(metrics, Path):
        metrics = json.loads(metrics.read_text()) if metrics.is_file() else {}
    (out_dir / "class_means.json").write_text(json.dumps(class_means(train, pre)) + "\n")
    (out_dir / "model_card.json").write_text(json.dumps(model_card(train, pre, metrics), indent=2) + "\n")
    meta_path = out_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["class_means_sha256"] = sha256_file(out_dir / "class_means.json")
    meta["model_card_sha256"] = sha256_file(out_dir / "model_card.json")
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
