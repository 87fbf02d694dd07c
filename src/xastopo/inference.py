"""Raw spectra → P(topological): the one prediction path of the CLI, the service and the export check.

Two halves, so a process that only validates and preprocesses never opens an ONNX session:

* :class:`InputBuilder` — **request → arrays**. It owns the exported model directory's
  ``preprocessor.json`` and ``metadata.json`` (checksums recorded at export are verified at load, so a
  missing, corrupted or mismatched artifact stops start-up with one clear message).
  :meth:`InputBuilder.build` validates every material against the fitted preprocessor (window
  coverage, elements with statistics) and turns it into its standardized ``(X, Z, has)`` arrays,
  collecting an :class:`InputError` (material index and field) for each one that cannot be used.
  :meth:`InputBuilder.predictions` turns probabilities (and uncertainties) back into
  :class:`~xastopo.schema.Prediction` answers (label by the exported threshold, warnings for elements
  with few training materials or read by their type only).
* :class:`Predictor` — the InputBuilder plus the ONNX Runtime session: **arrays → predictions**.
  :meth:`Predictor.outputs` runs the model on per-material arrays (probabilities and, when the graph
  has one, uncertainties), and :meth:`Predictor.predict_inputs` = outputs + predictions.

Which elements a material's arrays hold depends on the family's feature kind
(:mod:`xastopo.families`): for ``padded_any`` (``nn_any``) every element of the composition is an
absorber, with its spectrum (``has`` = 1) where one was sent and the preprocessor has statistics for
its element, by its type only (``has`` = 0, a zero row) otherwise; a spectrum of an element without
statistics is then not refused but read by type, with a warning. For the other kinds only the
elements with spectra are absorbers (``has`` = 1 for all), a spectrum of an element without
statistics is refused, and a material without spectra cannot be answered.

The CLI (``batch_predict``) calls ``build`` then ``predict_inputs`` in one process; the service's
public ``XasTopo`` calls ``build`` and ``predictions`` around the ``XasTopoModel`` service, which calls
``outputs``. Nothing here imports torch, the model code or the training code: what the served
model needs travels in the artifact, and the feature layout of its family comes from
:mod:`xastopo.families` and :mod:`xastopo.preprocessing.features`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xastopo.artifacts import sha256_file
from xastopo.data.validation import SpectrumError
from xastopo.devices import gpu_visible, preload_cuda_libraries
from xastopo.elements import SYMBOLS, atomic_number, parse_formula
from xastopo.families import family
from xastopo.preprocessing.batching import pad_inputs
from xastopo.preprocessing.features import model_inputs as family_inputs
from xastopo.preprocessing.preprocessor import Preprocessor, Site
from xastopo.schema import MaterialIn, Prediction, error_item

if TYPE_CHECKING:  # the session is opened lazily: an InputBuilder-only process never imports onnxruntime
    import onnxruntime as ort

__all__ = ["ArtifactError", "InputBuilder", "InputError", "Inputs", "MaterialSites", "Predictor",
           "gpu_visible", "session_providers", "sha256_file"]

# One material: X [absorbers, n_points] float32, Z [absorbers] int64, has [absorbers] float32 (1 where
# the absorber's row of X is its spectrum, 0 where it enters by its type only and the row is zeros).
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]
#: feature kinds whose models read every element of the composition (``has`` = 0 without a spectrum)
COMPOSITION_KINDS = frozenset({"padded_any"})
COMPOSITION_ONLY_WARNING = ("composition only: no spectrum was read; the answer rests on the elements' "
                            "types alone")


class _CompositionError(Exception):
    """Why a composition cannot be read: the field (``element`` set: that element's spectrum) and words."""

    def __init__(self, field: str, message: str, element: str | None = None) -> None:
        super().__init__(message)
        self.field, self.message, self.element = field, message, element


@functools.lru_cache(maxsize=4096)
def _composition(formula: str | None, elements: tuple[str, ...] | None, spectra: tuple[str, ...]
                 ) -> tuple[tuple[str, ...], np.ndarray]:
    """(elements sorted by Z, their Z) of a material given by ``formula`` or ``elements`` (neither: its
    spectra's elements), checking that every spectrum's element belongs to it; :class:`_CompositionError`
    otherwise. Cached (bounded): a request's materials mostly repeat a few compositions, and parsing,
    sorting and the Z array per material were a fifth of the service's per-material Python time. The
    Z array is shared between answers, so it is read-only."""
    if formula is not None:
        try:
            given: set[str] | None = set(parse_formula(formula))
        except ValueError as exc:
            raise _CompositionError("formula", str(exc)) from None
        name = f"the formula '{formula}'"
    elif elements is not None:
        given, name = set(elements), f"elements [{', '.join(elements)}]"
        for j, el in enumerate(elements):
            try:
                atomic_number(el)
            except KeyError as exc:
                raise _CompositionError(f"elements[{j}]", str(exc.args[0])) from None
    else:
        given, name = None, ""
    for el in spectra:
        try:
            atomic_number(el)
        except KeyError as exc:
            raise _CompositionError("element", f"{el}: {exc.args[0]}", el) from None
        if given is not None and el not in given:
            raise _CompositionError("element", f"'{el}' is not in {name}", el)
    els = tuple(sorted(given if given is not None else set(spectra), key=atomic_number))
    z = np.asarray([atomic_number(el) for el in els], dtype=np.int64)
    z.flags.writeable = False
    return els, z


@functools.lru_cache(maxsize=64)
def _ones(n: int) -> np.ndarray:
    """A read-only float32 vector of ``n`` ones (``has`` of a material whose every element has its spectrum),
    shared between answers: one allocation less per material."""
    out = np.ones(n, dtype=np.float32)
    out.flags.writeable = False
    return out


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


@dataclass(slots=True)
class MaterialSites:
    """One material as the preprocessor takes it: weighted sites ``(energy, mu, weight)`` per element,
    and its composition (``formula`` or ``elements``; neither: the spectra's elements). Not frozen, on
    purpose: one is built for every material of every request, and a frozen dataclass's ``__init__``
    cost three times a plain one's; slots: no ``__dict__`` per material (treat it as read-only all the
    same; ``dataclasses.replace`` makes changed copies).

    ``positions`` maps an element to its index in a request's ``spectra`` list, so errors name
    ``spectra[j].<field>``; without it (parquet input) they name ``spectra[<element>]``.
    ``measured`` marks the elements whose spectra are measured (``kind: experimental``, beamline
    files): per site, (the file it came from or "", the edge its header names or None). Those sites
    are normalized and aligned (:meth:`Preprocessor.measured_site`) before the computed path.
    """

    material_id: str
    spectra: dict[str, list[Site]]
    positions: dict[str, int] | None = None
    formula: str | None = None
    elements: tuple[str, ...] | None = None
    measured: dict[str, list[tuple[str, str | None]]] | None = None

    @classmethod
    def from_request(cls, material: MaterialIn) -> MaterialSites:
        spectra: dict[str, list[Site]] = {}
        positions: dict[str, int] = {}
        measured: dict[str, list[tuple[str, str | None]]] | None = None
        for j, s in enumerate(material.spectra):  # one pass (this runs for every material of every request)
            spectra[s.element] = [(s.energy, s.mu, 1.0)]
            positions[s.element] = j
            if s.kind == "experimental":
                if measured is None:
                    measured = {}
                measured[s.element] = [("", None)]
        return cls(material.material_id, spectra, positions, material.formula,
                   tuple(material.elements) if material.elements is not None else None, measured)

    def composition(self, index: int) -> list[str]:
        """The material's elements sorted by Z; an InputError for an unreadable formula or a spectrum
        of an element outside the given composition (the request schema checks both too)."""
        return list(self.composition_z(index)[0])

    def composition_z(self, index: int) -> tuple[tuple[str, ...], np.ndarray]:
        """(:meth:`composition`, their atomic numbers as a read-only int64 array); raises InputError."""
        key = (self.formula, self.elements, tuple(self.spectra))
        try:
            try:
                return _composition(*key)
            except TypeError:  # an unhashable formula or elements (not from the schema): the same rules, uncached
                return _composition.__wrapped__(*key)
        except _CompositionError as exc:
            field = exc.field if exc.element is None else f"{self.where(exc.element)}.element"
            raise InputError(index, field, exc.message) from None

    def is_measured(self, element: str) -> bool:
        """Whether the element's spectra are measured (normalized and aligned by the measured path)."""
        return bool((self.measured or {}).get(element))

    def where(self, element: str) -> str:
        """How errors name an element's spectrum: ``spectra[j]`` (request) or ``spectra[<element>]``."""
        j = (self.positions or {}).get(element)
        return f"spectra[{j}]" if j is not None else f"spectra[{element}]"


@dataclass
class Inputs:
    """The arrays of a list of materials: ``arrays[i]`` is material i's ``(X, Z, has)``, or None where
    it failed (its :class:`InputError` is in ``errors``, in material order). ``notes[i]``: warnings
    found while building material i's arrays (e.g. a spectrum read by type only)."""

    material_ids: list[str]
    arrays: list[Arrays | None]
    errors: list[InputError] = dataclasses.field(default_factory=list)
    notes: list[list[str]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.notes:
            self.notes = [[] for _ in self.arrays]

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


def _usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS tells it (else every core), capped by a
    cgroup v2 CPU quota (a container limited to 2 CPUs on a 64-core host runs 2 runs at once, not 64)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _progress(items: Iterable, show: bool, **kw):
    if not show:
        return items
    from tqdm import tqdm  # only the CLI asks for progress bars

    return tqdm(items, mininterval=1.0, **kw)


class InputBuilder:
    """Request → arrays, and probabilities → answers, for one exported model (no ONNX session)."""

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

    @property
    def reads_composition(self) -> bool:
        """Whether the model reads every element of the composition (any subset with spectra)."""
        return self.features in COMPOSITION_KINDS

    # ----------------------------------------------------------- request → arrays
    def sites_arrays(self, index: int, spectra: dict[str, Sequence[Site]],
                     position: dict[str, int] | None = None) -> Arrays:
        """(X, Z, has) of one material from its weighted sites per element (the spectra's elements
        are its composition); raises InputError."""
        return self.material_arrays(index, MaterialSites("", dict(spectra), position))

    def material_arrays(self, index: int, material: MaterialIn | MaterialSites) -> Arrays:
        """(X, Z, has) of one material; raises InputError naming the field."""
        return self.material_inputs(index, material)[0]

    def material_inputs(self, index: int, material: MaterialIn | MaterialSites,
                        done: dict[str, np.ndarray] | None = None) -> tuple[Arrays, list[str]]:
        """((X, Z, has), warnings) of one material; raises InputError naming the field. ``done``: its
        elements already transformed in a batch (:meth:`build`); the others are transformed here."""
        m = material if isinstance(material, MaterialSites) else MaterialSites.from_request(material)
        composition, z = m.composition_z(index)
        if not self.reads_composition:
            return self._spectra_arrays(index, m, done), []
        if done is not None and len(done) == len(composition):  # every element's row came with the batch
            rows = [done[el] for el in composition]
            return (rows[0][None] if len(rows) == 1 else np.stack(rows), z, _ones(len(rows))), []
        notes: list[str] = []
        has = np.zeros(len(composition), dtype=np.float32)
        x = np.zeros((len(composition), self.preprocessor.n_points), dtype=np.float32)  # by type: zeros
        for a, el in enumerate(composition):
            if done is not None and el in done:  # transformed with the batch (computed spectra only)
                x[a] = done[el]
                has[a] = 1.0
            elif el in m.spectra:
                sites = self._sites(index, m, el)  # measured: checked and normalized even if read by type
                if el in self.preprocessor.elements:
                    x[a] = self._transform(index, m, el, sites)
                    has[a] = 1.0
                else:
                    notes.append(f"{el}: no training spectra for this element; used by its type only")
        return (x, z, has), notes

    def _spectra_arrays(self, index: int, m: MaterialSites, done: dict[str, np.ndarray] | None = None) -> Arrays:
        """Models that read spectra only: the elements with spectra are the absorbers."""
        if not m.spectra:
            raise InputError(index, "spectra", f"this model (kind '{self.kind}') needs spectra: send at least "
                                               "one absorbing element's spectrum")
        spectra = {el: self._sites(index, m, el) for el in m.spectra}
        try:
            x, z = self.preprocessor.material_inputs(spectra, done,
                                                     measured={el for el in spectra if m.is_measured(el)})
        except SpectrumError as exc:
            el = exc.element or "?"
            raise InputError(index, f"{m.where(el)}.{exc.field}", f"{el}: {exc}") from None
        return x, z, np.ones(len(z), dtype=np.float32)

    def _sites(self, index: int, m: MaterialSites, element: str) -> list[Site]:
        """The element's sites as the computed path takes them: measured ones normalized (K-edge
        check, e0, pre-edge line, edge step) and, for an element with training statistics, aligned
        onto its reference edge; an InputError naming the file and the reason otherwise (also when
        the numbers break the normalization's arithmetic: a bad spectrum, not a server error)."""
        sites = list(m.spectra[element])
        if not m.is_measured(element):
            return sites
        info = m.measured[element]  # type: ignore[index]
        out: list[Site] = []
        for j, (energy, mu, w) in enumerate(sites):
            source, edge = info[j] if j < len(info) else ("", None)
            try:
                if element in self.preprocessor.elements:
                    e, norm = self.preprocessor.measured_site(element, energy, mu, edge)
                else:
                    n = self.preprocessor.normalize_measured(element, energy, mu, edge)
                    e, norm = n.energy, n.norm
            except SpectrumError as exc:
                where = f"{source}: " if source else ""
                raise InputError(index, f"{m.where(element)}.{exc.field}",
                                 f"{element}: {where}{exc}") from None
            except (ValueError, ArithmeticError) as exc:  # LinAlgError is a ValueError; FloatingPointError,
                where = f"{source}: " if source else ""   # OverflowError are ArithmeticErrors
                raise InputError(index, f"{m.where(element)}.energy",
                                 f"{element}: {where}the normalization failed on these numbers "
                                 f"({type(exc).__name__}: {exc})") from None
            out.append((e, norm, w))
        return out

    def _transform(self, index: int, m: MaterialSites, element: str,
                   sites: Sequence[Site] | None = None) -> np.ndarray:
        try:
            return self.preprocessor.transform(element, m.spectra[element] if sites is None else sites,
                                               align=not m.is_measured(element)).astype(np.float32)
        except SpectrumError as exc:
            raise InputError(index, f"{m.where(element)}.{exc.field}", f"{element}: {exc}") from None

    def build(self, materials: Sequence[MaterialIn | MaterialSites], progress: bool = False) -> Inputs:
        """Every material's arrays; the ones that cannot be used are None with their InputError.

        The computed spectra are transformed per element for the whole batch first (:meth:`batch_rows`), then
        each material is assembled by :meth:`material_inputs`, which transforms alone only what the batch
        left out (measured spectra, and spectra that fail: there their error is raised, in material order)."""
        sites = [m if isinstance(m, MaterialSites) else MaterialSites.from_request(m) for m in materials]
        out = Inputs([m.material_id for m in sites], [None] * len(sites))
        done = self.batch_rows(sites)
        for i, m in enumerate(_progress(sites, progress and len(sites) >= 200, desc="preprocess", unit="material")):
            try:
                out.arrays[i], out.notes[i] = self.material_inputs(i, m, done.get(i))
            except InputError as exc:
                out.errors.append(exc)
        return out

    def batch_rows(self, materials: Sequence[MaterialSites]) -> dict[int, dict[str, np.ndarray]]:
        """{material index: {element: standardized float32 row}} of every computed spectrum of an element
        with training statistics, one :meth:`Preprocessor.transform_many` per element (value for value what
        :meth:`material_inputs` computes alone, in a fraction of the time); the failing ones are left out.
        The rows are read-only views of one array per element (a material whose elements all came with
        the batch gets them as its ``X`` without a copy)."""
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(materials):
            for el in m.spectra:
                if el in self.preprocessor.elements and not m.is_measured(el):
                    groups.setdefault(el, []).append(i)
        done: dict[int, dict[str, np.ndarray]] = {}
        for el, idx in groups.items():
            rows, errors = self.preprocessor.transform_many(el, [materials[i].spectra[el] for i in idx])
            rows = rows.astype(np.float32)  # the cast material_inputs' float32 X makes, once per element
            rows.flags.writeable = False
            for i, row, err in zip(idx, rows, errors, strict=True):
                if err is None:
                    done.setdefault(i, {})[el] = row
        return done

    # ------------------------------------------------------ probabilities → answers
    def prediction(self, material_id: str, prob: float, z: np.ndarray, has: np.ndarray | None = None,
                   uncertainty: float | None = None, notes: Sequence[str] = ()) -> Prediction:
        """One answer; warns where an element read with its spectrum had few training materials (a
        weak answer), where a spectrum was read by type only (``notes``), and when no spectrum was
        read at all."""
        elements = [SYMBOLS[int(v) - 1] for v in z]
        has = np.ones(len(elements)) if has is None else np.asarray(has)
        with_spectrum = [el for el, h in zip(elements, has, strict=True) if h > 0]
        by_type = [el for el, h in zip(elements, has, strict=True) if h <= 0]
        warnings = [f"{el}: only {self.preprocessor.elements[el].n_train} training material(s) had this element"
                    for el in with_spectrum if self.preprocessor.few_training(el)]
        warnings += list(notes)
        if not with_spectrum:
            warnings.append(COMPOSITION_ONLY_WARNING)
        return Prediction(
            material_id=material_id, probability_topological=float(prob),
            label="topological" if prob >= self.threshold else "trivial",
            elements_used=elements, warnings=warnings, model_name=self.name, model_version=self.version,
            uncertainty=None if uncertainty is None else float(uncertainty),
            elements_with_spectrum=with_spectrum, elements_by_type=by_type, composition_only=not with_spectrum)

    def predictions(self, inputs: Inputs, probs: Sequence[float],
                    uncertainties: Sequence[float | None] | None = None) -> list[Prediction | None]:
        """Answers in material order from the probabilities (and uncertainties, when the model has
        them) of ``inputs.valid`` (None where invalid)."""
        out: list[Prediction | None] = [None] * len(inputs.arrays)
        unc = [None] * len(inputs.valid) if uncertainties is None else list(uncertainties)
        for i, p, u in zip(inputs.valid, probs, unc, strict=True):
            _, z, has = inputs.arrays[i]
            out[i] = self.prediction(inputs.material_ids[i], p, z, has, u, inputs.notes[i])
        return out


class Predictor(InputBuilder):
    """The InputBuilder plus the ONNX Runtime session: arrays → predictions."""

    def __init__(self, model_dir: str | Path, prefer_gpu: bool = True, spinning: bool = False,
                 concurrent_runs: int = 1) -> None:
        """``spinning``: ONNX Runtime's idle intra-op threads spin between operators (its own default) instead
        of sleeping. Off unless asked: where the cores are shared (the service's entry workers, a simulation,
        Dask workers) spinning threads fought for them and batch-1 calls ran 2.5x slower; in a process that
        has its cores to itself (``predict.ort_spinning``: `xastopo predict`, the screen stage) it saves each
        operator's thread wake-up: ~15 % more materials/s in big runs (benchmarks/model_ort_vs_torch.py).

        ``concurrent_runs`` (``predict.concurrent_runs``; 0 = one per core this process may use): above 1,
        :meth:`outputs` of more than one run keeps that many runs going at once, each on one core, in a
        second session whose operators run on the calling thread (opened at the first such call). Why,
        where a process has its cores to itself: handing every operator of a run to two threads costs a
        wake-up and a join per operator, and the Python that pads one run waits for the cores; runs side by
        side on their own cores do neither (~10 % more materials/s at 4,096 materials on 2 cores). A single
        run keeps the first session, whose threads share each operator: alone, it finishes sooner (batch
        1: 0.28 vs 0.41 ms). The service keeps one run at a time (its batches are single runs whose latency
        counts). CPU only (a GPU session runs one at a time)."""
        import onnxruntime as ort

        super().__init__(model_dir)
        self.spinning = spinning
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), so, providers=session_providers(prefer_gpu))
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise ArtifactError(f"model artifact corrupted: cannot load {self.onnx_path} ({exc})") from exc
        # from the provider the session got (a GPU that failed to load falls back to the CPU)
        on_cpu = self.session.get_providers()[0] == "CPUExecutionProvider"
        self.concurrent_runs = (concurrent_runs or _usable_cores()) if on_cpu else 1
        self._runs: tuple[int, ort.InferenceSession, ThreadPoolExecutor] | None = None
        self._runs_lock = threading.Lock()

    def _concurrent(self) -> tuple[ort.InferenceSession, ThreadPoolExecutor]:
        """(single-threaded session, pool of ``concurrent_runs`` threads), opened at the first call in this
        process (a forked child inherits the pool without its threads: it opens its own)."""
        with self._runs_lock:
            if self._runs is None or self._runs[0] != os.getpid():
                import onnxruntime as ort

                so = ort.SessionOptions()
                so.log_severity_level = 3
                so.intra_op_num_threads = 1
                try:
                    session = ort.InferenceSession(str(self.onnx_path), so, providers=["CPUExecutionProvider"])
                except Exception as exc:  # the file opened a moment ago: memory, not the artifact
                    raise RuntimeError(f"cannot open a second ONNX Runtime session of {self.onnx_path} for "
                                       f"concurrent runs ({exc}); set predict.concurrent_runs: 1") from exc
                self._runs = (os.getpid(), session, ThreadPoolExecutor(self.concurrent_runs, "xastopo-onnx-run"))
            return self._runs[1], self._runs[2]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def has_uncertainty(self) -> bool:
        """Whether the graph outputs an ``uncertainty`` beside the probability."""
        return "uncertainty" in self.output_names

    def model_inputs(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray,
                     has_spectrum: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Padded arrays → the exported graph's inputs, by the family's feature kind (networks: as
        they are, ``padded_any`` with ``has_spectrum``, all ones where None; SVMs: their feature
        vectors in the training element order)."""
        return family_inputs(self.features, x, z, mask, self.metadata.get("element_z"), has_spectrum=has_spectrum)

    # ----------------------------------------------------------- arrays → predictions
    def predict_arrays_with_uncertainty(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray,
                                        has_spectrum: np.ndarray | None = None,
                                        session: ort.InferenceSession | None = None
                                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """(P(topological) float64 [N], uncertainty float64 [N] or None when the graph has none) for
        padded arrays (in ``session``: :attr:`session` when None)."""
        names = self.output_names
        if len(x) == 0:
            return np.zeros(0), (np.zeros(0) if "uncertainty" in names else None)
        run = (self.session if session is None else session).run(None, self.model_inputs(x, z, mask, has_spectrum))
        out = dict(zip(names, run, strict=True))
        if "probability" in out:  # a network: P(topological) [N] (and nn_any's uncertainty [N])
            p = np.asarray(out["probability"], dtype=np.float64).reshape(-1)
            u = out.get("uncertainty")
            return p, None if u is None else np.asarray(u, dtype=np.float64).reshape(-1)
        return np.asarray(out[names[-1]], dtype=np.float64)[:, 1], None  # skl2onnx: (label, probabilities)

    def predict_arrays(self, x: np.ndarray, z: np.ndarray, mask: np.ndarray,
                       has_spectrum: np.ndarray | None = None) -> np.ndarray:
        """P(topological) for padded arrays, float64 [N] (the export parity check's entry)."""
        return self.predict_arrays_with_uncertainty(x, z, mask, has_spectrum)[0]

    def padded(self, arrays: Sequence[Arrays]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-material ``(X, Z, has)`` → padded (x, z, mask, has_spectrum)."""
        return pad_inputs(arrays, self.preprocessor.n_points, skip_type_only=self.features == "padded_any")

    def outputs(self, arrays: Sequence[Arrays], batch_size: int | None = None,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(P(topological), uncertainty or None) of per-material arrays, in material order, in ONNX runs of at
        most ``batch_size`` materials (all in one run when None), ``concurrent_runs`` of them at once.

        Why materials are grouped before they are cut into runs: a run pads every material to its widest
        one, so with mixed widths most of a big run multiplies padding. Ordered by their number of absorbers
        (stable), each run pads to about its own width: at 4,096 materials in runs of 256 the CPU path did
        ~1.3x the materials/s of one padded run (benchmarks/model_ort_vs_torch.py). A material's answer does
        not depend on its run-mates or on the session and thread that ran them (no batch statistics in the
        graph; an operator's threads split rows, never a sum), so the answers are the same, bit for bit."""
        n = len(arrays)
        if n == 0:
            return np.zeros(0), (np.zeros(0) if self.has_uncertainty else None)
        step = batch_size or n
        order = np.argsort([len(a[1]) for a in arrays], kind="stable").tolist() if n > step else list(range(n))
        starts = range(0, n, step)
        session, pool = self._concurrent() if self.concurrent_runs > 1 and len(starts) > 1 else (None, None)

        def run(start: int) -> tuple[np.ndarray, np.ndarray | None]:
            return self.predict_arrays_with_uncertainty(*self.padded([arrays[i] for i in order[start:start + step]]),
                                                        session=session)

        show = progress and n >= 1000
        if pool is None:
            chunks = [run(s) for s in _progress(starts, show, desc="predict", unit="batch")]
        else:  # widest runs first: the last ones to finish are then the short ones, and no core waits long
            chunks = list(_progress(pool.map(run, reversed(starts)), show, total=len(starts), desc="predict",
                                    unit="batch"))[::-1]
        probs = np.empty(n, dtype=np.float64)
        probs[order] = np.concatenate([p for p, _ in chunks])
        if chunks[0][1] is None:
            return probs, None
        unc = np.empty(n, dtype=np.float64)
        unc[order] = np.concatenate([u for _, u in chunks])
        return probs, unc

    def probabilities(self, arrays: Sequence[Arrays], batch_size: int | None = None,
                      progress: bool = False) -> np.ndarray:
        """P(topological) of per-material arrays, in ONNX runs of at most ``batch_size`` materials."""
        return self.outputs(arrays, batch_size, progress)[0]

    def predict_inputs(self, inputs: Inputs, batch_size: int | None = None,
                       progress: bool = False) -> list[Prediction | None]:
        """Answers in material order (None where the material had no arrays)."""
        probs, unc = self.outputs(inputs.valid_arrays(), batch_size, progress)
        return self.predictions(inputs, probs, unc)

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
        out["feature_kind"] = self.features
        out["reads_composition"] = self.reads_composition  # formula/elements + any subset of edges
        out["outputs"] = self.output_names
        out["uncertainty"] = self.has_uncertainty
        return out
