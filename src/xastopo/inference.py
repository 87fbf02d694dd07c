"""Raw spectra → P(topological): the one prediction path of the CLI, the service and the export check.

Two halves, so a process that only validates and preprocesses never opens an ONNX session:

* :class:`InputBuilder` — **request → arrays**. It owns the exported model directory's
  ``preprocessor.json`` and ``metadata.json`` (checksums recorded at export are verified at load, so a
  missing, corrupted or mismatched artifact stops start-up with one clear message).
  :meth:`InputBuilder.build` validates every material against the fitted preprocessor (window
  coverage, elements with statistics) and turns it into its standardized ``(X, Z)`` arrays, collecting
  an :class:`InputError` (material index and field) for each one that cannot be used.
  :meth:`InputBuilder.predictions` turns probabilities back into :class:`~xastopo.schema.Prediction`
  answers (label by the exported threshold, warnings for elements with few training materials).
* :class:`Predictor` — the InputBuilder plus the ONNX Runtime session: **arrays → predictions**.
  :meth:`Predictor.probabilities` runs the model on per-material arrays, and
  :meth:`Predictor.predict_inputs` = probabilities + predictions.

The CLI (``batch_predict``) calls ``build`` then ``predict_inputs`` in one process; the service's
public ``XasTopo`` calls ``build`` and ``predictions`` around the ``XasTopoModel`` service, which calls
``probabilities``. Nothing here imports torch, the model code or the training code: what the served
model needs travels in the artifact, and the feature layout of its family comes from
:mod:`xastopo.families` and :mod:`xastopo.preprocessing.features`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xastopo.artifacts import sha256_file
from xastopo.data.validation import SpectrumError
from xastopo.devices import gpu_visible, preload_cuda_libraries
from xastopo.families import family
from xastopo.preprocessing.batching import pad_materials
from xastopo.preprocessing.features import model_inputs as family_inputs
from xastopo.preprocessing.preprocessor import Preprocessor, Site
from xastopo.schema import MaterialIn, Prediction, error_item

__all__ = ["ArtifactError", "InputBuilder", "InputError", "Inputs", "MaterialSites", "Predictor",
           "gpu_visible", "session_providers", "sha256_file"]

Arrays = tuple[np.ndarray, np.ndarray]  # one material: X [absorbers, n_points] float32, Z [absorbers]


class ArtifactError(RuntimeError):
    """The exported model directory is missing, corrupted or inconsistent."""


@dataclass
class InputError(ValueError):
    """A material cannot be predicted; names the material index and the field."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"materials[{self.index}].{self.field}: {self.message}"

    def item(self) -> dict:
        """As an entry of the service's error answer (:func:`xastopo.schema.error_item`)."""
        return error_item(f"materials[{self.index}].{self.field}", self.message, self.index, self.field)


@dataclass(frozen=True)
class MaterialSites:
    """One material as the preprocessor takes it: weighted sites ``(energy, mu, weight)`` per element.

    ``positions`` maps an element to its index in a request's ``spectra`` list, so errors name
    ``spectra[j].<field>``; without it (parquet input) they name ``spectra[<element>]``.
    """

    material_id: str
    spectra: dict[str, list[Site]]
    positions: dict[str, int] | None = None

    @classmethod
    def from_request(cls, material: MaterialIn) -> MaterialSites:
        return cls(material.material_id, {s.element: [(s.energy, s.mu, 1.0)] for s in material.spectra},
                   {s.element: j for j, s in enumerate(material.spectra)})


@dataclass
class Inputs:
    """The arrays of a list of materials: ``arrays[i]`` is material i's ``(X, Z)``, or None where it
    failed (its :class:`InputError` is in ``errors``, in material order)."""

    material_ids: list[str]
    arrays: list[Arrays | None]
    errors: list[InputError] = dataclasses.field(default_factory=list)

    @property
    def valid(self) -> list[int]:
        """Indices of the materials that have arrays."""
        return [i for i, a in enumerate(self.arrays) if a is not None]

    def valid_arrays(self) -> list[Arrays]:
        return [a for a in self.arrays if a is not None]


