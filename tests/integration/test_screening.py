"""Screening many materials: the Dask fan-out (a real LocalCluster on loopback) answers exactly as the
single process, on real shipped spectra with and without formulas and with unusable materials; the
literature Weyl/Dirac list is matched to labeled materials by reduced composition and space group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xastopo.inference import InputError, MaterialSites
from xastopo.screening import chunk_size, predict_materials, reduced_composition

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def candidate_materials(all_spectra: pd.DataFrame, labels: pd.DataFrame) -> list[MaterialSites]:
    """~300 real shipped materials (site spectra as sent), every third without its formula, two broken
    (a spectrum cut to 5 points; a formula that does not hold the spectrum's element)."""
    formulas = dict(zip(labels["mp_id"], labels["formula"], strict=True))
    rows = all_spectra[all_spectra["source"] != "veidt_experiment"]
    ids = sorted(rows["mp_id"].unique())[:300]
    out = []
    for i, (mp, g) in enumerate(rows[rows["mp_id"].isin(ids)].groupby("mp_id", sort=True)):
        spectra: dict[str, list] = {}
        for r in g.itertuples(index=False):
            site = (np.asarray(r.energy, float), np.asarray(r.mu, float), 1.0)
            spectra.setdefault(r.absorbing_element, []).append(site)
        f = formulas.get(mp)
        out.append(MaterialSites(str(mp), spectra, formula=None if (i % 3 == 0 or pd.isna(f)) else str(f)))
    el, sites = next(iter(out[10].spectra.items()))
    out[10] = MaterialSites("cut", {el: [(sites[0][0][:5], sites[0][1][:5], 1.0)]})
    out[77] = MaterialSites("wrong-formula", out[77].spectra, formula="NaCl")
    return out


def test_dask_fan_out_equals_single_process(exported_any_model_dir: Path, candidate_materials) -> None:
    single = predict_materials(exported_any_model_dir, candidate_materials, batch_size=32)
    fanned = predict_materials(exported_any_model_dir, candidate_materials, batch_size=32, distributed=True,
                               workers=2, chunks_per_worker=2)
    assert len(single) == len(fanned) == len(candidate_materials)
    errors = [i for i, a in enumerate(single) if isinstance(a, InputError)]
    assert errors[:2] == [10, 77] or set(errors) >= {10, 77}, errors
    for a, b in zip(single, fanned, strict=True):
        if isinstance(a, InputError):
            assert isinstance(b, InputError) and (a.index, a.field, a.message) == (b.index, b.field, b.message)
        else:
            assert a.model_dump() == b.model_dump()  # identical to the last bit, not merely close
    probs = [a.probability_topological for a in single if not isinstance(a, InputError)]
    assert len(set(np.round(probs, 6))) > 20  # real, varied answers
    # with a formula, elements without a spectrum enter by type; without one, only the spectra's elements
    assert any(a.elements_by_type for a in single if not isinstance(a, InputError))
    assert any(not a.elements_by_type for a in single if not isinstance(a, InputError))


def test_blocks_and_concurrent_runs_answer_as_batch_by_batch(exported_any_model_dir: Path,
                                                              candidate_materials) -> None:
    """``predict:`` options change how the in-process path cuts and runs the materials (blocks of several
    batches, ordered by their number of absorbers; two ONNX runs at once, each single-threaded), never an
    answer or an error's index: identical to batch-by-batch, one run at a time, on mixed widths."""
    from xastopo.config import PredictOptions

    base = predict_materials(exported_any_model_dir, candidate_materials, batch_size=16)
    widths = {len(a.elements_with_spectrum) + len(a.elements_by_type) for a in base if not isinstance(a, InputError)}
    assert len(widths) >= 3  # mixed widths: the ordering has something to do
    for options in (PredictOptions(block_materials=100), PredictOptions(True, 2, 64), PredictOptions(False, 2, 0)):
        got = predict_materials(exported_any_model_dir, candidate_materials, batch_size=16, options=options)
        for a, b in zip(base, got, strict=True):
            if isinstance(a, InputError):
                assert isinstance(b, InputError) and (a.index, a.field, a.message) == (b.index, b.field, b.message)
            else:
                assert a.model_dump() == b.model_dump(), options


def test_chunks_are_whole_batches() -> None:
    assert chunk_size(1000, 64, 8) % 64 == 0
    assert chunk_size(10, 64, 8) == 64
    assert -(-1000 // chunk_size(1000, 64, 8)) <= 8


def test_literature_list_matches_labeled_trivial_weyl_semimetals(labels: pd.DataFrame) -> None:
    from xastopo.config import load_params
    from xastopo.stages.screen import literature_matches

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    m = literature_matches(params, labels)
    taas = m[m["literature_formula"] == "As1Ta1"]
    assert "mp-1936" in set(taas["mp_id"])  # TaAs, I4_1md: a Weyl semimetal that the labels call trivial
    assert (taas["spacegroup"] == 109).all()
    assert reduced_composition("Ta2 As2") == reduced_composition("As1Ta1") == (("As", 1), ("Ta", 1))
    assert reduced_composition("Cu0.5O") is None and reduced_composition("Xx2") is None


def test_cli_predict_distributed_equals_in_process(exported_any_model_dir: Path, all_spectra: pd.DataFrame,
                                                   tmp_path: Path) -> None:
    """`xastopo predict --workers 2` (a LocalCluster) writes exactly the CSV of the single process."""
    import subprocess
    import sys

    rows = all_spectra[all_spectra["source"] != "veidt_experiment"]
    ids = sorted(rows["mp_id"].unique())[300:420]
    rows[rows["mp_id"].isin(ids)][["mp_id", "absorbing_element", "energy", "mu"]].to_parquet(tmp_path / "in.parquet")
    outs = []
    for extra in ([], ["--workers", "2"]):
        out = tmp_path / f"out{len(extra)}.csv"
        cmd = [sys.executable, "-m", "xastopo.cli", "predict", str(tmp_path / "in.parquet"), "--out", str(out),
               "--model-dir", str(exported_any_model_dir), "--skip-invalid", "--batch-size", "16", *extra]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        outs.append(pd.read_csv(out))
    assert len(outs[0]) == len(ids) and outs[0]["probability_topological"].notna().sum() > 50
    pd.testing.assert_frame_equal(outs[0], outs[1])
