"""The trainers of the model families (``xastopo.families`` names them: ``trainer(family, ctx)``).

Each fits one family on the train split, scores val and test, picks its decision threshold by its
own params block's ``threshold`` rule, saves the model under ``ctx.mdir`` and logs it to the active
MLflow run. Heavy libraries (torch, scikit-learn, MLflow) are imported inside the trainers, so a
family only loads what it needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from xastopo.config import raw_path
from xastopo.data.labels import usable_labels
from xastopo.elements import SYMBOLS
from xastopo.families import Family
from xastopo.preprocessing.features import model_inputs
from xastopo.training import metrics, plots, tracking

SCORED = ("val", "test")


@dataclass
class Context:
    """What every trainer needs besides its own parameters.

    ``n_points`` is the fitted preprocessor's (``models/preprocessor.json``); ``train_el`` the
    absorbing elements of the training materials in Z order (the SVM's feature layout).
    """

    params: dict
    data: dict[str, dict]
    seed: int
    n_points: int
    train_el: list[int]
    mdir: Path


@dataclass
class Trained:
    """A trainer's result: val/test probabilities, the decision threshold, extra facts, the logged model."""

    probs: dict[str, np.ndarray]
    threshold: float
    extra: dict
    info: object


def choose_threshold(rule, y_val: np.ndarray, p_val: np.ndarray) -> float:
    """``val_roc``: the balanced point of the validation ROC (the paper's rule); a number: that number."""
    return metrics.balanced_threshold(y_val, p_val) if rule == "val_roc" else float(rule)


def spectra_signature(a: dict, probs: np.ndarray):
    from mlflow.models import infer_signature

    return infer_signature({"spectra": a["X"][:2], "z": a["Z"][:2], "mask": a["mask"][:2]},
                           probs[:2].astype(np.float32))


def composition_data(params: dict, exclude: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Formulas of every usable labeled material (:func:`xastopo.data.composition.material_formulas`: the
    labels' formula, else the CIF's formula_sum, else the POSCAR's; the one precedence of training,
    screening and the literature table). (train rows, all rows)."""
    from xastopo.data.composition import material_formulas

    labels = pd.read_csv(raw_path(params, "labels_csv"))
    lab, _ = usable_labels(labels)
    lab = lab.merge(material_formulas(labels, raw_path(params, "structures"), raw_path(params, "site_structures")),
                    on="mp_id", how="inner")
    return lab[~lab["mp_id"].isin(exclude)].reset_index(drop=True), lab


def _epoch_logger(y_val: np.ndarray):
    """Per-epoch MLflow metrics of the network: losses, validation F1 at 0.5, epoch time."""
    import mlflow

    def on_epoch(rec: dict) -> None:
        ev = metrics.evaluate(y_val, rec["val_prob"], 0.5)
        mlflow.log_metrics({"train_loss": rec["train_loss"], "val_loss": rec["val_loss"],
                            "val_macro_f1_at_0.5": ev["macro_f1"],
                            "val_topological_f1_at_0.5": ev["topological"]["f1"],
                            "val_trivial_f1_at_0.5": ev["trivial"]["f1"],
                            "epoch_seconds": rec["seconds"]}, step=rec["epoch"])

    return on_epoch


def train_network(fam: Family, ctx: Context) -> Trained:
    """The paper's NN (reads the spectra) or its atom-type-only ablation (``reads_spectra`` False)."""
    import mlflow
    import torch

    from xastopo.models.nn import build_net
    from xastopo.training.nn_trainer import default_device, predict_proba, set_determinism, train_nn

    data, cfg = ctx.data, dict(ctx.params[fam.params])
    set_determinism(ctx.seed, cfg.get("threads"))
    net = build_net({"nn": cfg}, ctx.n_points, use_spectra=fam.reads_spectra)
    mlflow.log_params(cfg)
    net, history, best = train_nn(
        net, data["train"], data["val"], lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]),
        batch_size=int(cfg["batch_size"]), max_epochs=int(cfg["max_epochs"]), patience=int(cfg["patience"]),
        seed=ctx.seed, device=default_device(), on_epoch=_epoch_logger(data["val"]["y"]))
    net = net.cpu()
    probs = {s: predict_proba(net, data[s], torch.device("cpu")) for s in SCORED}
    thr = choose_threshold(cfg["threshold"], data["val"]["y"], probs["val"])
    plots.loss_figure(history, ctx.mdir / "loss.png", f"{fam.name} loss")
    mlflow.log_artifact(str(ctx.mdir / "loss.png"), "plots")
    torch.save({"state_dict": net.state_dict(), "config": cfg, "n_points": ctx.n_points,
                "use_spectra": fam.reads_spectra}, ctx.mdir / "model.pt")
    info = mlflow.pytorch.log_model(net, name="model", signature=spectra_signature(data["val"], probs["val"]),
                                    serialization_format="pickle", pip_requirements=tracking.PIP_REQUIREMENTS)
    extra = {"best_epoch": best, "epochs_run": len(history),
             "mean_epoch_seconds": float(np.mean([h["seconds"] for h in history]))}
    return Trained(probs, thr, extra, info)


