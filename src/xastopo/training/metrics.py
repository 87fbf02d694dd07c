"""Evaluation: per-class precision/recall/F1, ROC/AUC, confusion matrix, per-element F1."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

from xastopo.elements import SYMBOLS

CLASSES = ("trivial", "topological")  # index = binary label y


def balanced_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """Threshold at the validation ROC point where fpr ≈ 1 − tpr (the paper's rule)."""
    if len(set(y.tolist())) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, prob)
    i = int(np.argmin(np.abs(fpr - (1 - tpr))))
    return float(min(max(thr[i], 1e-6), 1 - 1e-6))


def evaluate(y: np.ndarray, prob: np.ndarray, threshold: float, z: np.ndarray | None = None,
             mask: np.ndarray | None = None) -> dict:
    """Scores of one model on one split; with ``z``/``mask`` also per-element F1 of both classes."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(prob) >= threshold).astype(int)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    out: dict = {"n": int(len(y)), "threshold": float(threshold), "accuracy": float((pred == y).mean())}
    for k, name in enumerate(CLASSES):
        out[name] = {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
    out["macro_f1"] = float(np.mean(f))
    out["auc"] = float(roc_auc_score(y, prob)) if len(set(y.tolist())) == 2 else float("nan")
    out["confusion"] = confusion_matrix(y, pred, labels=[0, 1]).tolist()  # rows: true, cols: predicted
    if z is not None and mask is not None:
        out["per_element"] = per_element_f1(y, pred, z, mask)
        # the paper's per-element view, averaged over elements (each element weighs the same)
        out["per_element_mean_macro_f1"] = float(np.mean(
            [(v["f1_trivial"] + v["f1_topological"]) / 2 for v in out["per_element"].values()]))
    return out


def per_element_f1(y: np.ndarray, pred: np.ndarray, z: np.ndarray, mask: np.ndarray) -> dict:
    """F1 of both classes per absorbing element; a material counts once for each of its elements."""
    res: dict = {}
    for el in sorted(set(z[mask > 0].tolist())):
        rows = np.nonzero(((z == el) & (mask > 0)).any(axis=1))[0]
        _, _, f, s = precision_recall_fscore_support(y[rows], pred[rows], labels=[0, 1], zero_division=0)
        res[SYMBOLS[el - 1]] = {"n": int(len(rows)), "f1_trivial": float(f[0]), "f1_topological": float(f[1]),
                                "support_trivial": int(s[0]), "support_topological": int(s[1])}
    return res


def roc_points(y: np.ndarray, prob: np.ndarray) -> list[dict]:
    if len(set(np.asarray(y).tolist())) < 2:
        return []
    fpr, tpr, thr = roc_curve(y, prob)
    return [{"fpr": float(a), "tpr": float(b), "threshold": float(min(c, 1.0))}
            for a, b, c in zip(fpr, tpr, thr, strict=True)]
