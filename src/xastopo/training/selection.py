"""Champion selection and registration in the MLflow model registry."""

from __future__ import annotations

METRICS = {"val_macro_f1": ("val", "macro_f1"), "val_auc": ("val", "auc")}


def select_champion(results: dict[str, dict], metric: str) -> str:
    """Best model by ``metric``; ties go to the model listed first among the candidates."""
    if metric not in METRICS:
        raise ValueError(f"select.metric must be one of {sorted(METRICS)}, got {metric!r}")
    split, key = METRICS[metric]
    best, best_score = None, float("-inf")
    for name, res in results.items():
        score = float(res[split][key])
        if score > best_score + 1e-12:
            best, best_score = name, score
    if best is None:
        raise ValueError("no candidate models to select from")
    return best


def register_champion(model_uri: str, registered_name: str, alias: str = "champion") -> str:
    """Register ``model_uri`` as a new version of ``registered_name`` and point ``alias`` at it."""
    import mlflow
    from mlflow import MlflowClient

    mv = mlflow.register_model(model_uri, registered_name)
    MlflowClient().set_registered_model_alias(registered_name, alias, mv.version)
    return str(mv.version)
