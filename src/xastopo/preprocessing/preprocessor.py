"""The fitted preprocessor: per-element energy window, grid and standardization statistics.

Training, export, the CLI and the service all load the same saved JSON, so the numbers that turn a
raw spectrum into model input are derived once (on the training split) and never re-derived.
Follows scikit-learn's fit/transform convention (``fit`` returns self, ``transform`` /
``material_inputs`` apply it); ``save``/``load`` round-trip exactly.

A Preprocessor is made only by :meth:`Preprocessor.from_params` (settings from params.yaml, then
``fit``) or :meth:`Preprocessor.load` (the fitted artifact): the settings have no defaults in code,
so ``n_points`` and every other number downstream of ``featurize`` come from the artifact.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from xastopo.data.validation import SpectrumError, real_range, validate_many, validate_spectrum
from xastopo.elements import atomic_number
from xastopo.preprocessing.edge import rising_edge_energy
from xastopo.preprocessing.measured import MeasuredSettings, NormalizedSpectrum, aligning_shift, normalize_measured
from xastopo.preprocessing.spectrum import NO_EDGE_STEP, normalize_on_grid, normalize_rows, resample_rows


def _number_or_nan(value: object) -> float:
    """A site weight as a float, NaN when it is not a number (the material then fails with ``bad_weight`` where its
    sites pass, instead of a TypeError for every material of the batch)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        return float("nan")


@functools.lru_cache(maxsize=256)
def _grid(lo: float, hi: float, n_points: int) -> np.ndarray:
    """``np.linspace(lo, hi, n_points)``, made once per window and shared read-only."""
    g = np.linspace(lo, hi, n_points)
    g.setflags(write=False)
    return g


FORMAT_VERSION = 1

#: Widest varying part of a spectrum whose edge is located for alignment (eV; the edge finder's grid is 0.1 eV).
#: The simulated spectra span 63-383 eV; a wider one is not a K-edge XANES (and would cost memory).
MAX_ALIGN_SPAN_EV = 2000.0

#: An element whose statistics rest on fewer training materials than this is flagged: answers that
#: read its spectrum warn (:class:`xastopo.inference.InputBuilder`) and the model card lists it among
#: the limits (:mod:`xastopo.export.model_card`). One number, so the two cannot drift.
MIN_TRAIN_WARNING = 10

# One site spectrum of an element in a material: (energy [eV, absolute], mu, weight).
Site = tuple[Sequence[float], Sequence[float], float]


@dataclass
class ElementWindow:
    """Window and standardization statistics of one absorbing element (fitted on train)."""

    lo: float
    hi: float
    mean: float = 0.0
    std: float = 1.0
    n_train: int = 0
    # reference edge energy: median rising-edge energy of the training spectra, onto which measured
    # spectra are aligned (None in artifacts made before measured support)
    edge_ev: float | None = None


