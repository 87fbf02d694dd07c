"""Measured spectra → the computed spectra's footing: K-edge check, e0, pre-edge line, edge-step
normalization (larch's ``find_e0`` / ``pre_edge`` conventions) and energy alignment.

Steps, each with its settings in params.yaml (``featurize.measured``, saved in ``preprocessor.json``):

1. **Edge check.** The tabulated K-edge energy of the element (xraydb) must lie inside the data; a
   header naming another edge (L3 ...) or a range around another element's edge is refused, naming
   the edge the data look like (xraydb ``guess_edge``).
2. **e0**: the maximum of the derivative of mu after Gaussian smoothing (``smooth_ev``), searched within
   ``e0_search_ev`` of the tabulated edge (larch's ``find_e0`` takes the maximum derivative with guards
   against glitches; the search window is our guard).
3. **Pre-edge line** fitted over ``[e0 + pre1_ev, e0 + pre2_ev]`` clipped to the data (larch: -200/-30
   here); when fewer than ``min_fit_points`` lie there (XANES-only scans), a constant: the mean over
   the first ``pre_constant_ev`` of the data (the computed spectra's convention).
4. **Post-edge polynomial** over ``[e0 + norm1, e0 + norm2]`` with larch's defaults: norm2 = the end of
   the data, norm1 = min(25, norm2/15 rounded to 5 eV), degree 2 above 300 eV of span, 1 above 30, 0
   below; the **edge step** is post-edge minus pre-edge at e0 (larch's ``edge_step``). Data ending less
   than ``min_post_ev`` above e0 stop before the post-edge and are refused.
5. **Alignment**: the half-step energy of the normalized spectrum (:func:`~xastopo.preprocessing.edge.
   rising_edge_energy`, the definition used for the training spectra; it skips pre-edge peaks) is
   shifted onto the element's reference edge energy, the median of its training spectra's
   (``ElementWindow.edge_ev``),
   so the absolute-energy window of the computed spectra sees the same part of the edge. This removes
   the code/beamline offset (FEFF's absolute energies are several eV off experiment) and also the
   sample's own chemical shift relative to the training median: the model then reads the shape.

The result goes through the very same resampling, window normalization and standardization as a
computed spectrum (:meth:`xastopo.preprocessing.preprocessor.Preprocessor.transform`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from xastopo.data.validation import SpectrumError
from xastopo.preprocessing.edge import rising_edge_energy

__all__ = ["MeasuredSettings", "NormalizedSpectrum", "k_edge_energy", "normalize_measured"]


@dataclass(frozen=True)
class MeasuredSettings:
    """How measured spectra are normalized (params.yaml ``featurize.measured``)."""

    smooth_ev: float          # Gaussian sigma of the smoothing before locating the edge (e0, half-step energy)
    e0_search_ev: float       # e0 searched within this of the tabulated K edge
    pre1_ev: float            # pre-edge line range, relative to e0 (clipped to the data)
    pre2_ev: float
    pre_constant_ev: float    # too few pre-edge points: constant = mean over the first this many eV
    min_pre_ev: float         # the data must start at least this far below e0
    min_post_ev: float        # ... and end at least this far above it
    min_fit_points: int       # fewest points for a pre-edge line / post-edge polynomial
    max_shift_ev: float       # largest alignment shift accepted
    crop_before_ev: float     # the half-step energy is found on [e0 - this, e0 + crop_after_ev]
    crop_after_ev: float
    edge_hold_ev: float       # the edge energy's crossing must hold this long (skips pre-edge peaks)

    def __post_init__(self) -> None:
        """Every number checked where the settings are made (params or a loaded artifact), so a
        malformed block stops the featurize stage or the model's start-up, not a request."""
        problems = []
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                problems.append(f"{name} must be a finite number, got {v!r}")
        if problems:
            raise ValueError("measured settings: " + "; ".join(problems))
        positive = ("smooth_ev", "e0_search_ev", "pre_constant_ev", "min_post_ev", "max_shift_ev", "crop_after_ev")
        problems += [f"{k} must be > 0, got {getattr(self, k)!r}" for k in positive if not getattr(self, k) > 0]
        problems += [f"{k} must be >= 0, got {getattr(self, k)!r}" for k in ("min_pre_ev", "crop_before_ev",
                                                                             "edge_hold_ev") if getattr(self, k) < 0]
        if not self.pre1_ev < self.pre2_ev:
            problems.append(f"pre1_ev ({self.pre1_ev!r}) must be below pre2_ev ({self.pre2_ev!r})")
        if self.min_fit_points != int(self.min_fit_points) or self.min_fit_points < 2:
            problems.append(f"min_fit_points must be an integer >= 2, got {self.min_fit_points!r}")
        if problems:
            raise ValueError("measured settings: " + "; ".join(problems))

    @classmethod
    def from_params(cls, block: dict) -> MeasuredSettings:
        """From params.yaml ``featurize.measured`` (numbers as YAML gives them; checked)."""
        try:
            return cls(**{k: (int(block[k]) if k == "min_fit_points" else float(block[k]))
                          for k in cls.__dataclass_fields__})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"featurize.measured: {exc}") from None

    @classmethod
    def from_dict(cls, d: object) -> MeasuredSettings:
        """From a saved artifact's ``measured`` block, as saved (no conversion): a ValueError naming
        the missing, unknown or malformed key."""
        if not isinstance(d, dict):
            raise ValueError(f"measured settings must be a mapping, got {type(d).__name__}")
        fields = set(cls.__dataclass_fields__)
        missing, unknown = sorted(fields - set(d)), sorted(set(d) - fields)
        if missing or unknown:
            raise ValueError("measured settings: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"]
                                                                          if unknown else [])))
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NormalizedSpectrum:
    """A measured spectrum after pre-edge subtraction and edge-step normalization.

    ``pre_edge``/``post_edge`` are the fitted curves on ``energy`` (mu units); ``norm`` = (mu − pre) /
    step; ``flat`` = norm with the post-edge curvature removed above e0 (larch's ``flat``, for plots);
    ``half_step_ev``: the half-step energy of ``norm`` (what alignment moves).
    """

    element: str
    energy: np.ndarray
    mu: np.ndarray
    e0: float
    pre_edge: np.ndarray
    post_edge: np.ndarray
    edge_step: float
    norm: np.ndarray
    flat: np.ndarray
    pre_range: tuple[float, float]
    norm_range: tuple[float, float]
    nnorm: int
    pre_mode: str
    half_step_ev: float

    def aligned_energy(self, reference_ev: float, max_shift_ev: float) -> tuple[np.ndarray, float]:
        """(energy shifted so the half-step lands on ``reference_ev``, the shift)."""
        shift = aligning_shift(self.half_step_ev, reference_ev, max_shift_ev, "not this element's K edge, or a "
                               "miscalibrated energy")
        return self.energy + shift, shift


