"""DVC stage `train`: train and evaluate every model, one MLflow parent run with a child per model.

Writes ``models/<name>/``, ``metrics/<name>.json`` (val and test scores, DVC metrics), ROC and
confusion data under ``plots/`` (DVC plots) and the comparison table ``reports/comparison.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from rich.console import Console

from xastopo.config import load_params, raw_path
from xastopo.data.labels import usable_labels
from xastopo.elements import SYMBOLS
from xastopo.models import baselines
from xastopo.preprocessing.dataset import load_arrays
from xastopo.preprocessing.preprocessor import Preprocessor
from xastopo.stages.common import run_stage, write_json
from xastopo.training import metrics, plots, tracking
from xastopo.training.report import comparison_markdown

MODELS = ("nn", "nn_type_only", "svm", "svm_type", "pca_kmeans", "composition")
console = Console()


def choose_threshold(rule, y_val: np.ndarray, p_val: np.ndarray) -> float:
    return metrics.balanced_threshold(y_val, p_val) if rule == "val_roc" else float(rule)


def write_outputs(name: str, run, data: dict, probs: dict, threshold: float, extra: dict) -> dict:
    """Evaluate val/test, write metrics JSON, plots and log them to the active MLflow run."""
    import mlflow

    res = {"model": name, "threshold": threshold, **extra}
    for split in ("val", "test"):
        a = data[split]
        ev = metrics.evaluate(a["y"], probs[split], threshold, a["Z"], a["mask"])
        res[split] = ev
        mlflow.log_metrics(tracking.flat_metrics(split, ev))
        pdir = Path("plots") / name
        roc = metrics.roc_points(a["y"], probs[split])
        write_json(pdir / f"roc_{split}.json", {"roc": roc})
        pd.DataFrame({"actual": [metrics.CLASSES[int(v)] for v in a["y"]],
                      "predicted": [metrics.CLASSES[int(v >= threshold)] for v in probs[split]]}
                     ).to_csv(pdir / f"confusion_{split}.csv", index=False)
        pd.DataFrame({"mp_id": a["ids"], "y": a["y"], "prob": probs[split]}).to_csv(
            pdir / f"predictions_{split}.csv", index=False)
        if split == "test":
            pe = ev["per_element"]
            counts = {k: v["n"] for k, v in pe.items()}
            for cls in ("topological", "trivial"):
                png = pdir / f"per_element_f1_{cls}_test.png"
                plots.periodic_table_heatmap({k: v[f"f1_{cls}"] for k, v in pe.items()},
                                             f"{name}: per-element F1 ({cls}), test", png, counts)
                mlflow.log_artifact(str(png), "plots")
            plots.roc_figure({name: roc}, f"{name}: ROC (test)", pdir / "roc_test.png")
            mlflow.log_artifact(str(pdir / "roc_test.png"), "plots")
    res["mlflow_run_id"] = run.info.run_id
    write_json(Path("metrics") / f"{name}.json", res)
    return res


def composition_data(params: dict, exclude: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Formulas of every usable labeled material: the labels' formula, else the CIF's formula_sum,
    else the formula of the POSCAR the shipped spectra were computed on."""
    labels = pd.read_csv(raw_path(params, "labels_csv"))
    lab, _ = usable_labels(labels)
    lab = lab.merge(labels[["mp_id", "formula"]], on="mp_id", how="left")
    structs = pd.read_parquet(Path(params["data"]["raw_dir"]) / "structures/structures.parquet",
                              columns=["mp_id", "formula_sum"])
    poscars = pd.read_parquet(raw_path(params, "site_structures"), columns=["mp_id", "formula"]).rename(
        columns={"formula": "formula_poscar"})
    lab = lab.merge(structs, on="mp_id", how="left").merge(poscars, on="mp_id", how="left")
    lab["formula"] = lab["formula"].fillna(lab["formula_sum"]).fillna(lab["formula_poscar"])
    lab = lab[lab["formula"].notna()]
    return lab[~lab["mp_id"].isin(exclude)].reset_index(drop=True), lab


@dataclass
class Context:
    """What every trainer needs besides its own parameters."""

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


def spectra_signature(a: dict, probs: np.ndarray):
    from mlflow.models import infer_signature

    return infer_signature({"spectra": a["X"][:2], "z": a["Z"][:2], "mask": a["mask"][:2]},
                           probs[:2].astype(np.float32))


