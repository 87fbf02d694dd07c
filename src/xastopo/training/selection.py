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
    """Point ``alias`` of ``registered_name`` at ``model_uri``; return the version.

    A model already registered (the same logged model: ``select`` reruns when any family's metrics
    change, the champion often not) keeps its version, so ``models/champion.json`` and the export
    stay unchanged; a new model becomes a new version.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    same = [mv for mv in client.search_model_versions(f"name='{registered_name}'") if mv.source == model_uri]
    if same:
        version = str(max(int(mv.version) for mv in same))
    else:
        version = str(mlflow.register_model(model_uri, registered_name).version)
    client.set_registered_model_alias(registered_name, alias, version)
    return version