def train_svm(fam: Family, ctx: Context) -> Trained:
    """SVC on the family's feature vector: concatenated spectra (``svm``) or atom-type presence."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.svm import SVC

    data, cfg = ctx.data, ctx.params[fam.params]
    element_z = ctx.train_el if fam.features == "concat_spectra" else None

    def feats(a: dict) -> np.ndarray:
        return model_inputs(fam.features, a["X"], a["Z"], a["mask"], element_z)["features"]

    clf = SVC(C=float(cfg["C"]), kernel=str(cfg["kernel"]), gamma=cfg["gamma"], class_weight="balanced",
              probability=True, random_state=ctx.seed)
    clf.fit(feats(data["train"]), data["train"]["y"])
    probs = {s: clf.predict_proba(feats(data[s]))[:, 1] for s in SCORED}
    thr = choose_threshold(cfg["threshold"], data["val"]["y"], probs["val"])
    xv = feats(data["val"])
    mlflow.log_params({**cfg, "class_weight": "balanced", "n_features": xv.shape[1]})
    joblib.dump({"model": clf, "element_z": element_z, "features": fam.features}, ctx.mdir / "model.joblib")
    info = mlflow.sklearn.log_model(clf, name="model", signature=infer_signature(xv[:2], probs["val"][:2]),
                                    pip_requirements=tracking.PIP_REQUIREMENTS)
    return Trained(probs, thr, {"element_z": element_z}, info)


def train_pca_kmeans(fam: Family, ctx: Context) -> Trained:
    """Per-element PCA + k-means(2) with Hungarian cluster→class matching."""
    import mlflow

    from xastopo.models.baselines import PcaKMeans

    data, cfg = ctx.data, ctx.params[fam.params]
    mdl = PcaKMeans(float(cfg["explained_variance"]), int(cfg["n_init"]), ctx.seed)
    mdl.fit(data["train"]["X"], data["train"]["Z"], data["train"]["mask"], data["train"]["y"])
    probs = {s: mdl.predict_proba(data[s]["X"], data[s]["Z"], data[s]["mask"]) for s in SCORED}
    thr = choose_threshold(cfg["threshold"], data["val"]["y"], probs["val"])  # 0.5: nearest matched centroid
    mlflow.log_params(cfg)
    joblib.dump(mdl, ctx.mdir / "model.joblib")
    info = mlflow.sklearn.log_model(mdl, name="model", pip_requirements=tracking.PIP_REQUIREMENTS,
                                    skops_trusted_types=["xastopo.models.baselines.PcaKMeans"],
                                    signature=spectra_signature(data["val"], probs["val"]))
    extra = {"n_components": {str(k): int(v[0].n_components_) for k, v in mdl.models.items()}}
    return Trained(probs, thr, extra, info)


def _composition_scores(clf, fmap: pd.Series, a: dict) -> tuple[np.ndarray, int]:
    """Scores of one split's materials by formula; (probabilities, materials without any formula).

    A material with no formula anywhere (a retired id) is scored on the absorbing elements we know.
    """
    from xastopo.models.baselines import composition_features

    known = [fmap.get(m) or "".join(SYMBOLS[int(v) - 1] for v in zz[mm > 0])
             for m, zz, mm in zip(a["ids"], a["Z"], a["mask"], strict=True)]
    n_missing = int(sum(fmap.get(m) is None for m in a["ids"]))
    return clf.predict_proba(composition_features(known))[:, 1], n_missing


def train_composition(fam: Family, ctx: Context) -> Trained:
    """Gradient boosting on element presence, trained on every labeled material outside our val/test."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from xastopo.models.baselines import composition_features

    data, cfg = ctx.data, ctx.params[fam.params]
    train_df, all_df = composition_data(ctx.params, set(data["val"]["ids"]) | set(data["test"]["ids"]))
    clf = HistGradientBoostingClassifier(
        max_iter=int(cfg["max_iter"]), learning_rate=float(cfg["learning_rate"]),
        max_leaf_nodes=int(cfg["max_leaf_nodes"]), class_weight="balanced", random_state=ctx.seed)
    with threadpool_limits(limits=int(cfg["threads"])):
        clf.fit(composition_features(train_df["formula"].tolist()), train_df["y"])
    fmap = all_df.set_index("mp_id")["formula"]
    scored = {s: _composition_scores(clf, fmap, data[s]) for s in SCORED}
    probs = {s: p for s, (p, _) in scored.items()}
    thr = choose_threshold(cfg["threshold"], data["val"]["y"], probs["val"])
    mlflow.log_params({**cfg, "n_train_materials": len(train_df)})
    joblib.dump(clf, ctx.mdir / "model.joblib")
    xf = composition_features(train_df["formula"].tolist()[:2])
    info = mlflow.sklearn.log_model(
        clf, name="model", signature=infer_signature(xf, probs["val"][:2]), pip_requirements=tracking.PIP_REQUIREMENTS,
        skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"])
    extra = {"n_train_materials": int(len(train_df)), "n_formula_missing": {s: n for s, (_, n) in scored.items()}}
    return Trained(probs, thr, extra, info)


def _align(ids_from: np.ndarray, values: np.ndarray, ids_to: np.ndarray) -> np.ndarray:
    """``values`` (in the order of ``ids_from``) in the order of ``ids_to``."""
    pos = {m: i for i, m in enumerate(ids_from.tolist())}
    return values[[pos[m] for m in ids_to.tolist()]]


def _train_members(cfg: dict, any_data: dict, ctx: Context) -> tuple[list, list[dict]]:
    """The ensemble's members, each seeded ``seed + i``; their training facts."""
    import mlflow

    from xastopo.models.nn import build_any_edge_net
    from xastopo.training.any_edge import train_member
    from xastopo.training.nn_trainer import set_determinism

    nets, facts = [], []
    for i in range(int(cfg["ensemble"])):
        set_determinism(ctx.seed + i, cfg.get("threads"))
        net = build_any_edge_net(cfg, ctx.n_points)

        def log(rec: dict, i: int = i) -> None:
            mlflow.log_metrics({f"m{i}_train_loss": rec["train_loss"], f"m{i}_val_loss": rec["val_loss"]},
                               step=rec["epoch"])

        net, history, best = train_member(net, any_data["train"], any_data["val"], cfg, ctx.seed + i, log)
        nets.append(net)
        facts.append({"best_epoch": best, "epochs_run": len(history),
                      "mean_epoch_seconds": float(np.mean([h["seconds"] for h in history]))})
    return nets, facts


def _calibration(member_logits: dict, any_data: dict, ctx: Context, name: str) -> tuple[tuple[float, float], dict]:
    """(T, b) fitted on validation; ECE/Brier before (T = 1, b = 0) and after on val and test, with plots."""
    from xastopo.training.any_edge import calibration_stats, ensemble_probs, fit_calibration

    temp = fit_calibration(member_logits["val"], any_data["val"]["y"])
    stats = {}
    for s in ("val", "test"):
        y = any_data[s]["y"]
        stats[s] = {"before": calibration_stats(y, ensemble_probs(member_logits[s], 1.0)[0]),
                    "after": calibration_stats(y, ensemble_probs(member_logits[s], *temp)[0])}
    pdir = Path("plots") / name
    pdir.mkdir(parents=True, exist_ok=True)
    plots.reliability_figure(stats["test"], f"{name}: reliability (test, {len(any_data['test']['y'])} materials)",
                             pdir / "calibration_test.png")
    rows = [{**c, "calibration": k} for k in ("before", "after") for c in stats["test"][k]["curve"]]
    (pdir / "calibration_test.json").write_text(json.dumps({"calibration": rows}, indent=1) + "\n")
    return temp, stats


def train_network_any(fam: Family, ctx: Context) -> Trained:
    """``nn_any``: every element an absorber, spectra where present, trained on every labeled material;
    a calibrated deep ensemble (probability and uncertainty). Scored like the other families on the
    shipped val/test materials; the three test sets and the ablations go to the metrics' extras."""
    import mlflow
    import torch

    from xastopo.models.nn import CalibratedEnsemble
    from xastopo.preprocessing.dataset import load_arrays
    from xastopo.training.any_edge import ablations, ensemble_probs, logits, test_sets

    cfg = dict(ctx.params[fam.params])
    any_data = {s: load_arrays(Path("data/features") / f"{s}_any.npz") for s in ("train", "val", "test")}
    mlflow.log_params({**cfg, "n_train_materials": len(any_data["train"]["y"])})
    nets, facts = _train_members(cfg, any_data, ctx)
    member_logits = {s: np.stack([logits(n, any_data[s]) for n in nets]) for s in SCORED}
    temp, calib = _calibration(member_logits, any_data, ctx, fam.name)
    p_all = {s: ensemble_probs(member_logits[s], *temp) for s in SCORED}
    thr = choose_threshold(cfg["threshold"], any_data["val"]["y"], p_all["val"][0])
    probs = {s: _align(any_data[s]["ids"], p_all[s][0], ctx.data[s]["ids"]) for s in SCORED}

    def predict(a: dict) -> np.ndarray:
        return ensemble_probs(np.stack([logits(n, a) for n in nets]), *temp)[0]

    sets = test_sets(any_data["test"], ctx.data["test"]["ids"])
    extra = {"members": facts, "temperature": temp[0], "calibration_bias": temp[1], "calibration": calib,
             "n_train_materials": int(len(any_data["train"]["y"])),
             "test_sets": ablations(any_data["test"], sets, predict, thr, int(cfg["n_boot"]), ctx.seed),
             "uncertainty": uncertainty_check(any_data["test"]["y"], *p_all["test"], thr)}
    log_any_edge_results(extra, Path("plots") / fam.name / "calibration_test.png")
    model = CalibratedEnsemble(nets, *temp).eval()
    torch.save({"config": cfg, "n_points": ctx.n_points, "members": [n.state_dict() for n in nets],
                "temperature": temp[0], "bias": temp[1]}, ctx.mdir / "model.pt")
    pd.DataFrame({"mp_id": any_data["test"]["ids"], "y": any_data["test"]["y"], "prob": p_all["test"][0],
                  "uncertainty": p_all["test"][1]}).to_csv(ctx.mdir / "predictions_test_all.csv", index=False)
    info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                    pip_requirements=tracking.PIP_REQUIREMENTS)
    return Trained(probs, thr, extra, info)