def train_network(name: str, ctx: Context) -> Trained:
    """The paper's NN (``nn``) or its atom-type-only ablation (``nn_type_only``)."""
    import mlflow
    import torch

    from xastopo.models.nn import build_net
    from xastopo.training.nn_trainer import default_device, predict_proba, set_determinism, train_nn

    data = ctx.data
    cfg = {**ctx.params["nn"], **(ctx.params.get(name) or {})}
    set_determinism(ctx.seed, cfg.get("threads"))
    net = build_net({"nn": cfg}, ctx.n_points, use_spectra=(name == "nn"))
    mlflow.log_params(dict(cfg))

    def on_epoch(rec: dict) -> None:
        ev = metrics.evaluate(data["val"]["y"], rec["val_prob"], 0.5)
        mlflow.log_metrics({"train_loss": rec["train_loss"], "val_loss": rec["val_loss"],
                            "val_macro_f1_at_0.5": ev["macro_f1"],
                            "val_topological_f1_at_0.5": ev["topological"]["f1"],
                            "val_trivial_f1_at_0.5": ev["trivial"]["f1"],
                            "epoch_seconds": rec["seconds"]}, step=rec["epoch"])

    net, history, best = train_nn(
        net, data["train"], data["val"], lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]),
        batch_size=int(cfg["batch_size"]), max_epochs=int(cfg["max_epochs"]), patience=int(cfg["patience"]),
        seed=ctx.seed, device=default_device(), on_epoch=on_epoch)
    net = net.cpu()
    probs = {s: predict_proba(net, data[s], torch.device("cpu")) for s in ("val", "test")}
    thr = choose_threshold(cfg["threshold"], data["val"]["y"], probs["val"])
    plots.loss_figure(history, ctx.mdir / "loss.png", f"{name} loss")
    mlflow.log_artifact(str(ctx.mdir / "loss.png"), "plots")
    torch.save({"state_dict": net.state_dict(), "config": cfg, "n_points": ctx.n_points,
                "use_spectra": name == "nn"}, ctx.mdir / "model.pt")
    info = mlflow.pytorch.log_model(net, name="model", signature=spectra_signature(data["val"], probs["val"]),
                                    serialization_format="pickle", pip_requirements=tracking.PIP_REQUIREMENTS)
    extra = {"best_epoch": best, "epochs_run": len(history),
             "mean_epoch_seconds": float(np.mean([h["seconds"] for h in history]))}
    return Trained(probs, thr, extra, info)


