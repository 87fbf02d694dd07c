"""Readers: FEFF xmu.dat fixtures (checked against expected.json) and the shipped parquet/csv tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xastopo.data.readers import (
    SITE_SPECTRA_COLUMNS,
    ReaderError,
    read_labels,
    read_site_spectra,
    read_xmu,
)


def _xmu_path(fixtures_dir, fx) -> str:
    return str(fixtures_dir / fx["mp_id"] / f"{fx['site']:03d}_Cu" / "xmu.dat")


def test_there_are_ten_fixtures(expected_fixtures):
    assert len(expected_fixtures) == 10  # PROVENANCE.md: "10 raw sites"


def test_read_xmu_matches_expected_json(fixtures_dir, expected_fixtures):
    for fx in expected_fixtures:
        d = read_xmu(_xmu_path(fixtures_dir, fx))
        e, mu = d["energy"], d["mu"]
        assert len(e) == len(mu) == fx["n_points"], fx["mp_id"]
        assert e[0] == pytest.approx(fx["energy_first"], abs=1e-6)
        assert e[-1] == pytest.approx(fx["energy_last"], abs=1e-6)
        assert mu[0] == pytest.approx(fx["mu_first"], rel=1e-9)
        assert mu[-1] == pytest.approx(fx["mu_last"], rel=1e-9)
        assert mu.max() == pytest.approx(fx["mu_max"], rel=1e-9)
        assert d["xsedge50"] == pytest.approx(fx["feff_xsedge50"], rel=1e-9)
        assert np.all(np.diff(e) > 0)
        # FEFF's k grid: -1 ... 6 1/Angstrom (PROVENANCE: EGRID k_grid -1 0 0.04 / k_grid 0 6 0.04)
        assert d["k"][0] == pytest.approx(-1.0) and d["k"][-1] == pytest.approx(6.0)


def test_read_xmu_agrees_with_parquet_row(fixtures_dir, expected_fixtures, all_spectra):
    """The raw Cu rows of the parquet are the same xmu.dat files (mu stored as float32)."""
    raw = all_spectra[all_spectra["source"] == "omnixas_feff_raw"].set_index(["mp_id", "site"])
    n = 0
    for fx in expected_fixtures:
        key = (fx["mp_id"], float(fx["site"]))
        if key not in raw.index:  # a fixture may belong to a material withheld from the parquet
            continue
        row = raw.loc[key]
        d = read_xmu(_xmu_path(fixtures_dir, fx))
        np.testing.assert_allclose(np.asarray(row["energy"]), d["energy"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(np.asarray(row["mu"], float), d["mu"], rtol=1e-6)
        assert row["feff_xsedge50"] == pytest.approx(d["xsedge50"], rel=1e-9)
        n += 1
    assert n >= 5


def test_read_site_spectra_real_parquet(spectra_path, labels):
    df = read_site_spectra(spectra_path)
    for c in SITE_SPECTRA_COLUMNS:
        assert c in df.columns
    assert df["spectrum_id"].is_unique
    assert set(df["edge"]) == {"K"}
    assert set(df["source"]) == {"omnixas_feff_raw", "omnixas_feff_processed", "veidt_mp", "veidt_experiment"}
    # provenance: energy strictly increasing in every row, as many mu values as energies
    for e, m in zip(df["energy"], df["mu"], strict=True):
        assert len(e) == len(m)
        assert np.all(np.diff(e) > 0)
    # provenance: 173 points for raw Cu, 141 for processed, 0.25 eV grid
    raw = df[df["source"] == "omnixas_feff_raw"]
    proc = df[df["source"] == "omnixas_feff_processed"]
    assert set(raw["energy"].map(len)) == {173}
    assert set(proc["energy"].map(len)) == {141}
    assert set(raw["absorbing_element"]) == {"Cu"}
    assert set(proc["absorbing_element"]) == {"Ti", "V", "Cr", "Co", "Ni", "Cu"}
    np.testing.assert_allclose(np.diff(proc["energy"].iloc[0]), 0.25, atol=1e-6)
    # processed rows start at the per-element e_start of PROVENANCE.md
    starts = {"Ti": 4964.504, "V": 5464.097, "Cr": 5989.168, "Co": 7709.282, "Ni": 8332.181, "Cu": 8983.173}
    for el, g in proc.groupby("absorbing_element"):
        assert g["energy"].map(lambda e: e[0]).round(3).unique().tolist() == [starts[el]]
    # withheld materials have no spectra but the rest join to labels by mp-id
    assert df["mp_id"].isin(set(labels["mp_id"])).mean() > 0.05


def test_read_labels_real_csv(labels):
    # PROVENANCE: 30,962 rows after withholding 79 labeled ids (40 topological, 39 trivial)
    assert len(labels) == 30_962
    assert labels["mp_id"].is_unique
    counts = labels["label"].value_counts()
    assert counts["trivial"] == 17_671 - 39
    assert counts["topological"] == 11_706 - 40
    assert counts["conflict"] == 740 and counts["unknown"] == 924


def test_missing_files_raise_reader_error(tmp_path):
    missing = tmp_path / "nope"
    for reader in (read_xmu, read_site_spectra, read_labels):
        with pytest.raises(ReaderError, match="file not found") as ei:
            reader(missing)
        assert str(missing) in str(ei.value)


def test_empty_xmu_file(tmp_path):
    p = tmp_path / "xmu.dat"
    p.write_text("")
    with pytest.raises(ReaderError, match="no data lines"):
        read_xmu(p)
    p.write_text("# only a header\n#  omega e k mu mu0 chi\n")
    with pytest.raises(ReaderError, match="no data lines"):
        read_xmu(p)


def test_bad_xmu_lines(tmp_path, fixtures_dir, expected_fixtures):
    good = (fixtures_dir / expected_fixtures[0]["mp_id"] / f"{expected_fixtures[0]['site']:03d}_Cu"
            / "xmu.dat").read_text().splitlines()
    p = tmp_path / "xmu.dat"
    p.write_text("\n".join(good + ["   9130.0  1.0  6.04  1.0e+00"]) + "\n")  # 4 columns, not 6
    with pytest.raises(ReaderError, match="expected 6 columns"):
        read_xmu(p)
    p.write_text("\n".join(good + ["   9130.0  abc  6.04  1.0  1.0  0.0"]) + "\n")
    with pytest.raises(ReaderError, match="non-numeric"):
        read_xmu(p)


def test_empty_parquet_file(tmp_path):
    p = tmp_path / "site_spectra.parquet"
    p.write_bytes(b"")
    with pytest.raises(ReaderError, match="not a readable parquet") as ei:
        read_site_spectra(p)
    assert str(p) in str(ei.value)


def test_parquet_wrong_columns(tmp_path, site_slice):
    p = tmp_path / "s.parquet"
    site_slice[["spectrum_id", "mp_id", "absorbing_element"]].rename(
        columns={"absorbing_element": "element"}).to_parquet(p)
    with pytest.raises(ReaderError, match="missing column") as ei:
        read_site_spectra(p)
    msg = str(ei.value)
    for col in ("absorbing_element", "energy", "mu"):
        assert col in msg


def test_parquet_core_columns_only_gets_defaults(tmp_path, site_slice):
    p = tmp_path / "s.parquet"
    site_slice[["mp_id", "absorbing_element", "energy", "mu"]].head(5).to_parquet(p)
    df = read_site_spectra(p)
    assert len(df) == 5
    assert df["spectrum_id"].is_unique and set(df["source"]) == {"user"} and df["site"].isna().all()


def test_labels_wrong_columns(tmp_path):
    p = tmp_path / "labels.csv"
    pd.DataFrame({"mp_id": ["mp-1"], "klass": ["trivial"]}).to_csv(p, index=False)
    with pytest.raises(ReaderError, match="missing column"):
        read_labels(p)


def test_empty_labels_file(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("")
    with pytest.raises(ReaderError):
        read_labels(p)
