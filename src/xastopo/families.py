"""The one list of model families: name → trainer, input features, exporter, threshold parameter.

Every place that needs to know which models exist (the ``train`` stage and its DVC ``foreach``, the
report, ``select``, ``export``, the Predictor) reads this table, so adding a family is one entry here
plus its trainer. It is a leaf module (no heavy imports): trainers and exporters are named as
``"module:function"`` strings and imported only by the stage that runs them, so the service can read
which features a family needs without importing torch, scikit-learn or the training code.

Features (how the Predictor turns padded per-absorber arrays into the exported graph's inputs):

- ``padded``: the arrays as they are (``spectra``, ``z``, ``mask``): the paper's networks.
- ``padded_any``: the same plus ``has_spectrum`` (every element of the composition is an absorber; 0
  where it has no spectrum): ``nn_any``, which reads a formula plus any subset of edges. Its graph
  also outputs an ``uncertainty`` beside the calibrated ``probability``.
- ``concat_spectra``: per-element spectra concatenated in the training element order (``svm``).
- ``type_presence``: one-hot presence of the absorbing elements (``svm_type``).
- ``None``: the family is a reference that is never exported (``pca_kmeans``, ``composition``).

Interfaces: a trainer is ``trainer(family, ctx: xastopo.training.trainers.Context) -> Trained``; an
exporter is ``exporter(model_dir, onnx_path, preprocessor) -> xastopo.export.onnx_export.Exported``.
The pipeline trains the families listed in params.yaml ``train.families`` (one DVC stage each,
``train@<name>``); :func:`pipeline_families` checks that list against this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Family:
    """One model family. ``params`` is its block in params.yaml (also its ``threshold`` rule:
    ``val_roc``, the balanced point of the validation ROC, or a number)."""

    name: str
    trainer: str
    features: str | None
    exporter: str | None
    reads_spectra: bool
    params: str

    def load_trainer(self) -> Any:
        return _resolve(self.trainer)

    def load_exporter(self) -> Any:
        if self.exporter is None:
            raise ValueError(f"model family '{self.name}' cannot be exported")
        return _resolve(self.exporter)


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(import_module(module), attr)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("nn_any", "xastopo.training.trainers:train_network_any", "padded_any",
               "xastopo.export.onnx_export:export_network_any", True, "nn_any"),
        Family("nn", "xastopo.training.trainers:train_network", "padded",
               "xastopo.export.onnx_export:export_network", True, "nn"),
        Family("nn_type_only", "xastopo.training.trainers:train_network", "padded",
               "xastopo.export.onnx_export:export_network", False, "nn_type_only"),
        Family("svm", "xastopo.training.trainers:train_svm", "concat_spectra",
               "xastopo.export.onnx_export:export_svc", True, "svm"),
        Family("svm_type", "xastopo.training.trainers:train_svm", "type_presence",
               "xastopo.export.onnx_export:export_svc", False, "svm_type"),
        Family("pca_kmeans", "xastopo.training.trainers:train_pca_kmeans", None, None, True, "pca_kmeans"),
        Family("composition", "xastopo.training.trainers:train_composition", None, None, False, "composition"),
    )
}
#: Report order (the table in the README and reports/comparison.md).
ORDER: tuple[str, ...] = tuple(FAMILIES)


def family(name: str) -> Family:
    """The family called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})") from None


def pipeline_families(params: dict) -> list[Family]:
    """The families params.yaml ``train.families`` trains, checked against the registry.

    Each must be a known family, listed once, with its own params block holding a ``threshold``
    rule; dvc.yaml tracks that block as ``${item}``, so the block must be named like the family.
    """
    names = list((params.get("train") or {}).get("families") or [])
    if not names:
        raise ValueError("params.yaml: train.families must list the model families to train")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"params.yaml: train.families lists {', '.join(dup)} more than once")
    fams = [family(n) for n in names]
    for f in fams:
        if f.params != f.name:
            raise ValueError(f"family '{f.name}' reads params block '{f.params}', but dvc.yaml tracks "
                             f"the block named like the family")
        block = params.get(f.params)
        if not isinstance(block, dict) or "threshold" not in block:
            raise ValueError(f"params.yaml: {f.params}.threshold is missing (val_roc or a number)")
    return fams
