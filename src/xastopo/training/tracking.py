"""MLflow helpers: one local store without a server, provenance tags, model logging."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

PIP_REQUIREMENTS = ["torch==2.13.0", "scikit-learn", "numpy"]


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
