"""`xastopo data summary` on a real assembled slice; readable one-line failures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xastopo.cli import app
from xastopo.data.split import split_materials

XASTOPO = str(Path(sys.executable).parent / "xastopo")


@pytest.fixture(scope="module")
def summary_inputs(tmp_path_factory, assembled_slice):
    labeled = assembled_slice[0]
    split = split_materials(labeled, (0.7, 0.15, 0.15), seed=14)
    d = tmp_path_factory.mktemp("summary")
    labeled.to_parquet(d / "materials.parquet", index=False)
    split.to_csv(d / "split.csv", index=False)
    return d / "materials.parquet", d / "split.csv", labeled, split


def _row(out: str, first: str, second: str) -> list[int] | None:
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells[:2] == [first, second]:
            return [int(c) for c in cells[2:]]
    return None


def test_summary_table(summary_inputs):
    mat, sp, labeled, split = summary_inputs
    res = CliRunner().invoke(app, ["data", "summary", "--materials", str(mat), "--split", str(sp)],
                             env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    out = res.output
    assert f"{labeled['mp_id'].nunique()} labeled materials, {len(labeled)} element spectra" in out
    r = labeled.merge(split, on="mp_id")
    for (el, cls), g in r.groupby(["absorbing_element", "label3"]):
        want = [g.loc[g["split"] == s, "mp_id"].nunique() for s in ("train", "val", "test")]
        assert _row(out, el, cls) == [*want, g["mp_id"].nunique()], (el, cls)
    counts = split["split"].value_counts()
    assert _row(out, "all", "materials") == [int(counts.get(s, 0)) for s in ("train", "val", "test")] + [
        len(split)]


def test_summary_missing_file_one_line(tmp_path, summary_inputs):
    _, sp, _, _ = summary_inputs
    missing = tmp_path / "nope.parquet"
    res = CliRunner().invoke(app, ["data", "summary", "--materials", str(missing), "--split", str(sp)])
    assert res.exit_code != 0
    assert isinstance(res.exception, SystemExit)  # a clean exit, not an escaped exception
    assert "Traceback" not in res.output and "nope.parquet" in res.output


def test_summary_missing_file_subprocess(tmp_path, summary_inputs):
    mat, _, _, _ = summary_inputs
    proc = subprocess.run([XASTOPO, "data", "summary", "--materials", str(mat), "--split",
                           str(tmp_path / "split.csv")], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("error:") and str(tmp_path / "split.csv") in err and "dvc repro" in err
    assert proc.stdout == ""


def test_help_on_every_data_command():
    for args in (["--help"], ["data", "--help"], ["data", "summary", "--help"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0 and "Usage" in res.output


def test_summary_unreadable_file_one_line(tmp_path, summary_inputs):
    _, sp, _, _ = summary_inputs
    bad = tmp_path / "materials.parquet"
    bad.write_text("not parquet")
    proc = subprocess.run([XASTOPO, "data", "summary", "--materials", str(bad), "--split", str(sp)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
