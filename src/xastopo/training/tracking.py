"""MLflow helpers: one local store without a server, provenance tags, the pipeline's parent run.

Each model family trains in its own DVC stage (its own process), so "one parent run per pipeline
run, a child run per model" is kept through the store: the first stage of a pipeline run creates a
parent run (tagged ``xastopo_pipeline``, the dataset hash and the git commit) and leaves it RUNNING;
later stages of the same run (same dataset hash and commit) find that open parent and nest their
child runs under it; the ``report`` stage logs the comparison to it and closes it (FINISHED).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import yaml

PIP_REQUIREMENTS = ["torch==2.13.0", "scikit-learn", "numpy"]
PIPELINE_TAG = "xastopo_pipeline"  # marks a parent run (one per pipeline run)


def tracking_uri(params: dict) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else params ``mlflow.tracking_uri`` (a sqlite file)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or str(params["mlflow"]["tracking_uri"])


def setup(params: dict) -> str:
    """Point MLflow at the store and make sure the experiment exists; return its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reporting from pipeline runs
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(params))
    name = str(params["mlflow"]["experiment"])
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        art = Path(str(params["mlflow"]["artifact_dir"])).resolve().as_uri()
        mlflow.create_experiment(name, artifact_location=art)
    return mlflow.set_experiment(name).experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_data_hash(lock: str | Path = "dvc.lock", stage: str = "featurize", path: str = "data/features") -> str:
    """The md5 DVC recorded for the featurized dataset, or 'unknown' outside a DVC run."""
    p = Path(lock)
    if not p.is_file():
        return "unknown"
    data = yaml.safe_load(p.read_text()) or {}
    for out in data.get("stages", {}).get(stage, {}).get("outs", []):
        if out.get("path") == path:
            return str(out.get("md5", "unknown"))
    return "unknown"


def flat_metrics(prefix: str, ev: dict) -> dict[str, float]:
    """Scalar metrics of an evaluation dict, named like ``test_topological_f1``."""
    out = {f"{prefix}_{k}": float(ev[k]) for k in ("accuracy", "macro_f1", "auc", "threshold")}
    for cls in ("trivial", "topological"):
        for k in ("precision", "recall", "f1"):
            out[f"{prefix}_{cls}_{k}"] = float(ev[cls][k])
    return out


def provenance_tags() -> dict[str, str]:
    """The git commit and the DVC hash of the featurized dataset, tagged on every run."""
    return {"git_commit": git_commit(), "dvc_data_hash": dvc_data_hash()}


def _commit_sha(tag: str | None) -> str:
    """The commit without the '-dirty' mark: the working tree changes while a pipeline runs (dvc.lock)."""
    return (tag or "").split("-")[0]


def open_parent_run(experiment_id: str, tags: dict[str, str]) -> str | None:
    """The open (RUNNING) parent run of this pipeline run: same dataset hash and commit; None if none."""
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=f"tags.{PIPELINE_TAG} = 'true' AND tags.dvc_data_hash = "
                                       f"'{tags['dvc_data_hash']}'",
        order_by=["attributes.start_time DESC"], max_results=100)
    for r in runs:
        if r.info.status == "RUNNING" and _commit_sha(r.data.tags.get("git_commit")) == _commit_sha(
                tags["git_commit"]):
            return r.info.run_id
    return None


def parent_run(experiment_id: str, tags: dict[str, str], on_create: Callable[[str], None] | None = None) -> str:
    """Find this pipeline run's open parent run or create it (``on_create(run_id)`` logs to a new one)."""
    from mlflow import MlflowClient

    run_id = open_parent_run(experiment_id, tags)
    if run_id is None:
        run = MlflowClient().create_run(experiment_id, run_name=f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}",
                                        tags={**tags, PIPELINE_TAG: "true"})
        run_id = run.info.run_id
        if on_create is not None:
            on_create(run_id)
    return run_id


def close_parent_run(run_id: str) -> None:
    """End the pipeline run's parent run: the next stage that trains starts a new pipeline run."""
    from mlflow import MlflowClient

    MlflowClient().set_terminated(run_id, "FINISHED")
