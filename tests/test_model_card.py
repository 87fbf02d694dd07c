"""The few-training-materials warning: one threshold for the answers' warnings (InputBuilder) and the
model card's limits (export), so the two cannot drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xastopo.config import load_params
from xastopo.preprocessing import preprocessor as preprocessor_module
from xastopo.preprocessing.preprocessor import ElementWindow, Preprocessor

REPO = Path(__file__).resolve().parents[1]

# The real exported-model fixtures of the integration tests, loaded by path (as test_predict_cli does).


@pytest.fixture()
def pre() -> Preprocessor:
    """The params' preprocessor settings with three elements of 3, 12 and 40 training materials."""
    p = Preprocessor.from_params(load_params(REPO / "params.yaml"))
    p.elements = {"Cu": ElementWindow(8985.0, 9041.0, n_train=40), "Ti": ElementWindow(4966.0, 4998.0, n_train=12),
                  "Sn": ElementWindow(29230.0, 29285.0, n_train=3)}
    return p


@pytest.mark.parametrize("threshold", [5, 20, 100])
def test_model_card_and_answers_share_the_threshold(pre: Preprocessor, monkeypatch: pytest.MonkeyPatch,
                                                    threshold: int) -> None:
    from xastopo.export.model_card import limits

    monkeypatch.setattr(preprocessor_module, "MIN_TRAIN_WARNING", threshold)
    expected = [el for el in sorted(pre.elements) if pre.elements[el].n_train < threshold]
    assert [el for el in sorted(pre.elements) if pre.few_training(el)] == expected
    few = [line for line in limits(pre, {}) if line.startswith("Few training spectra")]
    assert len(few) == 1 and f"(< {threshold} materials)" in few[0]
    assert few[0].split(": ", 1)[1].split(" —")[0] == ", ".join(expected)


@pytest.mark.slow
def test_answers_warn_by_the_same_threshold(monkeypatch: pytest.MonkeyPatch, exported_any_model_dir: Path) -> None:
    """InputBuilder's warnings follow the same threshold (a real small exported model)."""
    from xastopo.inference import InputBuilder

    b = InputBuilder(exported_any_model_dir)
    n = b.preprocessor.elements["Cu"].n_train
    z, has = np.asarray([29]), np.ones(1)
    for threshold, warned in ((n, False), (n + 1, True)):
        monkeypatch.setattr(preprocessor_module, "MIN_TRAIN_WARNING", threshold)
        w = b.prediction("x", 0.5, z, has).warnings
        assert any(s.startswith("Cu: only") for s in w) == warned