def aligning_shift(edge_ev: float, reference_ev: float, max_shift_ev: float, cause: str) -> float:
    """``reference_ev - edge_ev``, the shift that puts an edge on the reference; an ``alignment_failed``
    SpectrumError (naming ``cause``) when it is not finite or larger than ``max_shift_ev``. The one limit of
    both alignments: measured spectra (:meth:`NormalizedSpectrum.aligned_energy`) and the computed spectra of
    light elements (:meth:`xastopo.preprocessing.preprocessor.Preprocessor._edge_shift`)."""
    shift = float(reference_ev - edge_ev)
    if not np.isfinite(shift) or abs(shift) > max_shift_ev:
        raise SpectrumError("alignment_failed",
                            f"aligning the edge ({edge_ev:.1f} eV) onto the training spectra's "
                            f"({reference_ev:.1f} eV) needs a {shift:+.1f} eV shift (more than "
                            f"{max_shift_ev:g} eV): {cause}", "energy")
    return shift


def k_edge_energy(element: str) -> float:
    """Tabulated K-edge energy (eV) of an element (xraydb); a ``wrong_edge`` SpectrumError for an
    element xraydb has no K edge for (Es and heavier: ``xray_edge`` returns None)."""
    import xraydb

    edge = xraydb.xray_edge(element, "K")
    if edge is None:
        raise SpectrumError("wrong_edge", f"no tabulated K edge for {element} (xraydb has none for Es and "
                                          "heavier elements): its K edge cannot be checked or normalized", "element")
    return float(edge.energy)


