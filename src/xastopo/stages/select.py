"""DVC stage `select`: pick the champion by validation score, register it in MLflow as `champion`.

The rule (metric and candidate models) is in params.yaml. The result is written to
``models/champion.json``, which the export stage depends on.
"""

from __future__ import annotations

import json
from pathlib import Path

from xastopo.config import load_params
from xastopo.stages.common import run_stage, write_json
from xastopo.training import tracking
from xastopo.training.selection import register_champion, select_champion


def main() -> None:
    params = load_params()
    sel = params["select"]
    results = {n: json.loads((Path("metrics") / f"{n}.json").read_text()) for n in sel["candidates"]}
    name = select_champion(results, str(sel["metric"]))
    tracking.setup(params)
    info = json.loads((Path("models") / name / "info.json").read_text())
    version = register_champion(info["model_uri"], str(sel["registered_model_name"]))
    champion = {
        "model": name, "metric": sel["metric"], "score": results[name]["val"]["macro_f1"],
        "threshold": info["threshold"], "mlflow_run_id": info["mlflow_run_id"], "model_uri": info["model_uri"],
        "registered_model_name": sel["registered_model_name"], "registered_version": version,
        "alias": "champion", "test": {k: results[name]["test"][k] for k in ("macro_f1", "auc", "topological",
                                                                            "trivial", "n")},
        "dvc_data_hash": tracking.dvc_data_hash(),
    }
    write_json("models/champion.json", champion)
    print(f"champion: {name} (val macro-F1 {champion['score']:.3f}), "
          f"{sel['registered_model_name']} version {version} @champion")


if __name__ == "__main__":
    run_stage(main)
