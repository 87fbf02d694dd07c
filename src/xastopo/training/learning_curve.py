"""Per-element learning curves on the shipped validation/test materials, and the FEFF10 → FEFF9 transfer.

For one absorbing element, a support-vector classifier (the ``svm`` family's settings) reads that
element's standardized spectrum (the fitted Preprocessor of the pipeline) and is scored on the shipped
validation and test materials that have it. The training set grows in steps: subsets of the shipped
(FEFF9) training materials, then all of them plus FEFF10-simulated training materials, and finally the
simulated ones alone (does FEFF10 transfer to FEFF9?). Each step is repeated over random subsets;
the repeats' mean decision value per material is scored, with a bootstrap interval over materials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from xastopo.training import metrics


@dataclass
class ElementData:
    """One element's standardized spectra: shipped train/val/test and simulated train (X [n, P], y [n])."""

    element: str
    shipped: dict[str, tuple[np.ndarray, np.ndarray]]
    simulated: tuple[np.ndarray, np.ndarray]


def _fit_decision(x: np.ndarray, y: np.ndarray, cfg: dict, seed: int):
    from sklearn.svm import SVC

    clf = SVC(C=float(cfg["C"]), kernel=str(cfg["kernel"]), gamma=cfg["gamma"], class_weight="balanced",
              random_state=seed)
    clf.fit(x, y)
    # a monotone map of the decision value to (0, 1): AUC unchanged, the ROC threshold rule applies
    return lambda v: 1.0 / (1.0 + np.exp(-clf.decision_function(v)))


def scores(y: np.ndarray, s: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict:
    """AUC and macro-F1 (at ``threshold``) with 95 % bootstrap intervals over materials."""
    out: dict = {"n": int(len(y))}
    if len(set(y.tolist())) < 2:
        return {**out, "auc": None, "macro_f1": None}
    pred = (s >= threshold).astype(int)
    point = {"auc": float(roc_auc_score(y, s)), "macro_f1": float(f1_score(y, pred, average="macro"))}
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {"auc": [], "macro_f1": []}
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(set(y[i].tolist())) < 2:
            continue
        boots["auc"].append(roc_auc_score(y[i], s[i]))
        boots["macro_f1"].append(f1_score(y[i], pred[i], average="macro"))
    for k, v in point.items():
        lo, hi = np.percentile(boots[k], [2.5, 97.5]) if boots[k] else (np.nan, np.nan)
        out[k] = {"value": v, "lo": float(lo), "hi": float(hi)}
    return out


def step(d: ElementData, n_shipped: int, n_sim: int, cfg: dict, repeats: int, seed: int, n_boot: int) -> dict:
    """Train on ``n_shipped`` shipped + ``n_sim`` simulated training materials (random subsets, each
    repeat its own), score validation and test with the repeats' mean decision values."""
    xs, ys = d.shipped["train"]
    xm, ym = d.simulated
    dec = {s: [] for s in ("val", "test")}
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        i = rng.permutation(len(ys))[:n_shipped]
        j = rng.permutation(len(ym))[:n_sim]
        x, y = np.concatenate([xs[i], xm[j]]), np.concatenate([ys[i], ym[j]])
        if len(set(y.tolist())) < 2:
            continue
        f = _fit_decision(x, y, cfg, seed)
        for s in dec:
            dec[s].append(f(d.shipped[s][0]))
    out = {"element": d.element, "n_shipped": int(n_shipped), "n_simulated": int(n_sim),
           "n_train": int(n_shipped + n_sim), "repeats": len(dec["val"])}
    if not dec["val"]:
        return out
    s_val, s_test = (np.mean(dec[s], axis=0) for s in ("val", "test"))
    y_val, y_test = d.shipped["val"][1], d.shipped["test"][1]
    thr = metrics.balanced_threshold(y_val, s_val) if len(set(y_val.tolist())) == 2 else 0.5
    out["val"] = scores(y_val, s_val, thr, n_boot, seed)
    out["test"] = scores(y_test, s_test, thr, n_boot, seed)
    return out


def plan(n_shipped: int, n_sim: int, fractions: list[float], sim_steps: list[int]) -> list[tuple[int, int, str]]:
    """(shipped, simulated, setting) steps: shipped subsets, then all shipped + simulated in steps, then
    simulated alone (all of it)."""
    out = [(max(2, int(round(f * n_shipped))), 0, "shipped") for f in fractions if f < 1.0]
    out.append((n_shipped, 0, "shipped"))
    out += [(n_shipped, k, "shipped+simulated") for k in sim_steps if k < n_sim]
    if n_sim:
        out += [(n_shipped, n_sim, "shipped+simulated"), (0, n_sim, "simulated only")]
    return out


def transfer_checks(shipped_train: tuple[np.ndarray, np.ndarray], simulated: tuple[np.ndarray, np.ndarray],
                    paired: tuple[np.ndarray, np.ndarray], cfg: dict, seed: int, folds: int = 5) -> dict:
    """Why the FEFF10 spectra do or do not transfer, on one element:

    - 5-fold CV AUC within the shipped (FEFF9) training spectra and within the simulated (FEFF10) ones
      (is each set learnable on its own?);
    - a model fitted on the shipped training spectra scored on the simulated ones (does FEFF9 read FEFF10?);
    - on materials computed by both codes (``paired``: their FEFF9 and FEFF10 vectors, same order), the
      median per-material correlation of the standardized spectra and the correlation of that model's
      decision values.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import SVC

    def clf() -> SVC:
        return SVC(C=float(cfg["C"]), kernel=str(cfg["kernel"]), gamma=cfg["gamma"], class_weight="balanced")

    out: dict = {}
    for name, (x, y) in (("shipped", shipped_train), ("simulated", simulated)):
        if len(y) >= 2 * folds and min(np.bincount(y, minlength=2)) >= folds:
            cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
            out[f"cv_auc_{name}"] = float(np.mean(cross_val_score(clf(), x, y, cv=cv, scoring="roc_auc")))
            out[f"n_{name}"] = int(len(y))
    xs, ys = shipped_train
    xm, ym = simulated
    if len(set(ys.tolist())) == 2 and len(set(ym.tolist())) == 2:
        model = clf().fit(xs, ys)
        out["shipped_model_on_simulated_auc"] = float(roc_auc_score(ym, model.decision_function(xm)))
        a, b = paired
        if len(a) >= 3:
            r = [float(np.corrcoef(a[i], b[i])[0, 1]) for i in range(len(a))]
            out["paired_materials"] = int(len(a))
            out["paired_median_r"] = float(np.median(r))
            out["paired_decision_r"] = float(np.corrcoef(model.decision_function(a), model.decision_function(b))[0, 1])
    return out