def log_any_edge_results(extra: dict, calibration_png: Path) -> None:
    """The ablation and the calibration in the family's MLflow run: flat metrics to compare runs, the
    full table as ``ablation.json`` / ``ablation.md``, the reliability diagram."""
    import mlflow

    flat, lines = {}, ["| test set | n | score | composition only | both | both − composition [95 %] |",
                       "|---|---|---|---|---|---|"]
    for name, res in extra["test_sets"].items():
        cmp = res.get("composition_vs_both")
        if cmp is None:
            continue
        for k, v in cmp["scores"].items():
            flat.update({f"ablation_{name}_composition_{k}": v["a"], f"ablation_{name}_both_{k}": v["b"]})
            lines.append(f"| {name} | {res['n']} | {k} | {v['a']:.3f} | {v['b']:.3f} | {v['diff']:+.3f} "
                         f"[{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] |")
    for split, st in extra["calibration"].items():
        for when in ("before", "after"):
            flat.update({f"calibration_{split}_{when}_ece": st[when]["ece"],
                         f"calibration_{split}_{when}_brier": st[when]["brier"]})
    mlflow.log_metrics(flat)
    mlflow.log_dict(extra["test_sets"], "ablation.json")
    mlflow.log_text("\n".join(lines) + "\n", "ablation.md")
    mlflow.log_dict(extra["calibration"], "calibration.json")
    mlflow.log_artifact(str(calibration_png), "plots")


def uncertainty_check(y: np.ndarray, p: np.ndarray, u: np.ndarray, thr: float) -> dict:
    """Does the uncertainty mean something: error rate in the most and least uncertain halves."""
    wrong = (p >= thr).astype(int) != y
    hi = u >= np.median(u)
    return {"median": float(np.median(u)), "error_rate_uncertain_half": float(wrong[hi].mean()),
            "error_rate_certain_half": float(wrong[~hi].mean()) if (~hi).any() else float("nan")}
