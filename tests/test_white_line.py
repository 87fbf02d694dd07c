"""The white-line rule on real spectra: FEFF10 light-element K edges from the committed shards whose sharp
white lines fail the plain threshold are kept, real spectra that pass the threshold stay 'ok', and the real
glitch in the shipped data (a measured B K edge that plunges below its pre-edge) is still rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xastopo.config import load_params
from xastopo.data.quality import WhiteLineRule, drop_verdict, max_negative_jump, own_range_normalized
from xastopo.simulate.shards import read_shards

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")
THRESHOLD = float(PARAMS["assemble"]["max_negative_jump"])
POST = float(PARAMS["featurize"]["post_edge_ev"])


@pytest.fixture(scope="module")
def rule() -> WhiteLineRule:
    return WhiteLineRule.from_params(PARAMS, ("feff10_sim", "veidt_experiment"))


@pytest.fixture(scope="module")
def shard_spectra() -> pd.DataFrame:
    s = read_shards(REPO / "data" / "simulated" / "shards", columns=["mp_id", "absorbing_element", "energy", "mu"])
    assert len(s) > 1000
    return s


def verdict(row, rule) -> str:
    return drop_verdict(np.asarray(row.energy, float), np.asarray(row.mu, float), POST, 0.0, THRESHOLD, rule)


def test_sharp_feff10_white_lines_are_kept(shard_spectra: pd.DataFrame, rule: WhiteLineRule) -> None:
    light = shard_spectra[shard_spectra["absorbing_element"].isin(["C", "N", "O", "B", "Li", "Be"])]
    jumps = np.array([max_negative_jump(own_range_normalized(np.asarray(r.energy, float), np.asarray(r.mu, float),
                                                              POST, 0.0)) for r in light.itertuples(index=False)])
    failing = light[jumps > THRESHOLD]
    assert len(failing) >= 50  # the plain threshold rejects many real light-element spectra
    verdicts = [verdict(r, rule) for r in failing.itertuples(index=False)]
    assert verdicts.count("white_line") >= 0.95 * len(failing), pd.Series(verdicts).value_counts()
    # without the rule they stay rejected: the rule, not a looser threshold, keeps them
    assert {verdict(r, None) for r in failing.head(20).itertuples(index=False)} == {"negative_jump"}


def test_spectra_under_the_threshold_are_untouched(shard_spectra: pd.DataFrame, rule: WhiteLineRule) -> None:
    cu = shard_spectra[shard_spectra["absorbing_element"] == "Cu"].head(200)
    assert {verdict(r, rule) for r in cu.itertuples(index=False)} == {"ok"}


def test_real_glitch_and_synthetic_step_are_rejected(all_spectra: pd.DataFrame, rule: WhiteLineRule,
                                                      shard_spectra: pd.DataFrame) -> None:
    b = all_spectra[(all_spectra["source"] == "veidt_experiment") & (all_spectra["absorbing_element"] == "B")]
    assert len(b) >= 1
    assert verdict(b.iloc[0], rule) == "dip_below_pre_edge"
    # a real Cu spectrum with a step down 45 eV above its first point: a glitch, not a white line
    r = shard_spectra[shard_spectra["absorbing_element"] == "Cu"].iloc[0]
    e, mu = np.asarray(r.energy, float), np.asarray(r.mu, float).copy()
    step = mu[-1] - mu[0]
    mu[e > e[0] + 45] -= 0.8 * step
    assert drop_verdict(e, mu, POST, 0.0, THRESHOLD, rule) in {"drop_beyond_white_line_window",
                                                               "drop_not_from_a_peak", "dip_below_pre_edge"}
