"""DVC stage `train@<family>`: train and evaluate ONE model family, as a child of the pipeline's run.

``python -m xastopo.stages.train <family>`` (the families are in params.yaml ``train.families``,
their trainers in the registry ``xastopo.families``). Writes ``models/<family>/`` (the model and
``info.json``), ``metrics/<family>.json`` (val and test scores, DVC metrics) and ``plots/<family>/``
(ROC and confusion data, DVC plots; figures). The MLflow child run is nested under the pipeline run's
parent run (found or created, see ``xastopo.training.tracking``); the ``report`` stage closes it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from xastopo.config import load_params
from xastopo.families import Family, family, pipeline_families
from xastopo.preprocessing.dataset import load_features
from xastopo.preprocessing.preprocessor import Preprocessor
from xastopo.stages.common import run_stage, write_json
from xastopo.training import tracking
from xastopo.training.outputs import write_outputs
from xastopo.training.trainers import Context

SPLITS = ("train", "val", "test")
console = Console()


def load_inputs(pre_path: str | Path = "models/preprocessor.json",
                features_dir: str | Path = "data/features") -> tuple[Preprocessor, dict[str, dict]]:
    """The fitted preprocessor and the featurized splits, checked to be of the same featurize run."""
    pre = Preprocessor.load(pre_path)
    return pre, {s: load_features(Path(features_dir) / f"{s}.npz", pre) for s in SPLITS}


def parent_info(pre: Preprocessor, data: dict, seed: int):
    """What a new pipeline parent run records: the run's sizes and the fitted preprocessor."""

    def log(run_id: str) -> None:
        from mlflow import MlflowClient

        client = MlflowClient()
        for k, v in {"seed": seed, "n_points": pre.n_points, "n_train": len(data["train"]["y"]),
                     "n_val": len(data["val"]["y"]), "n_test": len(data["test"]["y"])}.items():
            client.log_param(run_id, k, v)
        client.log_dict(run_id, pre.to_dict(), "preprocessor.json")

    return log


def train_family(fam: Family, params: dict, pre: Preprocessor, data: dict) -> dict:
    """Train ``fam`` in an MLflow child run of the pipeline run; write its outputs; return its metrics."""
    import mlflow

    from xastopo.training.nn_trainer import default_device

    seed = int(params["base"]["seed"])
    exp_id = tracking.setup(params)
    tags = {**tracking.provenance_tags(), "device": str(default_device())}
    parent_id = tracking.parent_run(exp_id, tags, parent_info(pre, data, seed))
    mdir = Path("models") / fam.name
    mdir.mkdir(parents=True, exist_ok=True)
    train_el = sorted(set(data["train"]["Z"][data["train"]["mask"] > 0].tolist()))
    t0 = time.perf_counter()
    with mlflow.start_run(run_name=fam.name, parent_run_id=parent_id, tags=tags) as run:
        mlflow.log_dict(pre.to_dict(), "preprocessor.json")
        t = fam.load_trainer()(fam, Context(params, data, seed, pre.n_points, train_el, mdir))
        res = write_outputs(fam.name, run, data, t.probs, t.threshold, t.extra)
        res["model_uri"] = t.info.model_uri
        res["seconds"] = time.perf_counter() - t0
        write_json(mdir / "info.json", {"name": fam.name, "mlflow_run_id": run.info.run_id,
                                        "model_uri": res["model_uri"], "threshold": t.threshold,
                                        "parent_run_id": parent_id})
        write_json(Path("metrics") / f"{fam.name}.json", res)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m xastopo.stages.train", description=__doc__.splitlines()[0])
    ap.add_argument("family", help="model family to train (params.yaml train.families)")
    name = ap.parse_args(argv).family
    params = load_params()
    try:
        fam = family(name)
        if fam not in pipeline_families(params):
            raise ValueError(f"'{name}' is not in params.yaml train.families")
        pre, data = load_inputs()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    res = train_family(fam, params, pre, data)
    console.print(f"[bold]{name}[/]: val macro-F1 {res['val']['macro_f1']:.3f}, test macro-F1 "
                  f"{res['test']['macro_f1']:.3f}, AUC {res['test']['auc']:.3f} ({res['seconds']:.1f} s)")


if __name__ == "__main__":
    run_stage(main)
