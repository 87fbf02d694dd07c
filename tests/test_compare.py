"""`xastopo compare`: one model, two runs, the same materials, paired bootstrap of the difference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xastopo.training.compare import CompareError, RunPredictions, load_run, paired_bootstrap

XASTOPO = Path(sys.executable).parent / "xastopo"


@pytest.fixture(scope="module")
def truth(labeled_records) -> tuple[np.ndarray, np.ndarray]:
    """Real material ids and binary labels (65 of them, as a test split)."""
    m = labeled_records.drop_duplicates("mp_id").sort_values("mp_id").head(65)
    return m["mp_id"].to_numpy(), m["y"].to_numpy(int)


def noisy(y: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(y * 0.6 + 0.2 + rng.normal(0, noise, len(y)), 0, 1)


def write_run(d: Path, model: str, ids, y, prob, threshold: float) -> Path:
    (d / "metrics").mkdir(parents=True)
    (d / "plots" / model).mkdir(parents=True)
    (d / "metrics" / f"{model}.json").write_text(json.dumps({"threshold": threshold}))
    pd.DataFrame({"mp_id": ids, "y": y, "prob": prob}).to_csv(d / "plots" / model / "predictions_test.csv",
                                                              index=False)
    return d


def test_same_predictions_give_zero_difference(truth):
    ids, y = truth
    a = RunPredictions("a", ids, y, noisy(y, 0.3, 1), 0.5, 10)
    res = paired_bootstrap(a, a, n_boot=200)
    for s in res["scores"].values():
        assert s["diff"] == 0 and s["ci95"] == [0.0, 0.0]


def test_better_model_wins_with_interval_above_zero(truth):
    ids, y = truth
    assert 0.2 < y.mean() < 0.8
    a = RunPredictions("a", ids, y, noisy(y, 0.45, 1), 0.5, 10)
    b = RunPredictions("b", ids, y, noisy(y, 0.05, 2), 0.5, 20)
    res = paired_bootstrap(a, b, n_boot=500)
    s = res["scores"]["macro_f1"]
    assert s["b"] > s["a"] and s["ci95"][0] > 0 and s["p_b_better"] > 0.95
    assert res["n_materials"] == len(ids) and res["n_train"] == {"a": 10, "b": 20}
    # swapping the runs flips the sign
    back = paired_bootstrap(b, a, n_boot=500)["scores"]["macro_f1"]
    assert back["diff"] == pytest.approx(-s["diff"]) and back["ci95"][1] < 0


def test_different_materials_refused(truth):
    ids, y = truth
    a = RunPredictions("a", ids, y, noisy(y, 0.3, 1), 0.5, None)
    b = RunPredictions("b", ids[1:], y[1:], noisy(y[1:], 0.3, 1), 0.5, None)
    with pytest.raises(CompareError, match="not the same test materials: 1 only in a"):
        paired_bootstrap(a, b)


def test_load_run_reads_workspace_files(tmp_path, truth):
    ids, y = truth
    p = noisy(y, 0.3, 3)
    write_run(tmp_path / "r", "nn", ids[::-1], y[::-1], p[::-1], 0.42)
    r = load_run(tmp_path / "r", "nn")
    assert list(r.ids) == sorted(ids) and r.threshold == 0.42 and r.n_train is None
    with pytest.raises(CompareError, match="not found"):
        load_run(tmp_path / "r", "svm")


def test_cli_compare_prints_table_and_fails_cleanly(tmp_path, truth):
    ids, y = truth
    write_run(tmp_path / "base", "nn", ids, y, noisy(y, 0.4, 1), 0.5)
    write_run(tmp_path / "other", "nn", ids, y, noisy(y, 0.1, 2), 0.5)
    write_run(tmp_path / "fewer", "nn", ids[:-2], y[:-2], noisy(y[:-2], 0.1, 2), 0.5)
    ok = subprocess.run([str(XASTOPO), "compare", str(tmp_path / "base"), str(tmp_path / "other"),
                         "--n-boot", "200", "--out", str(tmp_path / "res.json")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "| topological f1 |" in ok.stdout and "| trivial f1 |" in ok.stdout
    assert json.loads((tmp_path / "res.json").read_text())["n_materials"] == len(ids)
    for other, msg in (("fewer", "not the same test materials: 2 only in"), ("nowhere", "not found")):
        bad = subprocess.run([str(XASTOPO), "compare", str(tmp_path / "base"), str(tmp_path / other)],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
