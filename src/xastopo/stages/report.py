"""DVC stage `report`: compare every trained family → ``reports/comparison.md``, ``plots/roc_test_all.png``.

Reads ``metrics/<family>.json`` and ``plots/<family>/roc_test.json`` of the families in params.yaml
``train.families``, logs the table and the figure to the pipeline run's MLflow parent run and closes
that run (the next training stage starts a new pipeline run).
"""

from __future__ import annotations

import json
from pathlib import Path

from xastopo.config import load_params
from xastopo.families import pipeline_families
from xastopo.stages.common import run_stage
from xastopo.training import plots, tracking
from xastopo.training.report import comparison_markdown

ROC_ALL = Path("plots/roc_test_all.png")
TABLE = Path("reports/comparison.md")


def log_to_parent(params: dict, table: str) -> str:
    """Log the comparison to this pipeline run's parent run (created if no stage opened one); close it."""
    from mlflow import MlflowClient

    exp_id = tracking.setup(params)
    parent_id = tracking.parent_run(exp_id, tracking.provenance_tags())
    client = MlflowClient()
    client.log_artifact(parent_id, str(ROC_ALL), "plots")
    client.log_text(parent_id, table, "comparison.md")
    tracking.close_parent_run(parent_id)
    return parent_id


def main() -> None:
    params = load_params()
    try:
        names = [f.name for f in pipeline_families(params)]
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    results = {n: json.loads((Path("metrics") / f"{n}.json").read_text()) for n in names}
    curves = {n: json.loads((Path("plots") / n / "roc_test.json").read_text())["roc"] for n in names}
    plots.roc_figure(curves, "ROC, test split", ROC_ALL)
    table = comparison_markdown(results, "test")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(table)
    parent_id = log_to_parent(params, table)
    print(f"report: {len(names)} models → {TABLE}, {ROC_ALL} (MLflow pipeline run {parent_id})")


if __name__ == "__main__":
    run_stage(main)
