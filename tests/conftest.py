"""Shared fixtures: the read-only raw data in ../shared/data and small deterministic slices of it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

# the small real exported models and requests built from them (tests/model_fixtures.py), for every module
pytest_plugins = ["model_fixtures"]

# The pipeline defaults of params.yaml, repeated here so a test states what it runs with.
EXCLUDE = ["He", "Ne", "Ar", "Kr", "Xe", "Pa"]
TRAIN_SOURCES = ["omnixas_feff_raw", "omnixas_feff_processed", "veidt_mp", "feff10_sim"]
SOURCE_PRIORITY = ["omnixas_feff_raw", "veidt_mp", "omnixas_feff_processed", "feff10_sim"]


def _assemble_kwargs(**over) -> dict:
    kw = dict(
        exclude_elements=list(EXCLUDE), max_negative_jump_threshold=0.5, train_sources=TRAIN_SOURCES,
        source_priority=SOURCE_PRIORITY, post_edge_ev=5.0, flat_run_tol=0.0,
    )
    kw.update(over)
    return kw


@pytest.fixture(scope="session")
def assemble_kwargs():
    """``assemble_kwargs(**overrides)`` → keyword arguments of `assemble` with the params.yaml defaults."""
    return _assemble_kwargs


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "spectra" / "site_spectra.parquet").is_file():
        pytest.skip(f"raw data not found at {SHARED_DATA} (the tests need ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spectra_path(shared_data: Path) -> Path:
    return shared_data / "spectra" / "site_spectra.parquet"


@pytest.fixture(scope="session")
def labels_path(shared_data: Path) -> Path:
    return shared_data / "labels" / "topology_labels.csv"


@pytest.fixture(scope="session")
def fixtures_dir(shared_data: Path) -> Path:
    return shared_data / "spectra" / "fixtures"


@pytest.fixture(scope="session")
def expected_fixtures(fixtures_dir: Path) -> list[dict]:
    return json.loads((fixtures_dir / "expected.json").read_text())["fixtures"]


@pytest.fixture(scope="session")
def all_spectra(spectra_path: Path) -> pd.DataFrame:
    """The whole shipped site_spectra.parquet (13k rows, ~0.3 s). Do not mutate."""
    return pd.read_parquet(spectra_path)


@pytest.fixture(scope="session")
def labels(labels_path: Path) -> pd.DataFrame:
    """The labels csv as the pipeline reads it. Do not mutate."""
    from xastopo.data.readers import read_labels

    return read_labels(labels_path)


@pytest.fixture(scope="session")
def structures(shared_data: Path) -> pd.DataFrame:
    return pd.read_parquet(shared_data / "spectra" / "structures.parquet")


def _pick_materials(all_spectra: pd.DataFrame, labels: pd.DataFrame) -> list[str]:
    """Deterministic material choice: per (source, element), the first ids (sorted) of each label kind."""
    lab = labels.set_index("mp_id")
    kind = pd.Series("not_in_labels", index=all_spectra["mp_id"].unique())
    known = kind.index.intersection(lab.index)
    l3 = lab.loc[known, "label3"].fillna("")
    l2 = lab.loc[known, "label"]
    kind.loc[known] = [b if b in ("conflict", "unknown") else c for b, c in zip(l2, l3, strict=True)]
    quota = {"trivial": 6, "TI": 4, "TSM": 4, "conflict": 2, "unknown": 2, "not_in_labels": 5}
    picked: set[str] = set()
    comp = all_spectra[all_spectra["source"] != "veidt_experiment"]
    for _, g in comp.groupby(["source", "absorbing_element"], sort=True):
        mats = sorted(g["mp_id"].unique())
        for k, n in quota.items():
            picked.update([m for m in mats if kind[m] == k][:n])
    # Cu sites shipped both as raw FEFF runs and as OmniXAS processed rows: the first few materials
    raw = all_spectra[all_spectra["source"] == "omnixas_feff_raw"]
    proc = all_spectra[(all_spectra["source"] == "omnixas_feff_processed")
                       & (all_spectra["absorbing_element"] == "Cu")]
    both = sorted(set(raw["mp_id"]) & set(proc["mp_id"]))
    picked.update(both[:8])
    return sorted(picked)


@pytest.fixture(scope="session")
def site_slice(all_spectra: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """A few hundred real rows: every row (all sources/elements/sites) of deterministically chosen
    materials, so materials are complete, plus all veidt_experiment rows. Do not mutate."""
    mats = set(_pick_materials(all_spectra, labels))
    keep = all_spectra["mp_id"].isin(mats) | (all_spectra["source"] == "veidt_experiment")
    return all_spectra[keep].sort_values("spectrum_id").reset_index(drop=True)


@pytest.fixture(scope="session")
def validated_slice(site_slice: pd.DataFrame) -> pd.DataFrame:
    """The slice after ingest validation (what `assemble` receives)."""
    from xastopo.data.ingest import validate_sites

    valid, reasons = validate_sites(site_slice, min_points=20, flat_run_tol=0.0)
    assert sum(reasons.values()) == 0, reasons  # provenance: no shipped row is invalid
    return valid


@pytest.fixture(scope="session")
def slice_equivalence(site_slice: pd.DataFrame, structures: pd.DataFrame) -> dict:
    from xastopo.data.structures import equivalence_table

    return equivalence_table(structures, set(site_slice["mp_id"]))


@pytest.fixture(scope="session")
def assembled_slice(validated_slice, labels, slice_equivalence):
    """(labeled, unlabeled, experimental, report) of `assemble` on the slice with pipeline defaults."""
    from xastopo.data.assemble import assemble

    return assemble(validated_slice, labels, slice_equivalence, **_assemble_kwargs())


@pytest.fixture(scope="session")
def labeled_records(all_spectra: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Real labeled (material, element) records: `assemble` on every computed spectrum of a
    material with a usable label (no structures: weights are irrelevant to the split)."""
    from xastopo.data.assemble import assemble
    from xastopo.data.labels import usable_labels

    usable, _ = usable_labels(labels)
    rows = all_spectra[all_spectra["mp_id"].isin(set(usable["mp_id"]))
                       & (all_spectra["source"] != "veidt_experiment")]
    labeled, _, _, _ = assemble(rows, labels, {}, **_assemble_kwargs())
    return labeled
