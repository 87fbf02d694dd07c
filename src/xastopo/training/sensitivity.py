"""Sensitivity of the classification to the energy sampling (retraining), with bootstrap intervals.

The paper reports that ~5 eV sampling suffices. Here the paper's network (the ``nn`` family, on the
shipped spectra, its own params block) is refitted from the preprocessing on at each ``n_points``
over the same window, and scored on the shipped test materials at its validation-ROC threshold. F1
of each class comes with a percentile bootstrap interval (the test split is small).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from xastopo.preprocessing.dataset import featurize_split, fit_preprocessor
from xastopo.preprocessing.preprocessor import Preprocessor
from xastopo.training import metrics

SPLITS = ("train", "val", "test")


def f1_with_intervals(y: np.ndarray, prob: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict:
    """F1 of both classes and macro-F1 with 95 % percentile bootstrap intervals over materials."""
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, float)
    point = metrics.evaluate(y, prob, threshold)
    rng = np.random.default_rng(seed)
    boots = {"topological": [], "trivial": [], "macro_f1": []}
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(set(y[i].tolist())) < 2:
            continue
        ev = metrics.evaluate(y[i], prob[i], threshold)
        boots["topological"].append(ev["topological"]["f1"])
        boots["trivial"].append(ev["trivial"]["f1"])
        boots["macro_f1"].append(ev["macro_f1"])
    out = {"n": int(len(y)), "threshold": float(threshold)}
    for k, vals in boots.items():
        v = point[k]["f1"] if k != "macro_f1" else point["macro_f1"]
        lo, hi = np.percentile(vals, [2.5, 97.5]) if vals else (float("nan"), float("nan"))
        out[k] = {"f1": float(v), "lo": float(lo), "hi": float(hi)}
    out["auc"] = float(point["auc"])
    return out


def sampling_point(params: dict, records: pd.DataFrame, n_points: int, seed: int, n_boot: int,
                   train_fn: Callable[..., tuple[np.ndarray, np.ndarray]]) -> dict:
    """Refit the preprocessing at ``n_points`` over the same window, retrain, score the test split.

    ``records``: the assembled records with a ``split`` column (the featurize stage's selection);
    ``train_fn(params, train, val, test, n_points) -> (p_val, p_test)`` fits the model.
    """
    p = {**params, "featurize": {**params["featurize"], "n_points": int(n_points)}}
    pre, _ = fit_preprocessor(Preprocessor.from_params(p), records[records["split"] == "train"])
    data = {s: featurize_split(pre, records[records["split"] == s], desc=f"{n_points} pts {s}")[0] for s in SPLITS}
    p_val, p_test = train_fn(p, data["train"], data["val"], data["test"], int(n_points))
    thr = metrics.balanced_threshold(data["val"]["y"], p_val)
    window = float(params["featurize"]["window_ev"])
    return {"n_points": int(n_points), "spacing_ev": window / (int(n_points) - 1),
            "test": f1_with_intervals(data["test"]["y"], p_test, thr, n_boot, seed),
            "val_macro_f1": float(metrics.evaluate(data["val"]["y"], p_val, thr)["macro_f1"])}


def train_nn_at(cfg: dict, seed: int) -> Callable:
    """The ``nn`` family's network with its own params block (``cfg``), CPU, seeded; returns a train_fn."""

    def fit(params: dict, train: dict, val: dict, test: dict, n_points: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from xastopo.models.nn import build_net
        from xastopo.training.nn_trainer import predict_proba, set_determinism, train_nn

        set_determinism(seed, cfg.get("threads"))
        net = build_net({"nn": cfg}, n_points, use_spectra=True)
        net, _, _ = train_nn(net, train, val, lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]),
                             batch_size=int(cfg["batch_size"]), max_epochs=int(cfg["max_epochs"]),
                             patience=int(cfg["patience"]), seed=seed, device=torch.device("cpu"))
        return predict_proba(net, val, torch.device("cpu")), predict_proba(net, test, torch.device("cpu"))

    return fit