def session_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when a GPU is visible and onnxruntime has the provider; CPU otherwise."""
    import onnxruntime as ort

    if prefer_gpu and gpu_visible() and "CUDAExecutionProvider" in ort.get_available_providers():
        preload_cuda_libraries()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _progress(items: Sequence, show: bool, **kw):
    if not show:
        return items
    from tqdm import tqdm  # only the CLI asks for progress bars

    return tqdm(items, mininterval=1.0, **kw)


class InputBuilder:
    """Request → arrays, and probabilities → answers, for one exported model (no ONNX session)."""

    min_train_warning = 10  # elements seen in fewer training materials get a warning

    def __init__(self, model_dir: str | Path) -> None:
        d = Path(model_dir)
        self.model_dir = d
        meta_path, self.onnx_path, pre_path = d / "metadata.json", d / "model.onnx", d / "preprocessor.json"
        for p in (meta_path, self.onnx_path, pre_path):
            if not p.is_file():
                raise ArtifactError(f"model artifact missing: {p} (run `dvc repro export` or set XASTOPO_MODEL_DIR)")
        try:
            self.metadata: dict = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"model artifact corrupted: {meta_path} is not valid JSON") from exc
        for key, p in (("onnx_sha256", self.onnx_path), ("preprocessor_sha256", pre_path)):
            if sha256_file(p) != self.metadata.get(key):
                raise ArtifactError(f"model artifact checksum mismatch: {p} does not match metadata.json {key}")
        try:
            self.preprocessor = Preprocessor.load(pre_path)
        except ValueError as exc:
            raise ArtifactError(f"model artifact corrupted: {exc}") from exc
        try:
            self.kind: str = self.metadata["model_kind"]
            self.threshold = float(self.metadata["threshold"])
            self.name = str(self.metadata["model_name"])
            self.version = str(self.metadata["model_version"])
            self.features = family(self.kind).features
        except KeyError as exc:
            raise ArtifactError(f"model artifact corrupted: {meta_path} has no {exc}") from None
        except ValueError as exc:
            raise ArtifactError(f"model artifact corrupted: {meta_path}: {exc}") from None
        if self.features is None:
            raise ArtifactError(f"model artifact corrupted: model kind {self.kind!r} cannot be served")

    # ----------------------------------------------------------- request → arrays
    def sites_arrays(self, index: int, spectra: dict[str, Sequence[Site]],
                     position: dict[str, int] | None = None) -> Arrays:
        """(X, Z) of one material from its weighted sites per element; raises InputError."""
        try:
            return self.preprocessor.material_inputs(spectra)
        except SpectrumError as exc:
            el = exc.element or "?"
            j = (position or {}).get(el)
            where = f"spectra[{j}]" if j is not None else f"spectra[{el}]"
            raise InputError(index, f"{where}.{exc.field}", f"{el}: {exc}") from None

    def material_arrays(self, index: int, material: MaterialIn) -> Arrays:
        """(X, Z) of one validated request material; raises InputError."""
        m = MaterialSites.from_request(material)
        return self.sites_arrays(index, m.spectra, m.positions)

    def build(self, materials: Sequence[MaterialIn | MaterialSites], progress: bool = False) -> Inputs:
        """Every material's arrays; the ones that cannot be used are None with their InputError."""
        sites = [m if isinstance(m, MaterialSites) else MaterialSites.from_request(m) for m in materials]
        out = Inputs([m.material_id for m in sites], [None] * len(sites))
        for i, m in enumerate(_progress(sites, progress and len(sites) >= 200, desc="preprocess", unit="material")):
            try:
                out.arrays[i] = self.sites_arrays(i, m.spectra, m.positions)
            except InputError as exc:
                out.errors.append(exc)
        return out

    # ------------------------------------------------------ probabilities → answers
    def prediction(self, material_id: str, prob: float, z: np.ndarray) -> Prediction:
        """One answer; warns where an element had few training materials (a weak answer)."""
        from xastopo.elements import SYMBOLS

        elements = [SYMBOLS[int(v) - 1] for v in z]
        warnings = [f"{el}: only {self.preprocessor.elements[el].n_train} training material(s) had this element"
                    for el in elements if self.preprocessor.elements[el].n_train < self.min_train_warning]
        return Prediction(
            material_id=material_id, probability_topological=float(prob),
            label="topological" if prob >= self.threshold else "trivial",
            elements_used=elements, warnings=warnings, model_name=self.name, model_version=self.version)

    def predictions(self, inputs: Inputs, probs: Sequence[float]) -> list[Prediction | None]:
        """Answers in material order from the probabilities of ``inputs.valid`` (None where invalid)."""
        out: list[Prediction | None] = [None] * len(inputs.arrays)
        for i, p in zip(inputs.valid, probs, strict=True):
            out[i] = self.prediction(inputs.material_ids[i], p, inputs.arrays[i][1])
        return out


