"""Ingest: every bad raw row counted under its reason, valid rows kept; missing raw files named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from xastopo.config import ConfigError, raw_path
from xastopo.data.ingest import ingest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _bad_rows(template: pd.Series) -> tuple[pd.DataFrame, dict[str, int]]:
    e = np.asarray(template["energy"], float)
    m = np.asarray(template["mu"], np.float32)
    bad: list[tuple[str, np.ndarray, np.ndarray, str]] = []
    nan = m.copy()
    nan[5] = np.nan
    bad.append(("nan", e, nan, "Cu"))
    inf = m.copy()
    inf[-1] = np.inf
    bad.append(("inf", e, inf, "Cu"))
    back = e.copy()
    back[50], back[51] = back[51], back[50]
    bad.append(("swap", back, m, "Cu"))
    bad.append(("few", e[:10], m[:10], "Cu"))
    bad.append(("empty", e[:0], m[:0], "Cu"))
    bad.append(("mismatch", e, m[:-3], "Cu"))
    bad.append(("element", e, m, "Qq"))
    flat = np.concatenate([np.full(len(m) - 10, m[0]), m[-10:]]).astype(np.float32)
    bad.append(("copied", e, flat, "Cu"))  # only 10 points that are not a copied run
    rows = []
    for tag, ee, mm, el in bad:
        r = template.copy()
        r["spectrum_id"] = f"{template['spectrum_id']}-bad-{tag}"
        r["energy"], r["mu"], r["absorbing_element"] = ee, mm, el
        rows.append(r)
    expected = {"non_finite": 2, "energy_not_increasing": 1, "too_few_points": 1, "empty": 1,
                "length_mismatch": 1, "unknown_element": 1, "too_few_real_points": 1}
    return pd.DataFrame(rows), expected


def test_ingest_counts_every_bad_row(tmp_path, site_slice, labels_path):
    template = site_slice[site_slice["source"] == "omnixas_feff_raw"].iloc[0]
    bad, expected = _bad_rows(template)
    table = pd.concat([site_slice, bad], ignore_index=True)
    p = tmp_path / "site_spectra.parquet"
    table.to_parquet(p, index=False)

    valid, labels, report = ingest(p, labels_path, min_points=20, flat_run_tol=0.0)
    s = report["spectra"]
    assert s["rows_read"] == len(site_slice) + len(bad)
    assert s["rejected_by_reason"] == expected
    assert s["rows_rejected"] == len(bad) == sum(expected.values())
    assert s["rows_valid"] == len(valid) == len(site_slice)
    assert s["rows_read"] == s["rows_valid"] + s["rows_rejected"]  # nothing lost silently
    assert set(valid["spectrum_id"]) == set(site_slice["spectrum_id"])
    assert sum(s["rows_by_source"].values()) == len(valid)
    assert report["labels"]["rows_read"] == len(labels) == 30_962
    # valid rows come back as arrays, unchanged, with copied-run counts
    orig = site_slice.set_index("spectrum_id")
    for r in valid.head(20).itertuples(index=False):
        np.testing.assert_array_equal(r.energy, np.asarray(orig.loc[r.spectrum_id, "energy"]))
        np.testing.assert_allclose(r.mu, np.asarray(orig.loc[r.spectrum_id, "mu"]), rtol=1e-7)
    proc = valid[valid["source"] == "omnixas_feff_processed"]
    raw = valid[valid["source"] == "omnixas_feff_raw"]
    assert (proc["n_copied_start"] > 0).any()  # PROVENANCE: most processed rows start flat
    assert (raw["n_copied_start"] == 0).all()


def test_ingest_shipped_data_has_no_rejects(spectra_path, labels_path):
    valid, _, report = ingest(spectra_path, labels_path, min_points=20, flat_run_tol=0.0)
    # PROVENANCE: no NaN/inf, every energy strictly increasing; >= 100 points per row
    assert report["spectra"]["rows_rejected"] == 0
    assert report["spectra"]["rows_valid"] == report["spectra"]["rows_read"] == len(valid)


def _params(raw_dir: Path) -> dict:
    return {"data": {"raw_dir": str(raw_dir), "labels_csv": "labels/topology_labels.csv",
                     "site_spectra": "spectra/site_spectra.parquet"}}


def test_raw_path_missing_file_names_path_and_parameter(tmp_path):
    with pytest.raises(ConfigError) as ei:
        raw_path(_params(tmp_path), "site_spectra")
    msg = str(ei.value)
    assert str(tmp_path / "spectra" / "site_spectra.parquet") in msg
    assert "data.raw_dir" in msg and "data.site_spectra" in msg
    with pytest.raises(ConfigError, match="data.labels_csv"):
        raw_path(_params(tmp_path), "labels_csv")
    with pytest.raises(ConfigError, match="missing key 'data.site_structures'"):
        raw_path(_params(tmp_path), "site_structures")


def test_raw_path_found(shared_data):
    want = shared_data / "spectra" / "site_spectra.parquet"
    assert raw_path(_params(shared_data), "site_spectra") == want


def test_ingest_stage_missing_raw_file_one_line(tmp_path):
    """The stage itself: exit 1 with one readable line naming the path and the parameter."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"]["raw_dir"] = str(tmp_path / "no_such_raw_dir")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "xastopo.stages.ingest"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert str(tmp_path / "no_such_raw_dir") in err and "data.raw_dir" in err