def _looks_like(energy: np.ndarray, mu: np.ndarray) -> str:
    """Which element/edge the steepest rise of the data looks like (xraydb ``guess_edge``)."""
    import xraydb

    if len(energy) < 5:
        return ""
    d = np.gradient(mu, energy)
    n = max(2, len(d) // 20)
    i = n + int(np.argmax(d[n:-n]))
    guess = xraydb.guess_edge(float(energy[i]))
    return f"; its edge near {energy[i]:.0f} eV looks like the {guess[0]} {guess[1]} edge" if guess else ""


def _smoothed(energy: np.ndarray, mu: np.ndarray, lo: float, hi: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    step = 0.1
    g = np.arange(lo, hi + step / 2, step)
    y = np.interp(g, energy, mu)
    half = int(np.ceil(4 * sigma / step))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) * step / sigma) ** 2)
    return g, np.convolve(np.pad(y, half, mode="edge"), k / k.sum(), mode="valid")


def find_e0(energy: np.ndarray, mu: np.ndarray, near: float, settings: MeasuredSettings) -> float:
    """Energy of the largest derivative of the smoothed mu within ``e0_search_ev`` of ``near``."""
    lo = max(float(energy[0]), near - settings.e0_search_ev)
    hi = min(float(energy[-1]), near + settings.e0_search_ev)
    if hi - lo < 4 * settings.smooth_ev:
        raise SpectrumError("wrong_edge", f"too little data around the K edge ({near:.0f} eV) to find e0", "energy")
    g, ys = _smoothed(energy, mu, lo, hi, settings.smooth_ev)
    return float(g[int(np.argmax(np.gradient(ys, g)))])


def normalize_measured(energy, mu, element: str, settings: MeasuredSettings,
                       edge: str | None = None) -> NormalizedSpectrum:
    """Pre-edge line, e0 and edge-step normalization of one measured spectrum of ``element``'s K edge.

    ``edge``: the edge the file's header names (None: not named). Raises SpectrumError (reason codes:
    ``not_k_edge``, ``wrong_edge``, ``starts_after_edge``, ``stops_before_post_edge``, ``fit_failed``,
    ``no_edge_step``). Finite but absurd numbers (energies of 1e300 in a corrupt file) can break the
    fits' arithmetic (LinAlgError, OverflowError, FloatingPointError under ``np.errstate(raise)``):
    that is ``fit_failed`` too, never an exception of another type.
    """
    try:
        return _normalize(energy, mu, element, settings, edge)
    except SpectrumError:
        raise
    except (ValueError, ArithmeticError) as exc:  # LinAlgError is a ValueError
        raise SpectrumError("fit_failed", f"the normalization failed on these numbers ({type(exc).__name__}: "
                                          f"{exc}): check the energy and mu columns", "energy") from None