@dataclass
class Preprocessor:
    """Raw site spectra → standardized ``n_points`` vectors per absorbing element.

    The settings (``n_points`` … ``min_points``) come from params.yaml (:meth:`from_params`) or from
    a saved artifact (:meth:`load`); ``elements`` holds what ``fit`` learned on the training split.
    """

    n_points: int
    window_ev: float
    coverage_quantile: float
    max_extrapolation_ev: float
    post_edge_ev: float
    flat_run_tol: float
    min_points: int
    elements: dict[str, ElementWindow] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    # settings of the measured-spectra normalization (params featurize.measured; None in artifacts
    # made before measured support: such a model refuses measured spectra with that reason)
    measured: dict | None = None
    # elements whose spectra are windowed relative to their own edge (params featurize.align_to_edge; after
    # ``fit``, those of them with a window; saved only when not empty, so other artifacts are unchanged)
    align_elements: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """The measured settings are checked where the preprocessor is made (:meth:`from_params`,
        :meth:`from_dict` / :meth:`load`): a malformed block is a ValueError there (an ArtifactError
        at the model's start-up), not a failure at the first measured request."""
        self._measured_from: dict | None = None
        self._measured_settings: MeasuredSettings | None = None
        _ = self.measured_settings
        if self.align_elements and self.measured is None:
            raise ValueError("featurize.align_to_edge needs the featurize.measured settings (the edge finder's)")

    @classmethod
    def from_params(cls, params: dict) -> Preprocessor:
        f = params["featurize"]
        return cls(
            n_points=int(f["n_points"]),
            window_ev=float(f["window_ev"]),
            coverage_quantile=float(f["coverage_quantile"]),
            max_extrapolation_ev=float(f["max_extrapolation_ev"]),
            post_edge_ev=float(f["post_edge_ev"]),
            flat_run_tol=float(params["ingest"]["flat_run_tol"]),
            min_points=int(params["ingest"]["min_points"]),
            measured=MeasuredSettings.from_params(f["measured"]).to_dict() if "measured" in f else None,
            align_elements=sorted(str(el) for el in f["align_to_edge"]),
        )

    # ----------------------------------------------------------------- fitting
    def fit(self, train: Sequence[tuple[str, Sequence[Site]]]) -> Preprocessor:
        """Fit windows, then standardization, on the training ``(element, sites)`` records.

        A record whose spectrum cannot be used on the fitted window is left out of the statistics
        and counted per reason in ``rejected_`` (not saved: a report of the fit, not a setting).
        """
        train = list(train)
        edges = self._median_edges(train)  # once: fit_windows aligns on them, every window keeps its own
        self.fit_windows(train, edges)
        for el, w in self.elements.items():
            w.edge_ev = edges.get(el)
        spectra, self.rejected_ = [], Counter()
        for el, sites in train:
            try:
                spectra.append((el, self.element_spectrum(el, sites)))
            except SpectrumError as exc:
                self.rejected_[exc.reason] += 1
        return self.fit_standardization(spectra)

    def fit_windows(self, element_sites: Iterable[tuple[str, Sequence[Site]]],
                    edges: dict[str, float] | None = None) -> Preprocessor:
        """Place each element's window from where its training spectra really have data.

        Start: the ``coverage_quantile`` of the spectra's first real (non-copied) energies, so that
        nearly all spectra cover it without extrapolation; end: start + ``window_ev``, cut to the
        lower quantile of their last real energies where the data span less (e.g. 35 eV sources).

        Elements in ``align_elements`` are placed on their spectra shifted so that each one's edge lies on
        the element's reference edge (:meth:`fit_edges`' median), as :meth:`transform` shifts them: FEFF10
        puts the O K edge of oxides several eV apart (chemical shifts), so one absolute window started
        above many of them ("no rising edge in the window" for 89 of 167 simulated O materials). A spectrum
        whose edge cannot be aligned (:meth:`_edge_shift`) does not place the window (transform refuses it).
        ``edges``: the medians of :meth:`_median_edges` when the caller has them (:meth:`fit`).
        """
        element_sites = list(element_sites)
        if edges is None:
            edges = self._median_edges([(el, s) for el, s in element_sites if el in self.align_elements])
        edges = {el: v for el, v in edges.items() if el in self.align_elements}
        firsts: dict[str, list[float]] = {}
        lasts: dict[str, list[float]] = {}
        for el, sites in element_sites:
            for energy, mu, _ in sites:
                e, m = np.asarray(energy, float), np.asarray(mu, float)
                lo, hi = real_range(e, m, self.flat_run_tol)
                try:
                    shift = self._edge_shift(el, edges[el], e, m) if el in edges else 0.0
                except SpectrumError:
                    continue
                firsts.setdefault(el, []).append(float(e[lo]) + shift)
                lasts.setdefault(el, []).append(float(e[hi]) + shift)
        q = self.coverage_quantile
        self.elements = {}
        for el in sorted(firsts):
            lo = float(np.quantile(firsts[el], q))
            hi = min(lo + self.window_ev, float(np.quantile(lasts[el], 1.0 - q)))
            self.elements[el] = ElementWindow(lo=round(lo, 4), hi=round(hi, 4), edge_ev=edges.get(el))
        self.align_elements = sorted(edges)
        return self

    def fit_edges(self, element_sites: Iterable[tuple[str, Sequence[Site]]]) -> Preprocessor:
        """Reference edge energy per element (``edge_ev``): the median rising-edge energy of its
        training site spectra, on their own absolute energy scale (measured spectra are shifted onto
        it). Skipped when the measured settings are absent."""
        edges = self._median_edges(element_sites)
        for el, w in self.elements.items():
            if el in edges:
                w.edge_ev = edges[el]
        return self

    def _edge(self, e: np.ndarray, m: np.ndarray) -> float:
        """A spectrum's rising-edge energy with this artifact's edge-finder settings (``featurize.measured``)."""
        settings = self.measured_settings
        assert settings is not None  # (checked where the preprocessor is made when elements are aligned)
        return rising_edge_energy(e, m, settings.edge_hold_ev, settings.smooth_ev)

    def _median_edges(self, element_sites: Iterable[tuple[str, Sequence[Site]]]) -> dict[str, float]:
        """{element: median rising-edge energy of its site spectra (real range of at least ``min_points``),
        rounded to meV}; empty without the measured settings."""
        if self.measured_settings is None:
            return {}
        edges: dict[str, list[float]] = {}
        for el, sites in element_sites:
            for energy, mu, _ in sites:
                e, m = np.asarray(energy, float), np.asarray(mu, float)
                lo, hi = real_range(e, m, self.flat_run_tol)
                if hi - lo + 1 >= self.min_points:
                    edges.setdefault(el, []).append(self._edge(e[lo:hi + 1], m[lo:hi + 1]))
        return {el: round(float(np.median(v)), 3) for el, v in edges.items()}

    def fit_standardization(self, element_spectra: Iterable[tuple[str, np.ndarray]]) -> Preprocessor:
        """Per element: mean of per-spectrum means, mean of per-spectrum stds (train only).

        With a single training spectrum the std is 1, as in the paper's code: one spectrum's own
        spread says nothing about the spread between materials.
        """
        groups: dict[str, list[np.ndarray]] = {}
        for el, x in element_spectra:
            groups.setdefault(el, []).append(np.asarray(x, float))
        for el, xs in groups.items():
            a = np.stack(xs)
            w = self.elements[el]
            w.mean = float(a.mean(axis=1).mean())
            w.std = float(a.std(axis=1).mean()) if len(xs) > 1 else 1.0
            if w.std <= 0:
                w.std = 1.0
            w.n_train = len(xs)
        return self

    # --------------------------------------------------------------- transform
    def grid(self, element: str) -> np.ndarray:
        """The element's resampling grid (read-only; cached: rebuilding it was ~10 % of preprocessing)."""
        w = self.window(element)
        return _grid(float(w.lo), float(w.hi), int(self.n_points))

    def window(self, element: str) -> ElementWindow:
        if element not in self.elements:
            raise self._window_error(element)
        return self.elements[element]

    def _window_error(self, element: str) -> SpectrumError:
        """Why an element has no window: an unknown symbol, or an element without training statistics."""
        try:
            atomic_number(element)
        except KeyError as exc:
            return SpectrumError("unknown_element", str(exc.args[0]), "element")
        known = ", ".join(sorted(self.elements))
        return SpectrumError("element_not_supported",
                             f"the model has no statistics for element '{element}' (supported: {known})", "element")

    def site_spectrum(self, element: str, energy: Sequence[float], mu: Sequence[float]) -> np.ndarray:
        """Validate, resample onto the element grid and edge-step normalize one site spectrum."""
        return normalize_on_grid(self._resampled(element, energy, mu), self.grid(element), self.post_edge_ev)

    def _resampled(self, element: str, energy: Sequence[float], mu: Sequence[float], align: bool = True
                   ) -> np.ndarray:
        """Validate one site spectrum and resample it onto the element grid (not yet normalized): one row of
        :meth:`_resampled_many`."""
        rows, errors = self._resampled_many(element, [(energy, mu)], align)
        if errors[0] is not None:
            raise errors[0]
        return rows[0]

    def _resampled_many(self, element: str, spectra: Sequence[tuple[Sequence[float], Sequence[float]]],
                        align: bool = True) -> tuple[np.ndarray, list[SpectrumError | None]]:
        """Validate site spectra ``(energy, mu)`` and resample them onto the element grid (not yet normalized):
        (rows [k, n_points], errors [k]; a row with an error is not to be used). Spectra of one length run
        as one block (:func:`~xastopo.data.validation.validate_many`, :func:`resample_rows`); each spectrum
        gets the error it gets alone (validation first, then the element's statistics, its edge, coverage).
        ``align`` False: measured spectra, already aligned onto the reference edge by :meth:`measured_site`."""
        errors, blocks = validate_many(spectra, self.min_points)
        out = np.zeros((len(spectra), self.n_points))
        if element not in self.elements:  # every valid spectrum gets the element's error
            for idx, _, _ in blocks:
                for i in idx:
                    errors[i] = self._window_error(element)
            return out, errors
        grid = self.grid(element)
        aligned = align and element in self.align_elements
        ref = float(self.elements[element].edge_ev) if aligned else 0.0  # type: ignore[arg-type]
        for idx, e, m in blocks:
            if aligned:
                shift = np.zeros(len(idx))
                for r, i in enumerate(idx):
                    try:
                        shift[r] = self._edge_shift(element, ref, e[r], m[r])
                    except SpectrumError as exc:
                        errors[i] = exc
                e = e + shift[:, None]
            rows, found = resample_rows(e, m, grid, self.max_extrapolation_ev, self.flat_run_tol)
            if len(blocks) == 1 and len(idx) == len(spectra):  # one block of every spectrum, in order
                out = rows
            else:
                out[idx] = rows
            if any(err is not None for err in found):
                for i, err in zip(idx, found, strict=True):
                    if errors[i] is None:
                        errors[i] = err
        return out, errors

    def _edge_shift(self, element: str, ref: float, e: np.ndarray, m: np.ndarray) -> float:
        """The shift putting the spectrum's rising edge on ``ref`` (fit and transform alike); an
        ``alignment_failed`` SpectrumError when no edge can be placed: a real range of fewer than ``min_points``
        points or wider than ``MAX_ALIGN_SPAN_EV`` (the edge finder works on a 0.1 eV grid: a hostile span would
        cost gigabytes), numbers the finder cannot work with, or a shift above ``max_shift_ev``."""
        lo, hi = real_range(e, m, self.flat_run_tol)
        most = self.measured_settings.max_shift_ev  # type: ignore[union-attr]
        if hi - lo + 1 < self.min_points or not float(e[hi] - e[lo]) <= MAX_ALIGN_SPAN_EV:
            raise SpectrumError("alignment_failed", f"{element}: no edge to align on (the spectrum's varying part "
                                f"has {hi - lo + 1} points over {float(e[hi] - e[lo]):.3g} eV; at least "
                                f"{self.min_points} points within {MAX_ALIGN_SPAN_EV:g} eV needed)", "energy")
        try:
            edge = self._edge(e[lo:hi + 1], m[lo:hi + 1])
        except (ValueError, ArithmeticError) as exc:
            raise SpectrumError("alignment_failed", f"{element}: the edge could not be located on these numbers "
                                f"({type(exc).__name__})", "energy") from None
        return aligning_shift(edge, ref, most, "not this element's K edge")

    def element_spectrum(self, element: str, sites: Sequence[Site], align: bool = True) -> np.ndarray:
        """Combine the sites of one element, weighted by multiplicity, after normalization."""
        rows, errors = self.element_spectra(element, [sites], align)
        if errors[0] is not None:
            raise errors[0]
        return rows[0]

    def element_spectra(self, element: str, materials: Sequence[Sequence[Site]], align: bool = True
                        ) -> tuple[np.ndarray, list[SpectrumError | None]]:
        """:meth:`element_spectrum` of many materials' sites of one element: (rows [k, n_points], errors [k]);
        a material whose sites fail has its SpectrumError (the first failing site's, in site order) and a
        row not to be used.

        Why a batch: the site spectra of one length are converted, validated and cut to their real ranges as
        one block (:meth:`_resampled_many`), only ``np.interp`` runs per spectrum; the normalization, the site
        combination and the standardization run once over every row (per-spectrum numpy calls were most of the
        service's preprocessing time). The arithmetic is the same, value for value, as one material at a time
        (tested on every shipped spectrum, and against ``np.interp`` of each real range)."""
        k = len(materials)
        errors: list[SpectrumError | None] = [None] * k
        spectra: list[tuple[Sequence[float], Sequence[float]]]
        first: list[int] | range  # index into spectra of each material's first site
        if all(len(sites) == 1 for sites in materials):  # the service's case: one site each, no bookkeeping
            spectra = [(sites[0][0], sites[0][1]) for sites in materials]
            first = range(k + 1)
        else:
            spectra, first = [], []
            for j, sites in enumerate(materials):
                first.append(len(spectra))
                if len(sites) == 0:
                    errors[j] = SpectrumError("no_spectra", f"no spectra for element '{element}'", "spectra")
                spectra.extend((e, m) for e, m, _ in sites)
            first.append(len(spectra))
        out = np.zeros((k, self.n_points))
        if not spectra:
            return out, errors
        resampled, site_errors = self._resampled_many(element, spectra, align)
        if element in self.elements:
            normalized, ok = normalize_rows(resampled, self.grid(element), self.post_edge_ev)
        else:  # every site has its error (validation's, else the element's)
            normalized, ok = resampled, np.zeros(len(spectra), dtype=bool)
        failed = {s for s, error in enumerate(site_errors) if error is not None}
        if not ok.all():
            failed.update(np.flatnonzero(~ok).tolist())
        w = np.asarray([_number_or_nan(site[2]) for sites in materials for site in sites])
        usable = (w > 0) & np.isfinite(w)
        weightless = set() if usable.all() else set(np.flatnonzero(~usable).tolist())
        if isinstance(first, range) and not failed and not weightless:  # one usable site each: every row as is
            wa = w[:, None]
            return (0.0 + wa * normalized) / wa, errors  # the single-site arithmetic below, without the gathers
        one: list[int] = []  # materials of one usable site: combined in one pass below
        multi: list[int] = []
        for j in range(k):
            if errors[j] is not None:
                continue
            a, b = first[j], first[j + 1]
            if failed or weightless:  # the first failing site, in site order, fails the material (as when each
                s = next((s for s in range(a, b) if s in failed), None)  # site is done in turn), then weights
                if s is not None:
                    error = site_errors[s]
                    errors[j] = error if error is not None else SpectrumError("no_edge_step", NO_EDGE_STEP, "mu")
                    continue
                if any(s in weightless for s in range(a, b)):
                    errors[j] = SpectrumError("bad_weight", "site weights must be positive", "weight")
                    continue
            (one if b - a == 1 else multi).append(j)
        if one:  # the arithmetic of the sum below for one site: (w * x) / w (a sum's 0 + turns -0.0 into 0.0)
            rows = [first[j] for j in one]
            wa = w[rows][:, None]
            out[one] = (0.0 + wa * normalized[rows]) / wa
        for j in multi:
            a, b = first[j], first[j + 1]
            out[j] = (w[a:b, None] * normalized[a:b]).sum(axis=0) / w[a:b].sum()
        return out, errors

    # ------------------------------------------------------------ measured spectra
    @property
    def measured_settings(self) -> MeasuredSettings | None:
        """The checked :class:`MeasuredSettings` of ``measured`` (built once; again only if the block
        was replaced or changed)."""
        if self.measured != self._measured_from or (self.measured is None) != (self._measured_settings is None):
            settings = None if self.measured is None else MeasuredSettings.from_dict(self.measured)
            self._measured_from = None if self.measured is None else dict(self.measured)
            self._measured_settings = settings
        return self._measured_settings

    def few_training(self, element: str) -> bool:
        """Whether the element's statistics rest on fewer than :data:`MIN_TRAIN_WARNING` training
        materials (answers reading its spectrum are weak)."""
        return self.elements[element].n_train < MIN_TRAIN_WARNING

    def normalize_measured(self, element: str, energy: Sequence[float], mu: Sequence[float],
                           edge: str | None = None) -> NormalizedSpectrum:
        """K-edge check, e0, pre-edge line and edge-step normalization of a measured spectrum
        (:mod:`xastopo.preprocessing.measured`, with this artifact's settings)."""
        settings = self.measured_settings
        if settings is None:
            raise SpectrumError("model_predates_measured", "this model's preprocessor.json predates measured-"
                                "spectrum support (no normalization settings or reference edge energies): "
                                "rerun `dvc repro` (featurize → export) to serve measured spectra", "kind")
        e, m = validate_spectrum(energy, mu, self.min_points)
        return normalize_measured(e, m, element, settings, edge)

    def measured_site(self, element: str, energy: Sequence[float], mu: Sequence[float],
                      edge: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A measured spectrum → (aligned energy, normalized mu), ready for :meth:`transform` like a
        computed site: normalized, then its edge shifted onto the element's reference edge energy."""
        n = self.normalize_measured(element, energy, mu, edge)
        ref = self.window(element).edge_ev
        if ref is None:
            raise SpectrumError("model_predates_measured", f"this model's preprocessor.json has no reference edge "
                                f"energy for {element} (made before measured-spectrum support): rerun `dvc repro` "
                                "(featurize → export) to serve measured spectra", "kind")
        shifted, _ = n.aligned_energy(ref, self.measured_settings.max_shift_ev)  # type: ignore[union-attr]
        return shifted, n.norm

    def standardize(self, element: str, x: np.ndarray) -> np.ndarray:
        w = self.window(element)
        return (np.asarray(x, float) - w.mean) / w.std

    def transform(self, element: str, sites: Sequence[Site], align: bool = True) -> np.ndarray:
        """The sites of one element of one material → its standardized ``n_points`` vector (``align`` False:
        measured sites, already aligned by :meth:`measured_site`)."""
        return self.standardize(element, self.element_spectrum(element, sites, align))

    def transform_many(self, element: str, materials: Sequence[Sequence[Site]]
                       ) -> tuple[np.ndarray, list[SpectrumError | None]]:
        """:meth:`transform` of many materials' sites of one element in one vectorized pass:
        (standardized rows [k, n_points], errors [k]) as :meth:`element_spectra`."""
        rows, errors = self.element_spectra(element, materials)
        if all(e is not None for e in errors):
            return rows, errors
        return self.standardize(element, rows), errors

    def material_inputs(self, spectra: dict[str, Sequence[Site]], done: dict[str, np.ndarray] | None = None,
                        measured: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """One material → (X [n_absorbers, n_points] float32, Z [n_absorbers] int64), sorted by Z. ``done``:
        elements already transformed (by :meth:`transform_many`, for a batch of materials)."""
        els = sorted(spectra, key=atomic_number)
        rows = []
        for el in els:
            try:
                rows.append(done[el] if done is not None and el in done
                            else self.transform(el, spectra[el], align=el not in measured))
            except SpectrumError as exc:
                exc.element = el
                raise
        x = np.stack(rows)
        z = np.asarray([atomic_number(el) for el in els], dtype=np.int64)
        return x.astype(np.float32), z

    # -------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        d = asdict(self)
        d["elements"] = {k: asdict(v) for k, v in sorted(self.elements.items())}
        if not d["align_elements"]:
            del d["align_elements"]  # artifacts without aligned elements keep their bytes (and checksums)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        d = dict(d)
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"preprocessor format version {d.get('version')} != {FORMAT_VERSION}")
        d["elements"] = {k: ElementWindow(**v) for k, v in d["elements"].items()}
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> str:
        """Write JSON; return its sha256 (recorded in the ONNX metadata and checked at start-up)."""
        text = self.to_json()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> Preprocessor:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"preprocessor file not found: {p}")
        text = p.read_text()
        if sha256 is not None and hashlib.sha256(text.encode()).hexdigest() != sha256:
            raise ValueError(f"{p}: checksum mismatch (file changed since the model was exported)")
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"{p}: not a valid preprocessor file ({exc})") from exc
