"""End to end: the full `dvc repro` (data → train@<family> → report → select → export) in a temp copy
of the repo, with short training settings, a real MLflow store in a temp dir read back with
MlflowClient; then one family's parameter changed reruns that family alone."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from test_dvc_pipeline import REPO_ROOT, _git_files, dvc, ran

from xastopo.families import ORDER

pytestmark = pytest.mark.slow
MODELS = ORDER  # every registered family is trained by the shipped params.yaml (checked below)
DATA_STAGES = {"ingest", "assemble", "split", "featurize"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, shared_data, monkeypatch_module):
    import shutil

    dst = tmp_path_factory.mktemp("xastopo_full")
    for f in _git_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / f, dst / f)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["data"]["raw_dir"] = str(shared_data)
    params["nn"].update(max_epochs=3, patience=3)
    params["nn_any"].update(max_epochs=1, patience=1, ensemble=2, n_boot=20)
    params["composition"]["max_iter"] = 20
    # the analysis stages after export, kept short: they are checked to run, not for their numbers
    params["sensitivity"].update(n_points=[200, 25], shifts_ev=[-1, 1], noise=[0.1], noise_draws=1, n_boot=20)
    params["learning_curve"].update(repeats=1, n_boot=20, fractions=[0.5, 1.0], simulated_steps=[50])
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    store = tmp_path_factory.mktemp("mlflow_store")
    uri = f"sqlite:///{store}/mlflow.db"
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", uri)
    out = dvc(dst, "repro")
    return dst, uri, out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_full_repro_runs_every_stage_then_nothing(pipeline):
    repo, _, out = pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert tuple(params["train"]["families"]) == MODELS
    declared = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]) - {"train"}
    assert {"report", "select", "export", "screen", "explain", "measured", "sensitivity"} <= declared
    assert ran(out) == declared | {f"train@{m}" for m in MODELS}, out
    again = dvc(repo, "repro")
    assert ran(again) == set(), again
    assert "Data and pipelines are up to date" in dvc(repo, "status")


def test_metrics_and_plots_are_declared_and_readable(pipeline):
    repo, _, _ = pipeline
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    for m in MODELS:
        shown_m = files[f"metrics/{m}.json"]["data"]  # dvc shows the scalar metrics
        data = json.loads((repo / f"metrics/{m}.json").read_text())
        for split in ("val", "test"):
            for cls in ("topological", "trivial"):
                assert set(shown_m[split][cls]) >= {"precision", "recall", "f1"}
                assert shown_m[split][cls]["f1"] == data[split][cls]["f1"]
            assert 0.0 <= shown_m[split]["auc"] <= 1.0
            assert sum(map(sum, data[split]["confusion"])) == data[split]["n"]
        assert data["test"]["per_element"], m
        assert (repo / f"plots/{m}/per_element_f1_topological_test.png").stat().st_size > 1000
    table = (repo / "reports/comparison.md").read_text()
    assert all(f"| {m} |" in table for m in MODELS)
    assert json.loads((repo / "reports/export_parity.json").read_text())["passed"] is True


def test_mlflow_parent_child_runs_metrics_and_champion_alias(pipeline):
    from mlflow import MlflowClient

    repo, uri, _ = pipeline
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("xastopo")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert sorted(r.info.run_name for r in children) == sorted(MODELS)
    parent = parents[0]  # one per pipeline run, though each family trains in its own stage
    assert parent.info.status == "FINISHED"  # closed by the report stage
    assert parent.data.params["n_points"] == "200" and parent.data.tags["dvc_data_hash"] not in ("", "unknown")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"comparison.md", "plots",
                                                                           "preprocessor.json"}
    for r in children:
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.tags["dvc_data_hash"] not in ("", "unknown")
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", r.data.tags["git_commit"])
        local = json.loads((repo / f"metrics/{r.info.run_name}.json").read_text())
        assert r.data.metrics["test_macro_f1"] == pytest.approx(local["test"]["macro_f1"])
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert "preprocessor.json" in arts
    nn = next(r for r in children if r.info.run_name == "nn")
    history = client.get_metric_history(nn.info.run_id, "val_loss")
    assert len(history) == 3 and [h.step for h in history] == [1, 2, 3]
    any_run = next(r for r in children if r.info.run_name == "nn_any")  # ablation and calibration logged
    local = json.loads((repo / "metrics/nn_any.json").read_text())["test_sets"]["shipped"]["composition_vs_both"]
    assert any_run.data.metrics["ablation_shipped_both_macro_f1"] == pytest.approx(local["scores"]["macro_f1"]["b"])
    assert "calibration_test_after_ece" in any_run.data.metrics
    assert {"ablation.json", "ablation.md", "calibration.json"} <= {a.path for a in client.list_artifacts(
        any_run.info.run_id)}
    champion = json.loads((repo / "models/champion.json").read_text())
    mv = client.get_model_version_by_alias("xastopo-classifier", "champion")
    assert str(mv.version) == champion["registered_version"]
    assert mv.run_id == champion["mlflow_run_id"] or mv.source.endswith(champion["model_uri"].split("/")[-1])
    meta = json.loads((repo / "models/export/metadata.json").read_text())
    assert meta["mlflow_run_id"] == champion["mlflow_run_id"] and meta["model_version"] == str(mv.version)



def test_changing_svm_C_reruns_only_the_svm_family(pipeline):
    """Each family tracks its own params block: svm.C reruns train@svm, then report and select (and the
    learning curves, which use the svm settings); the networks do not. An unchanged champion keeps its
    registry version, so export does not rerun."""
    repo, uri, _ = pipeline
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    before = json.loads((repo / "models/champion.json").read_text())
    try:
        params = yaml.safe_load(original)
        params["svm"]["C"] = 2.0
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        status = dvc(repo, "status")
        # the per-element learning curves use the svm block's settings too (learning_curve.family)
        assert sorted(re.findall(r"(?m)^([\w@.-]+):$", status)) == ["learning_curve", "train@svm"], status
        out = dvc(repo, "repro")
        after = json.loads((repo / "models/champion.json").read_text())
        expected = {"train@svm", "report", "select", "learning_curve"}
        if "svm" in (before["model"], after["model"]):  # a new export: the stages that read it rerun
            expected |= {"export", "screen", "explain", "measured", "sensitivity"}
        else:
            assert after == before  # same model, same registry version: nothing to export again
        assert ran(out) == expected, out
        assert "Data and pipelines are up to date" in dvc(repo, "status")
    finally:
        params_file.write_text(original)
    # the rerun was one more pipeline run: a parent run with the svm child alone, closed by report
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("xastopo").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents)
    newest = max(parents, key=lambda r: r.info.start_time)
    kids = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == newest.info.run_id]
    assert kids == ["svm"]
    assert {a.path for a in client.list_artifacts(newest.info.run_id)} >= {"comparison.md", "plots"}
    dvc(repo, "repro")  # back to the shipped parameters for the next test


def test_training_with_simulated_materials_keeps_the_test_materials(pipeline, tmp_path):
    """Adding feff10_sim to the training sources (a copy of the run, `dvc repro train@nn` there): the split
    does not move (simulated-only materials are split with the composition pool whatever their data);
    the paper's NN trains on the simulated materials of the train split, and its validation and test
    stay the same shipped materials, so `xastopo compare` can set the two NNs side by side. Runs last:
    it adds runs to the MLflow store."""
    import shutil
    import sys
    from pathlib import Path

    import pandas as pd

    repo, _, _ = pipeline
    other = tmp_path / "with_sim"
    shutil.copytree(repo, other, symlinks=True)
    params = yaml.safe_load((other / "params.yaml").read_text())
    params["assemble"]["train_sources"] = [*params["assemble"]["train_sources"], "feff10_sim"]
    (other / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(other, "repro", "train@nn")  # the NN alone: one family's stage and what it needs
    assert ran(out) == {"assemble", "split", "featurize", "train@nn"}, out
    a = pd.read_csv(repo / "data/interim/split.csv").set_index("mp_id")
    b = pd.read_csv(other / "data/interim/split.csv").set_index("mp_id")
    pd.testing.assert_frame_equal(b, a)  # one split whatever data a material has
    rep = json.loads((other / "reports/assemble_quality.json").read_text())
    n_sim = rep["materials"]["labeled_by_origin"]["simulated_only"]
    assert n_sim >= 100 and set(a.loc[a["pool"] == "composition", "split"]) == {"train", "val", "test"}
    feat_a = json.loads((repo / "reports/featurize.json").read_text())["splits"]
    feat_b = json.loads((other / "reports/featurize.json").read_text())["splits"]
    for k in ("materials", "topological"):
        assert feat_b["test"][k] == feat_a["test"][k] and feat_b["val"][k] == feat_a["val"][k]
    assert feat_b["train"]["materials"] > feat_a["train"]["materials"]
    cmp = subprocess.run([str(Path(sys.executable).parent / "xastopo"), "compare", str(repo), str(other),
                          "--n-boot", "200", "--out", str(tmp_path / "cmp.json")],
                         capture_output=True, text=True, timeout=300)
    assert cmp.returncode == 0, cmp.stderr
    res = json.loads((tmp_path / "cmp.json").read_text())
    assert res["n_materials"] == feat_a["test"]["materials"]
    assert res["n_train"]["b"] - res["n_train"]["a"] == feat_b["train"]["materials"] - feat_a["train"]["materials"]