def train_svm(name: str, ctx: Context) -> Trained:
    """SVC on concatenated spectra (``svm``) or on atom-type presence (``svm_type``)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.svm import SVC

    data, cfg = ctx.data, ctx.params[name]

    def feats(a: dict) -> np.ndarray:
        if name == "svm":
            return baselines.concat_features(a["X"], a["Z"], a["mask"], ctx.train_el)
        return baselines.type_features(a["Z"], a["mask"])

    clf = SVC(C=float(cfg["C"]), kernel=str(cfg["kernel"]), gamma=cfg["gamma"], class_weight="balanced",
              probability=True, random_state=ctx.seed)
    clf.fit(feats(data["train"]), data["train"]["y"])
    probs = {s: clf.predict_proba(feats(data[s]))[:, 1] for s in ("val", "test")}
    thr = choose_threshold(ctx.params["nn"]["threshold"], data["val"]["y"], probs["val"])
    xv = feats(data["val"])
    mlflow.log_params({**cfg, "class_weight": "balanced", "n_features": xv.shape[1]})
    element_z = ctx.train_el if name == "svm" else None
    joblib.dump({"model": clf, "element_z": element_z,
                 "features": "concat_spectra" if name == "svm" else "type_presence"}, ctx.mdir / "model.joblib")
    info = mlflow.sklearn.log_model(clf, name="model", signature=infer_signature(xv[:2], probs["val"][:2]),
                                    pip_requirements=tracking.PIP_REQUIREMENTS)
    return Trained(probs, thr, {"element_z": element_z}, info)


def train_pca_kmeans(name: str, ctx: Context) -> Trained:
    """Per-element PCA + k-means(2) with Hungarian cluster→class matching."""
    import mlflow

    data, cfg = ctx.data, ctx.params["pca_kmeans"]
    mdl = baselines.PcaKMeans(float(cfg["explained_variance"]), int(cfg["n_init"]), ctx.seed)
    mdl.fit(data["train"]["X"], data["train"]["Z"], data["train"]["mask"], data["train"]["y"])
    probs = {s: mdl.predict_proba(data[s]["X"], data[s]["Z"], data[s]["mask"]) for s in ("val", "test")}
    mlflow.log_params(cfg)
    joblib.dump(mdl, ctx.mdir / "model.joblib")
    info = mlflow.sklearn.log_model(mdl, name="model", pip_requirements=tracking.PIP_REQUIREMENTS,
                                    skops_trusted_types=["xastopo.models.baselines.PcaKMeans"],
                                    signature=spectra_signature(data["val"], probs["val"]))
    extra = {"n_components": {str(k): int(v[0].n_components_) for k, v in mdl.models.items()}}
    return Trained(probs, 0.5, extra, info)  # 0.5 = nearest matched centroid, the method's own decision


def train_composition(name: str, ctx: Context) -> Trained:
    """Gradient boosting on element presence, trained on every labeled material outside our val/test."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    data, cfg = ctx.data, ctx.params["composition"]
    held = set(data["val"]["ids"]) | set(data["test"]["ids"])
    train_df, all_df = composition_data(ctx.params, held)
    clf = HistGradientBoostingClassifier(
        max_iter=int(cfg["max_iter"]), learning_rate=float(cfg["learning_rate"]),
        max_leaf_nodes=int(cfg["max_leaf_nodes"]), class_weight="balanced", random_state=ctx.seed)
    with threadpool_limits(limits=int(cfg["threads"])):
        clf.fit(baselines.composition_features(train_df["formula"].tolist()), train_df["y"])
    fmap = all_df.set_index("mp_id")["formula"]
    probs, n_missing = {}, {}
    for s in ("val", "test"):
        # no formula anywhere (retired ids): fall back to the absorbing elements we know
        known = [fmap.get(m) or "".join(SYMBOLS[int(v) - 1] for v in zz[mm > 0])
                 for m, zz, mm in zip(data[s]["ids"], data[s]["Z"], data[s]["mask"], strict=True)]
        n_missing[s] = int(sum(fmap.get(m) is None for m in data[s]["ids"]))
        probs[s] = clf.predict_proba(baselines.composition_features(known))[:, 1]
    thr = choose_threshold(ctx.params["nn"]["threshold"], data["val"]["y"], probs["val"])
    mlflow.log_params({**cfg, "n_train_materials": len(train_df)})
    joblib.dump(clf, ctx.mdir / "model.joblib")
    xf = baselines.composition_features(train_df["formula"].tolist()[:2])
    info = mlflow.sklearn.log_model(
        clf, name="model", signature=infer_signature(xf, probs["val"][:2]), pip_requirements=tracking.PIP_REQUIREMENTS,
        skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"])
    return Trained(probs, thr, {"n_train_materials": int(len(train_df)), "n_formula_missing": n_missing}, info)


TRAINERS = {"nn": train_network, "nn_type_only": train_network, "svm": train_svm, "svm_type": train_svm,
            "pca_kmeans": train_pca_kmeans, "composition": train_composition}


def main() -> None:
    import mlflow

    from xastopo.training.nn_trainer import default_device

    params = load_params()
    seed = int(params["base"]["seed"])
    data = {s: load_arrays(Path(f"data/features/{s}.npz")) for s in ("train", "val", "test")}
    pre = Preprocessor.load("models/preprocessor.json")
    n_points = data["train"]["X"].shape[2]
    train_el = sorted(set(data["train"]["Z"][data["train"]["mask"] > 0].tolist()))
    tracking.setup(params)
    results: dict[str, dict] = {}
    tags = {"git_commit": tracking.git_commit(), "dvc_data_hash": tracking.dvc_data_hash(),
            "device": str(default_device())}
    with mlflow.start_run(run_name=f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags) as parent:
        mlflow.log_params({"seed": seed, "n_points": n_points, "n_train": len(data["train"]["y"]),
                           "n_val": len(data["val"]["y"]), "n_test": len(data["test"]["y"])})
        mlflow.log_dict(pre.to_dict(), "preprocessor.json")
        for name in MODELS:
            t0 = time.perf_counter()
            with mlflow.start_run(run_name=name, nested=True, tags=tags) as run:
                mdir = Path("models") / name
                mdir.mkdir(parents=True, exist_ok=True)
                mlflow.log_dict(pre.to_dict(), "preprocessor.json")
                t = TRAINERS[name](name, Context(params, data, seed, n_points, train_el, mdir))
                res = write_outputs(name, run, data, t.probs, t.threshold, t.extra)
                res["model_uri"] = t.info.model_uri
                res["seconds"] = time.perf_counter() - t0
                write_json(mdir / "info.json", {"name": name, "mlflow_run_id": run.info.run_id,
                                                "model_uri": res["model_uri"], "threshold": t.threshold,
                                                "parent_run_id": parent.info.run_id})
                write_json(Path("metrics") / f"{name}.json", res)
                results[name] = res
                console.print(f"[bold]{name}[/]: val macro-F1 {res['val']['macro_f1']:.3f}, test macro-F1 "
                              f"{res['test']['macro_f1']:.3f}, AUC {res['test']['auc']:.3f} "
                              f"({res['seconds']:.1f} s)")
        curves = {n: json.loads((Path("plots") / n / "roc_test.json").read_text())["roc"] for n in MODELS}
        plots.roc_figure(curves, "ROC, test split", Path("plots/roc_test_all.png"))
        mlflow.log_artifact("plots/roc_test_all.png", "plots")
        md = comparison_markdown(results, "test")
        Path("reports/comparison.md").write_text(md)
        mlflow.log_text(md, "comparison.md")


if __name__ == "__main__":
    run_stage(main)
