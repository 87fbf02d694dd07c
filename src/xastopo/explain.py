"""Per-energy attributions of one prediction: which energies of each edge pushed P(topological).

Two halves, like :mod:`xastopo.inference`, so the service's public process (no ONNX session) can
assemble answers while its model process runs the graph:

* :class:`Explainer` — **arrays → attributions** through the exported ONNX graph (a
  :class:`~xastopo.inference.Predictor`; never torch: the served model is only its graph).
* :func:`explanation` — attributions → the answer (:class:`~xastopo.schema.Explanation`): the edge's
  energy grid, the user's spectrum after preprocessing (edge-step units), the attributions, the
  prediction itself.

Methods (``explain.method`` in params.yaml; the choice is measured by ``benchmarks/explain_methods.py``):

* ``occlusion`` (default): windows of ``window`` points sliding by ``stride`` over one edge's
  standardized spectrum are replaced by the element's baseline spectrum; a window's probability drop
  ``f(x) - f(x with the window at baseline)`` is spread evenly over its points and averaged over the
  ``window/stride`` windows that cover each point. For a model linear in the spectrum the attributions
  then sum exactly to ``f(x) - f(baseline)``; for the network the gap is reported
  (``attribution_total`` beside ``probability - probability_at_baseline``). About
  ``(n_points + window) / stride`` model runs per edge, in one ONNX call.
* ``integrated_gradients``: the straight path from the baseline to the spectrum in ``steps`` midpoint
  steps; each partial derivative by a central difference of ``eps`` (standardized units) through ONNX
  Runtime (the exported graph has no gradients). Complete up to the Riemann and difference errors,
  but ``2 * steps * n_points`` runs per edge.

The model runs go through ONNX Runtime ``chunk`` variants at a time, and each chunk's variants are made
just before its run: memory follows ``chunk`` (about ``chunk * absorbers * n_points * 4`` bytes), not
the variant count (integrated gradients: 6,400 variants per edge at 16 steps).

Baseline: the element's mean training spectrum over both classes (``class_means.json`` written by the
export stage); with an older export that lacks it, a flat spectrum at the element's training mean
level (the zero row of the standardized space). The answer names the baseline used.

``spectrum_effect`` of an edge (models that read compositions): ``P(material) - P(the same material
with this element read by its type only)`` — how much sending this spectrum moved the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xastopo.artifacts import sha256_file
from xastopo.config import ConfigError
from xastopo.elements import SYMBOLS
from xastopo.inference import ArtifactError, InputBuilder, InputError, Inputs, Predictor
from xastopo.schema import EdgeExplanation, Explanation, Prediction

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]
CLASS_MEANS_FILE = "class_means.json"
MEAN_BASELINE = "mean training spectrum of the element (both classes)"
FLAT_BASELINE = "flat spectrum at the element's training mean level (no class_means.json in the export)"
METHODS = ("occlusion", "integrated_gradients")


@dataclass(frozen=True)
class ExplainSettings:
    """``explain:`` of params.yaml (see the module docstring for what each number does)."""

    method: str = "occlusion"
    window: int = 10
    stride: int = 2
    steps: int = 16
    eps: float = 0.01
    max_materials: int = 16
    top_fraction: float = 0.1
    chunk: int = 4096             # variants per ONNX run (and made at once: the memory bound)
    max_test_materials: int = 0   # the DVC stage: test materials explained, 0 = all

    def __post_init__(self) -> None:
        """Checked however the settings are made (params or code): a ConfigError naming the parameter."""
        if self.method not in METHODS:
            raise ConfigError(f"params.yaml explain.method must be one of {', '.join(METHODS)}, "
                              f"got {self.method!r}")
        if self.window < 1 or self.stride < 1 or self.window % self.stride:
            raise ConfigError(f"params.yaml explain.window ({self.window}) must be a positive multiple of "
                              f"explain.stride ({self.stride})")
        if self.steps < 1 or not self.eps > 0 or self.max_materials < 1 or not 0 < self.top_fraction <= 1:
            raise ConfigError("params.yaml explain: steps and max_materials must be >= 1, eps > 0 and "
                              "0 < top_fraction <= 1")
        if self.chunk < 1:
            raise ConfigError(f"params.yaml explain.chunk must be >= 1 (variants per model run), got {self.chunk}")
        if self.max_test_materials < 0:
            raise ConfigError("params.yaml explain.max_test_materials must be >= 0 (0 = every test material), "
                              f"got {self.max_test_materials}")

    @classmethod
    def from_params(cls, params: dict) -> ExplainSettings:
        """The ``explain:`` block; a ConfigError naming the parameter when it is unusable."""
        block = dict(params.get("explain") or {})
        try:
            values = {k: type(getattr(cls, k))(block[k]) for k in cls.__dataclass_fields__ if k in block}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"params.yaml explain: {exc}") from None
        return cls(**values)  # checked in __post_init__


def load_optional_artifact(model_dir: str | Path, filename: str, metadata: dict | None = None) -> dict | None:
    """A JSON file the export stage writes beside the model for people (``class_means.json``,
    ``model_card.json``): None for an older export without it; its checksum is checked against
    ``metadata.json`` (``<stem>_sha256``) when the export recorded one."""
    path = Path(model_dir) / filename
    key = f"{Path(filename).stem}_sha256"
    want = (metadata or {}).get(key)
    if not path.is_file():
        if want:
            raise ArtifactError(f"model artifact missing: {path} (metadata.json records {key})")
        return None
    if want and sha256_file(path) != want:
        raise ArtifactError(f"model artifact checksum mismatch: {path} does not match metadata.json {key}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"model artifact corrupted: {path} is not valid JSON") from exc


@dataclass
class Attributions:
    """The numbers of one material's explanation (per absorber row of its arrays)."""

    probability: float
    uncertainty: float | None
    probability_at_baseline: float
    baseline: str
    method: str
    #: per absorber: attributions [n_points] (None for an element read by its type only)
    attributions: list[np.ndarray | None] = field(default_factory=list)
    #: per absorber: P(material) - P(this element by type only); None by type or for spectra-only models
    spectrum_effects: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able (the model service's answer)."""
        return {"probability": self.probability, "uncertainty": self.uncertainty,
                "probability_at_baseline": self.probability_at_baseline, "baseline": self.baseline,
                "method": self.method, "spectrum_effects": self.spectrum_effects,
                "attributions": [None if a is None else [float(v) for v in a] for a in self.attributions]}

    @classmethod
    def from_dict(cls, d: dict) -> Attributions:
        return cls(float(d["probability"]), None if d.get("uncertainty") is None else float(d["uncertainty"]),
                   float(d["probability_at_baseline"]), str(d["baseline"]), str(d["method"]),
                   [None if a is None else np.asarray(a, dtype=np.float64) for a in d["attributions"]],
                   [None if v is None else float(v) for v in d["spectrum_effects"]])


@dataclass
class _Variants:
    """``n`` model inputs made on demand: ``make(lo, hi)`` → their X [hi - lo, A, P] float32; every
    one with the absorber flags ``has`` [A]."""

    n: int
    make: Callable[[int, int], np.ndarray]
    has: np.ndarray


def _fixed(xs: Sequence[np.ndarray], has: np.ndarray) -> _Variants:
    """A few ready-made variants (the spectrum, the baseline, an edge by type)."""
    return _Variants(len(xs), lambda lo, hi: np.stack(xs[lo:hi]), has)


class Explainer:
    """Arrays → attributions through a Predictor's ONNX session."""

    def __init__(self, predictor: Predictor, settings: ExplainSettings | None = None,
                 class_means: dict | None = None) -> None:
        self.predictor = predictor
        self.settings = settings or ExplainSettings()
        self.class_means = class_means if class_means is not None else load_optional_artifact(
            predictor.model_dir, CLASS_MEANS_FILE, predictor.metadata)

    @property
    def baseline_name(self) -> str:
        return MEAN_BASELINE if self.class_means else FLAT_BASELINE

    def baseline(self, element: str) -> np.ndarray:
        """The element's baseline spectrum in the standardized space the model reads."""
        pre = self.predictor.preprocessor
        entry = ((self.class_means or {}).get("elements") or {}).get(element) or {}
        mean = (entry.get("all") or {}).get("mean")
        if mean is None or len(mean) != pre.n_points:
            return np.zeros(pre.n_points, dtype=np.float32)
        return pre.standardize(element, np.asarray(mean, dtype=np.float64)).astype(np.float32)

    def _chunks(self, blocks: Sequence[_Variants]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(X [<= chunk, A, P], has [<= chunk, A]) in variant order, each made only when its turn comes."""
        chunk = self.settings.chunk
        xs: list[np.ndarray] = []
        hs: list[np.ndarray] = []
        size = 0
        for b in blocks:
            lo = 0
            while lo < b.n:
                hi = min(b.n, lo + chunk - size)
                xs.append(b.make(lo, hi))
                hs.append(np.broadcast_to(b.has, (hi - lo, len(b.has))))
                size, lo = size + hi - lo, hi
                if size == chunk:
                    yield np.concatenate(xs), np.concatenate(hs)
                    xs, hs, size = [], [], 0
        if size:
            yield np.concatenate(xs), np.concatenate(hs)

    def _run(self, blocks: Sequence[_Variants], z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Model outputs of every variant of ``blocks`` (in order) for one material's z [A], ``chunk``
        variants per ONNX run."""
        probs, uncs = [], []
        for xs, has in self._chunks(blocks):
            k, a = xs.shape[0], xs.shape[1]
            zz = np.broadcast_to(z, (k, a)).astype(np.int64)
            p, u = self.predictor.predict_arrays_with_uncertainty(
                xs.astype(np.float32, copy=False), zz, np.ones((k, a), dtype=np.float32), has.astype(np.float32))
            probs.append(p)
            uncs.append(u)
        return np.concatenate(probs), None if uncs[0] is None else np.concatenate(uncs)

    def attribute(self, arrays: Arrays) -> Attributions:
        """Attributions of one material's ``(X [A, P], Z [A], has [A])``."""
        x, z, has = (np.asarray(arrays[0], dtype=np.float32), np.asarray(arrays[1], dtype=np.int64),
                     np.asarray(arrays[2], dtype=np.float32))
        a_n, p_n = x.shape
        edges = [a for a in range(a_n) if has[a] > 0]
        base = x.copy()
        for a in edges:
            base[a] = self.baseline(SYMBOLS[int(z[a]) - 1])
        blocks = [_fixed([x, base], has)]
        count = 2  # variants so far: index of the next one
        by_type: dict[int, int] = {}
        if self.predictor.reads_composition:
            for a in edges:
                xv, hv = x.copy(), has.copy()
                xv[a], hv[a] = 0.0, 0.0
                by_type[a] = count
                blocks.append(_fixed([xv], hv))
                count += 1
        plans = {}
        for a in edges:
            plan = self._occlusion_plan if self.settings.method == "occlusion" else self._ig_plan
            block, plans[a] = plan(x, base, a, has, count)
            blocks.append(block)
            count += block.n
        probs, unc = self._run(blocks, z)
        p0, pb = float(probs[0]), float(probs[1])
        out = Attributions(p0, None if unc is None else float(unc[0]), pb, self.baseline_name, self.settings.method)
        for a in range(a_n):
            if a not in plans:
                out.attributions.append(None)
                out.spectrum_effects.append(None)
                continue
            out.attributions.append(plans[a](probs))
            out.spectrum_effects.append(p0 - float(probs[by_type[a]]) if a in by_type else None)
        return out

    def _occlusion_plan(self, x: np.ndarray, base: np.ndarray, a: int, has: np.ndarray,
                        first: int) -> tuple[_Variants, Callable[[np.ndarray], np.ndarray]]:
        """Edge ``a``'s occlusion windows as variants ``first, first + 1, ...`` and the function that
        turns the outputs into its attributions."""
        w, s = self.settings.window, self.settings.stride
        p_n = x.shape[1]
        windows = [(max(start, 0), min(start + w, p_n)) for start in range(-(w - s), p_n, s)]

        def make(lo: int, hi: int) -> np.ndarray:
            xs = np.repeat(x[None], hi - lo, axis=0)
            for v, (wlo, whi) in enumerate(windows[lo:hi]):
                xs[v, a, wlo:whi] = base[a, wlo:whi]
            return xs

        def finish(probs: np.ndarray) -> np.ndarray:
            attr = np.zeros(p_n)
            for k, (lo, hi) in enumerate(windows):
                attr[lo:hi] += (probs[0] - probs[first + k]) / (hi - lo)
            return attr * (s / w)

        return _Variants(len(windows), make, has), finish

    def _ig_plan(self, x: np.ndarray, base: np.ndarray, a: int, has: np.ndarray,
                 first: int) -> tuple[_Variants, Callable[[np.ndarray], np.ndarray]]:
        """Edge ``a``'s integrated-gradient points as variants from ``first``: per step k, ``n_points``
        points + eps on one energy, then ``n_points`` points - eps."""
        m, eps = self.settings.steps, self.settings.eps
        p_n = x.shape[1]
        diff = (x[a] - base[a]).astype(np.float64)
        step = np.float32(eps)  # the finite difference as the float32 inputs carry it

        def make(lo: int, hi: int) -> np.ndarray:
            v = np.arange(lo, hi)
            k, r = v // (2 * p_n), v % (2 * p_n)  # step, and the row within the step's plus/minus block
            xs = np.repeat(x[None], hi - lo, axis=0)
            xs[:, a, :] = base[a] + ((k + 0.5) / m)[:, None].astype(np.float32) * (x[a] - base[a])
            i = r % p_n
            sign = np.where(r < p_n, step, -step).astype(np.float32)
            xs[np.arange(hi - lo), a, i] += sign
            return xs

        def finish(probs: np.ndarray) -> np.ndarray:
            grad = np.zeros(p_n)
            for k in range(m):
                s = first + 2 * p_n * k
                grad += (probs[s:s + p_n] - probs[s + p_n:s + 2 * p_n]) / (2 * eps)
            return diff * grad / m

        return _Variants(2 * m * p_n, make, has), finish


def explanation(builder: InputBuilder, prediction: Prediction, arrays: Arrays, result: Attributions,
                top_fraction: float = 0.1) -> Explanation:
    """The answer for one material from its arrays and attributions (no ONNX session needed):
    per edge the energy grid, the spectrum after preprocessing (edge-step units), the attributions
    and the energies of the largest ``top_fraction`` of |attribution|."""
    pre = builder.preprocessor
    x, z, has = arrays
    edges = []
    for a, zz in enumerate(np.asarray(z)):
        el = SYMBOLS[int(zz) - 1]
        attr = result.attributions[a] if a < len(result.attributions) else None
        if attr is None or has[a] <= 0:
            edges.append(EdgeExplanation(element=el, with_spectrum=False))
            continue
        w = pre.window(el)
        grid = pre.grid(el)
        spectrum = np.asarray(x[a], dtype=np.float64) * w.std + w.mean
        k = max(1, int(round(top_fraction * len(attr))))
        top = np.sort(np.argsort(-np.abs(attr), kind="stable")[:k])
        edges.append(EdgeExplanation(
            element=el, with_spectrum=True, energy=[float(v) for v in grid], spectrum=[float(v) for v in spectrum],
            attribution=[float(v) for v in attr], attribution_total=float(np.sum(attr)),
            top_energies=[float(grid[i]) for i in top], spectrum_effect=result.spectrum_effects[a]))
    return Explanation(prediction=prediction, method=result.method, baseline=result.baseline,
                       probability_at_baseline=result.probability_at_baseline,
                       attribution_total=float(sum(e.attribution_total or 0.0 for e in edges)), edges=edges)


def explanations(builder: InputBuilder, inputs: Inputs, results: Sequence[Attributions],
                 top_fraction: float) -> list[Explanation]:
    """The answers of ``inputs.valid`` (in order) from their attributions: the prediction (label,
    warnings, elements with a spectrum / by type) and the explanation. The CLI, ``POST /explain`` and
    the page all end here."""
    out = []
    for i, result in zip(inputs.valid, results, strict=True):
        arrays = inputs.arrays[i]
        pred = builder.prediction(inputs.material_ids[i], result.probability, arrays[1], arrays[2],
                                  result.uncertainty, inputs.notes[i])
        out.append(explanation(builder, pred, arrays, result, top_fraction))
    return out


def explain_materials(predictor: Predictor, explainer: Explainer, materials: Sequence) -> list[Explanation]:
    """Both halves in one process (the CLI): validated materials → explanations; raises the first
    :class:`~xastopo.inference.InputError`."""
    inputs = predictor.build(materials)
    if inputs.errors:
        exc = inputs.errors[0]
        raise InputError(exc.index, exc.field, f"{exc.message} (material_id {inputs.material_ids[exc.index]})")
    results = [explainer.attribute(a) for a in inputs.valid_arrays()]
    return explanations(predictor, inputs, results, explainer.settings.top_fraction)


def average_attributions(explainer: Explainer, split: dict, limit: int = 0) -> dict:
    """Mean attribution per element and true class over a featurized split's materials with a spectrum
    (``{X, Z, mask, y[, has_spectrum]}``, standardized as the model reads them), for the DVC plot.

    Returns ``{"elements": {el: {"energy": [...], "topological": {"n", "mean"}, "trivial": {...}}},
    "n_materials", "completeness_rel_gap_median", "seconds"}``."""
    import time

    pre = explainer.predictor.preprocessor
    has_all = split.get("has_spectrum")
    has_all = split["mask"] if has_all is None else has_all * split["mask"]
    idx = np.where(has_all.sum(axis=1) > 0)[0]
    if limit:
        idx = idx[:limit]
    sums: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[tuple[str, str], int] = {}
    gaps = []
    t0 = time.perf_counter()
    for i in idx:
        m = split["mask"][i] > 0
        x, z, has = split["X"][i][m], split["Z"][i][m], has_all[i][m]
        r = explainer.attribute((x, z, has))
        cls = "topological" if int(split["y"][i]) == 1 else "trivial"
        delta = r.probability - r.probability_at_baseline
        total = sum(float(a.sum()) for a in r.attributions if a is not None)
        if abs(delta) > 0.02:
            gaps.append(abs(total - delta) / abs(delta))
        for a, attr in enumerate(r.attributions):
            if attr is None:
                continue
            key = (SYMBOLS[int(z[a]) - 1], cls)
            sums[key] = sums.get(key, np.zeros(pre.n_points)) + attr
            counts[key] = counts.get(key, 0) + 1
    elements: dict = {}
    for (el, cls), total in sorted(sums.items()):
        entry = elements.setdefault(el, {"energy": [float(v) for v in pre.grid(el)]})
        entry[cls] = {"n": counts[(el, cls)], "mean": [float(v) for v in total / counts[(el, cls)]]}
    return {"elements": elements, "n_materials": int(len(idx)), "seconds": time.perf_counter() - t0,
            "completeness_rel_gap_median": float(np.median(gaps)) if gaps else None,
            "method": explainer.settings.method, "baseline": explainer.baseline_name}


# ------------------------------------------------------------------------------------ files (CLI)
EXPLAIN_CSV_COLUMNS = ["material_id", "element", "with_spectrum", "energy_ev", "spectrum", "attribution",
                       "probability_topological", "label", "uncertainty", "probability_at_baseline",
                       "spectrum_effect", "method", "baseline"]


def explanations_table(explanations: Sequence[Explanation]):
    """Long table: one row per (material, element, energy); an element read by type: one row, no energy."""
    import pandas as pd

    rows = []
    for ex in explanations:
        p = ex.prediction
        common = {"material_id": p.material_id, "probability_topological": p.probability_topological,
                  "label": p.label, "uncertainty": p.uncertainty, "probability_at_baseline": ex.probability_at_baseline,
                  "method": ex.method, "baseline": ex.baseline}
        for e in ex.edges:
            if not e.with_spectrum:
                rows.append({**common, "element": e.element, "with_spectrum": False})
                continue
            for en, sp, at in zip(e.energy, e.spectrum, e.attribution, strict=True):
                rows.append({**common, "element": e.element, "with_spectrum": True, "energy_ev": en, "spectrum": sp,
                             "attribution": at, "spectrum_effect": e.spectrum_effect})
    return pd.DataFrame(rows, columns=EXPLAIN_CSV_COLUMNS)


def explain_file(inputs: Sequence[Path], out: Path, model_dir: Path | None, params_path: Path | None = None,
                 formula: str | None = None, element: str | None = None, columns: dict[str, str] | None = None,
                 material_id: str | None = None) -> int:
    """Explain every material of a file the CLI reads (parquet / JSON / CSV), or the one material of
    measured files (XDI, ...; with ``formula``, read as ``xastopo predict`` reads them), into ``out``
    (.csv long table or .json :class:`~xastopo.schema.ExplainResponse`); returns the number of materials."""
    from xastopo import batch_predict, config
    from xastopo.batch_predict import BatchInputError, read_materials, resolve_model_dir
    from xastopo.schema import ExplainResponse

    if out.suffix.lower() not in (".csv", ".json"):
        raise BatchInputError(f"{out}: --out must end in .csv or .json")
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise BatchInputError(f"{p}: file not found")
    tabular = (".parquet", ".pq", ".json")
    suffixes = tuple(getattr(batch_predict, "MEASURED_SUFFIXES", ()))
    measured = (len(paths) > 1 or formula is not None or element is not None or columns is not None
                or paths[0].suffix.lower() in set(suffixes) - {".csv"})
    settings = ExplainSettings.from_params(config.load_params(params_path))
    predictor = Predictor(resolve_model_dir(model_dir, params_path))
    if measured:
        bad = [p for p in paths if p.suffix.lower() in tabular or p.suffix.lower() not in suffixes]
        if bad or not suffixes:
            raise BatchInputError(f"{(bad or paths)[0]}: measured files are {', '.join(suffixes) or 'not supported'} "
                                  "(one material per call); a .parquet/.json batch goes alone, without --formula")
        materials = [batch_predict.measured_material(paths, formula, element, columns, material_id,
                                                     predictor.preprocessor.min_points)]
    else:
        materials = read_materials(paths[0], params_path)
    explained = explain_materials(predictor, Explainer(predictor, settings), materials)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        resp = ExplainResponse(explanations=explained, model_name=predictor.name, model_version=predictor.version)
        out.write_text(resp.model_dump_json(indent=1) + "\n")
    else:
        explanations_table(explained).to_csv(out, index=False)
    return len(explained)