def _normalize(energy, mu, element: str, settings: MeasuredSettings, edge: str | None) -> NormalizedSpectrum:
    e = np.asarray(energy, dtype=float)
    m = np.asarray(mu, dtype=float)
    if edge is not None and edge.upper() != "K":
        raise SpectrumError("not_k_edge", f"{element} {edge.upper()} edge (from the file's header): the model "
                                          "reads K edges only", "edge")
    if len(e) < 2 * settings.min_fit_points or np.any(np.diff(e) <= 0):
        raise SpectrumError("fit_failed", "too few points or non-increasing energy for the normalization", "energy")
    ek = k_edge_energy(element)
    if not (e[0] - settings.e0_search_ev <= ek <= e[-1] + settings.e0_search_ev) or not (e[0] < ek < e[-1]):
        raise SpectrumError("wrong_edge", f"the energy range {e[0]:.0f}-{e[-1]:.0f} eV does not contain the {element} "
                                          f"K edge ({ek:.0f} eV){_looks_like(e, m)}", "energy")
    e0 = find_e0(e, m, ek, settings)
    if e0 - e[0] < settings.min_pre_ev:
        raise SpectrumError("starts_after_edge", f"the data start at {e[0]:.1f} eV, less than {settings.min_pre_ev:g} "
                                                 f"eV below the edge (e0 = {e0:.1f} eV): no pre-edge", "energy")
    norm2 = float(e[-1] - e0)
    if norm2 < settings.min_post_ev:
        raise SpectrumError("stops_before_post_edge",
                            f"the data stop {norm2:.1f} eV above the edge (e0 = {e0:.1f} eV, last point "
                            f"{e[-1]:.1f} eV): at least {settings.min_post_ev:g} eV of post-edge is needed",
                            "energy")
    # pre-edge line (larch: fit of mu over [e0+pre1, e0+pre2], clipped to the data)
    p_lo, p_hi = max(float(e[0]), e0 + settings.pre1_ev), e0 + settings.pre2_ev
    sel = (e >= p_lo) & (e <= p_hi)
    if sel.sum() >= settings.min_fit_points:
        coef = np.polyfit(e[sel], m[sel], 1)
        pre_edge, pre_mode, pre_range = np.polyval(coef, e), "line", (p_lo, p_hi)
    else:
        first = e <= e[0] + settings.pre_constant_ev
        pre_edge = np.full_like(e, float(m[first].mean()))
        pre_mode, pre_range = "constant", (float(e[0]), float(e[0] + settings.pre_constant_ev))
    # post-edge polynomial (larch's default ranges and degree)
    norm1 = min(25.0, 5.0 * round(norm2 / 15.0))
    norm1 = min(norm1, norm2 - 10.0)
    span = norm2 - norm1
    nnorm = 2 if span > 300 else (1 if span > 30 else 0)
    sel = (e >= e0 + norm1) & (e <= e0 + norm2)
    if sel.sum() < max(settings.min_fit_points, nnorm + 2):
        raise SpectrumError("fit_failed", f"only {int(sel.sum())} points in the post-edge range "
                                          f"{e0 + norm1:.0f}-{e0 + norm2:.0f} eV", "energy")
    x0 = e0  # centred for a well-conditioned fit
    pcoef = np.polyfit(e[sel] - x0, (m - pre_edge)[sel], nnorm)
    post_edge = pre_edge + np.polyval(pcoef, e - x0)
    step = float(np.polyval(pcoef, 0.0))
    scale = float(np.ptp(m)) or 1.0
    if not np.isfinite(step) or step <= 1e-6 * scale:
        raise SpectrumError("no_edge_step", f"no rising edge at e0 = {e0:.1f} eV (edge step {step:.3g} <= 0): "
                                            "inverted columns (i0/itrans swapped?) or not an absorption spectrum",
                            "mu")
    norm = (m - pre_edge) / step
    flat = norm.copy()
    above = e >= e0
    flat[above] = norm[above] - ((post_edge - pre_edge)[above] / step - 1.0)
    crop = (e >= e0 - settings.crop_before_ev) & (e <= e0 + settings.crop_after_ev)
    if crop.sum() < settings.min_fit_points:
        raise SpectrumError("fit_failed", f"too few points near the edge ({int(crop.sum())} within "
                                          f"{settings.crop_before_ev:g} eV below and {settings.crop_after_ev:g} eV "
                                          "above e0)", "energy")
    half = rising_edge_energy(e[crop], norm[crop], settings.edge_hold_ev, settings.smooth_ev)
    return NormalizedSpectrum(element, e, m, float(e0), pre_edge, post_edge, step, norm, flat, pre_range,
                              (float(e0 + norm1), float(e0 + norm2)), nnorm, pre_mode, float(half))
