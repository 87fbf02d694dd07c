"""End to end: `dvc repro` on a copy of the repo, then no-op rerun, then only `featurize` on n_points.

Runs the data part of the real pipeline (~30 s) against ../shared/data, and checks the per-family
train stages dvc.yaml declares. Marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The data-preparation part of the pipeline; later stages (training, export) may be added to dvc.yaml
# by other work and are not what this test is about.
TARGET = "featurize"
UPSTREAM = ("ingest", "assemble", "split")

pytestmark = pytest.mark.slow


def _git_files() -> list[str]:
    def ls(*args: str) -> list[str]:
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=REPO_ROOT, capture_output=True,
                             check=True).stdout.decode()
        return [f for f in out.split("\0") if f]

    tracked = ls()
    untracked_src = ls("--others", "--exclude-standard", "src")
    return sorted({f for f in tracked + untracked_src if (REPO_ROOT / f).is_file()})


@pytest.fixture(scope="module")
def repo(tmp_path_factory, shared_data) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    dst = tmp_path_factory.mktemp("xastopo_repo")
    for f in _git_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / f, dst / f)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    params = dst / "params.yaml"
    text, n = re.subn(r"(?m)^(\s*raw_dir:\s*)\S+", lambda m: m.group(1) + str(shared_data),
                      params.read_text())
    assert n == 1
    params.write_text(text)
    return dst


def dvc(repo: Path, *args: str) -> str:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in dvc.yaml = this venv
    env["PYTHONPATH"] = str(repo / "src")  # the copy's code, not the editable install's
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=420)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@.-]+)'", out))


def skipped(out: str) -> set[str]:
    return set(re.findall(r"Stage '([\w@.-]+)' didn't change, skipping", out))


def test_repro_twice_then_n_points_reruns_only_featurize(repo):
    out = dvc(repo, "repro", TARGET)
    assert ran(out) == {*UPSTREAM, TARGET}, out
    for f in ("reports/data_quality.json", "reports/split_counts.csv", "data/interim/materials.parquet",
              "data/interim/split.csv", "models/preprocessor.json"):
        assert (repo / f).is_file(), f
    with np.load(repo / "data/features/train.npz") as z:
        assert z["X"].shape[-1] == 200  # params.yaml default n_points
        assert z["X"].shape[0] == len(z["y"]) > 0
    quality = json.loads((repo / "reports/data_quality.json").read_text())
    s = quality["spectra"]
    assert s["rows_read"] == s["rows_valid"] + s["rows_rejected"]

    out = dvc(repo, "repro", TARGET)
    assert ran(out) == set(), out
    assert skipped(out) == {*UPSTREAM, TARGET}, out
    status = dvc(repo, "status", "--with-deps", TARGET)
    assert "up to date" in status, status

    params = repo / "params.yaml"
    text, n = re.subn(r"(?m)^(\s*n_points:\s*)200\b", r"\g<1>100", params.read_text())
    assert n == 1
    params.write_text(text)
    assert "featurize" in dvc(repo, "status", TARGET)
    out = dvc(repo, "repro", TARGET)
    assert ran(out) == {TARGET}, out
    assert skipped(out) == set(UPSTREAM), out
    for name in ("train", "val", "test"):
        with np.load(repo / f"data/features/{name}.npz") as z:
            assert z["X"].shape[-1] == 100, name
    assert json.loads((repo / "models/preprocessor.json").read_text())["n_points"] == 100
    assert "up to date" in dvc(repo, "status", "--with-deps", TARGET)


def test_one_train_stage_per_registered_family(repo):
    """dvc.yaml's `foreach` makes train@<family> for exactly params.yaml train.families, each a
    family of the registry; report, select and export follow them."""
    import yaml

    from xastopo.families import FAMILIES, pipeline_families

    params = yaml.safe_load((repo / "params.yaml").read_text())
    names = [f.name for f in pipeline_families(params)]
    assert set(names) <= set(FAMILIES)
    listed = dvc(repo, "stage", "list", "--name-only").split()
    assert [s for s in listed if s.startswith("train@")] == [f"train@{n}" for n in names]
    assert {"report", "select", "export"} <= set(listed)
    # nn_type_only inherits the nn block through a YAML merge key; DVC tracks the merged values
    assert params["nn_type_only"]["dropout"] == params["nn"]["dropout"]
    assert params["nn_type_only"]["lr"] != params["nn"]["lr"]
