"""The Predictor: raw spectra → P(topological), on an ONNX Runtime session.

The CLI, the service and the screening command are thin shells over this class, so their answers
are identical by construction. It owns the exported model directory: ``model.onnx``,
``preprocessor.json`` and ``metadata.json``; checksums recorded at export are verified at load, so a
missing, corrupted or mismatched artifact stops start-up with one clear message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xastopo.data.validation import SpectrumError
from xastopo.devices import gpu_visible, preload_cuda_libraries
from xastopo.preprocessing.batching import pad_materials
from xastopo.preprocessing.preprocessor import Preprocessor, Site
from xastopo.schema import MaterialIn, Prediction


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


def session_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when a GPU is visible and onnxruntime has the provider; CPU otherwise."""
    import onnxruntime as ort

    if prefer_gpu and gpu_visible() and "CUDAExecutionProvider" in ort.get_available_providers():
        preload_cuda_libraries()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Predictor:
    """Loads an exported model directory and predicts materials."""

    def __init__(self, model_dir: str | Path, prefer_gpu: bool = True) -> None:
        import onnxruntime as ort

        d = Path(model_dir)
        meta_path, onnx_path, pre_path = d / "metadata.json", d / "model.onnx", d / "preprocessor.json"
        for p in (meta_path, onnx_path, pre_path):
            if not p.is_file():
                raise ArtifactError(f"model artifact missing: {p} (run `dvc repro export` or set XASTOPO_MODEL_DIR)")
        try:
            self.metadata: dict = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"model artifact corrupted: {meta_path} is not valid JSON") from exc
        for key, p in (("onnx_sha256", onnx_path), ("preprocessor_sha256", pre_path)):
            if sha256_file(p) != self.metadata.get(key):
                raise ArtifactError(f"model artifact checksum mismatch: {p} does not match metadata.json {key}")
        try:
            self.preprocessor = Preprocessor.load(pre_path)
        except ValueError as exc:
            raise ArtifactError(f"model artifact corrupted: {exc}") from exc
        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_path), so, providers=session_providers(prefer_gpu))
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise ArtifactError(f"model artifact corrupted: cannot load {onnx_path} ({exc})") from exc
        self.kind: str = self.metadata["model_kind"]
        self.threshold = float(self.metadata["threshold"])
        self.name = str(self.metadata["model_name"])
        self.version = str(self.metadata["model_version"])
        self.min_train_warning = 10  # elements seen in fewer training materials get a warning

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    # ---------------------------------------------------------------- inputs
    def material_arrays(self, index: int, material: MaterialIn) -> tuple[np.ndarray, np.ndarray]:
        """Validate one material against the model and turn it into (X, Z); raises InputError."""
        spectra = {s.element: [(s.energy, s.mu, 1.0)] for s in material.spectra}
        return self.sites_arrays(index, spectra, {s.element: j for j, s in enumerate(material.spectra)})

    def sites_arrays(self, index: int, spectra: dict[str, Sequence[Site]],
                     position: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(X, Z) from several weighted sites per element (the parquet path combines sites here)."""
        try:
            return self.preprocessor.material_inputs(spectra)
        except SpectrumError as exc:
            el = exc.element or "?"
            j = (position or {}).get(el)
            where = f"spectra[{j}]" if j is not None else f"spectra[{el}]"
            raise InputError(index, f"{where}.{exc.field}", f"{el}: {exc}") from None

    def model_inputs(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Padded arrays → the exported graph's inputs (NN: as is; SVMs: their feature vectors)."""
        if self.kind in ("nn", "nn_type_only"):
            return {"spectra": x, "z": z, "mask": mask}
        from xastopo.models.baselines import concat_features, type_features

        if self.kind == "svm":
            return {"features": concat_features(x, z, mask, list(self.metadata["element_z"]))}
        if self.kind == "svm_type":
            return {"features": type_features(z, mask)}
        raise ArtifactError(f"unknown model kind {self.kind!r} in metadata.json")

    # ------------------------------------------------------------ prediction
    def predict_arrays(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """P(topological) for padded arrays, float64 [N]."""
        if len(x) == 0:
            return np.zeros(0)
        out = self.session.run(None, self.model_inputs(x, z, mask))
        if self.kind in ("nn", "nn_type_only"):
            return np.asarray(out[0], dtype=np.float64).reshape(-1)
        return np.asarray(out[-1], dtype=np.float64)[:, 1]  # skl2onnx: (label, probabilities)

    def predict_materials(self, arrays: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        x, z, mask = pad_materials(arrays, self.preprocessor.n_points)
        return self.predict_arrays(x, z, mask)

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

    def predict(self, materials: list[MaterialIn]) -> list[Prediction]:
        """Predict validated request materials (raises InputError on the first bad one)."""
        arrays = [self.material_arrays(i, m) for i, m in enumerate(materials)]
        probs = self.predict_materials(arrays)
        return [self.prediction(m.material_id, p, a[1]) for m, p, a in zip(materials, probs, arrays, strict=True)]

    def describe(self) -> dict:
        """Model card for the service's metadata API."""
        keys = ("model_name", "model_version", "model_kind", "mlflow_run_id", "dataset_hash", "threshold",
                "test_metrics", "preprocessor_sha256", "onnx_sha256")
        out = {k: self.metadata.get(k) for k in keys}
        out["preprocessing"] = self.preprocessor.to_dict()
        out["execution_provider"] = self.provider
        return out
