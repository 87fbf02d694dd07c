"""DVC stage `select`: pick the champion by validation score, register it in MLflow as `champion`.

The rule (metric and candidate families) is in params.yaml ``select``; candidates must be trained
families (``train.families``) that can be exported (an exporter in ``xastopo.families``). The
candidates' ``metrics/<name>.json`` hold their scores, threshold and logged model. The result is
written to ``models/champion.json``, which the export stage depends on (it pins the champion's
trained model by its MLflow run and model URI).
"""

from __future__ import annotations

import json
from pathlib import Path

from xastopo.config import load_params
from xastopo.families import pipeline_families
from xastopo.stages.common import run_stage, write_json
from xastopo.training import tracking
from xastopo.training.selection import METRICS, register_champion, select_champion


def candidates(params: dict) -> list[str]:
    """``select.candidates``, checked: trained by the pipeline and exportable."""
    trained = {f.name: f for f in pipeline_families(params)}
    names = list(params["select"]["candidates"])
    for n in names:
        if n not in trained:
            raise ValueError(f"select.candidates: '{n}' is not in train.families ({', '.join(trained)})")
        if trained[n].exporter is None:
            raise ValueError(f"select.candidates: '{n}' cannot be exported (a reference model, not a candidate)")
    if not names:
        raise ValueError("select.candidates is empty")
    return names


def champion_record(name: str, res: dict, sel: dict, version: str) -> dict:
    """What ``models/champion.json`` records: the rule, the score, the model and its registry version."""
    split, key = METRICS[str(sel["metric"])]
    return {
        "model": name, "metric": sel["metric"], "score": res[split][key],
        "threshold": res["threshold"], "mlflow_run_id": res["mlflow_run_id"], "model_uri": res["model_uri"],
        "registered_model_name": sel["registered_model_name"], "registered_version": version,
        "alias": "champion", "test": {k: res["test"][k] for k in ("macro_f1", "auc", "topological", "trivial", "n")},
        "dvc_data_hash": tracking.dvc_data_hash(),
        # what the export's model card shows (so the export depends on champion.json, not on every
        # family's metrics: retraining another family leaves the export alone)
        "card_metrics": {k: res.get(k) for k in ("test", "calibration", "uncertainty")},
    }


def main() -> None:
    params = load_params()
    sel = params["select"]
    try:
        names = candidates(params)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    results = {n: json.loads((Path("metrics") / f"{n}.json").read_text()) for n in names}
    name = select_champion(results, str(sel["metric"]))
    tracking.setup(params)
    version = register_champion(results[name]["model_uri"], str(sel["registered_model_name"]))
    champion = champion_record(name, results[name], sel, version)
    write_json("models/champion.json", champion)
    print(f"champion: {name} ({sel['metric']} {champion['score']:.3f}), "
          f"{sel['registered_model_name']} version {version} @champion")


if __name__ == "__main__":
    run_stage(main)