class Predictor(InputBuilder):
    """The InputBuilder plus the ONNX Runtime session: arrays → predictions."""

    def __init__(self, model_dir: str | Path, prefer_gpu: bool = True) -> None:
        import onnxruntime as ort

        super().__init__(model_dir)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), so, providers=session_providers(prefer_gpu))
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise ArtifactError(f"model artifact corrupted: cannot load {self.onnx_path} ({exc})") from exc

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def model_inputs(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Padded arrays → the exported graph's inputs, by the family's feature kind (networks: as
        they are; SVMs: their feature vectors in the training element order)."""
        return family_inputs(self.features, x, z, mask, self.metadata.get("element_z"))

    # ----------------------------------------------------------- arrays → predictions
    def predict_arrays(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """P(topological) for padded arrays, float64 [N]."""
        if len(x) == 0:
            return np.zeros(0)
        out = self.session.run(None, self.model_inputs(x, z, mask))
        if len(out) == 1:  # a network: one output, P(topological)
            return np.asarray(out[0], dtype=np.float64).reshape(-1)
        return np.asarray(out[-1], dtype=np.float64)[:, 1]  # skl2onnx: (label, probabilities)

    def probabilities(self, arrays: Sequence[Arrays], batch_size: int | None = None,
                      progress: bool = False) -> np.ndarray:
        """P(topological) of per-material arrays, in ONNX runs of at most ``batch_size`` materials."""
        step = batch_size or max(len(arrays), 1)
        starts = range(0, len(arrays), step)
        chunks = [self.predict_arrays(*pad_materials(arrays[s:s + step], self.preprocessor.n_points))
                  for s in _progress(starts, progress and len(arrays) >= 1000, desc="predict", unit="batch")]
        return np.concatenate(chunks) if chunks else np.zeros(0)

    def predict_inputs(self, inputs: Inputs, batch_size: int | None = None,
                       progress: bool = False) -> list[Prediction | None]:
        """Answers in material order (None where the material had no arrays)."""
        return self.predictions(inputs, self.probabilities(inputs.valid_arrays(), batch_size, progress))

    def predict(self, materials: Sequence[MaterialIn | MaterialSites]) -> list[Prediction]:
        """Both halves for validated request materials; raises the first InputError."""
        inputs = self.build(materials)
        if inputs.errors:
            raise inputs.errors[0]
        return self.predict_inputs(inputs)  # type: ignore[return-value]

    def describe(self) -> dict:
        """Model card for the service's metadata API."""
        keys = ("model_name", "model_version", "model_kind", "mlflow_run_id", "dataset_hash", "threshold",
                "test_metrics", "preprocessor_sha256", "onnx_sha256")
        out = {k: self.metadata.get(k) for k in keys}
        out["preprocessing"] = self.preprocessor.to_dict()
        out["execution_provider"] = self.provider
        return out
