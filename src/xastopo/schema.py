"""Request/response schema shared by the CLI and the service (one definition, one set of checks).

Generic checks (types, finite numbers, strictly increasing energy, matching lengths, known element
symbols, no duplicate elements, a readable formula, spectra only of the composition's elements, size
limits) live here as pydantic validators, so the service answers them with HTTP 422 naming the field,
and the CLI reports the same words. Checks that need the fitted model (window coverage, elements with
statistics, whether the model can answer without spectra) are added by
:class:`xastopo.inference.InputBuilder`.

A material is its composition plus any subset of its K-edge spectra: ``formula`` (``"Cu2S"``) or
``elements`` (``["Cu", "S"]``), not both, and ``spectra`` (possibly empty when the composition is
given: a composition-only request). Without ``formula`` and ``elements`` the composition is the
spectra's elements (the original request shape, unchanged).

The size limits are not constants here: they are the serving settings (``serving.max_materials``,
``serving.max_points`` of params.yaml, :attr:`xastopo.config.ServingSettings.limits`), passed as the
validation context by :func:`parse_request`. Validated without a context, a request has no size limit.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from itertools import islice
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from xastopo.elements import Z_OF, atomic_number, parse_formula


def _limit(info: ValidationInfo, name: str) -> int | None:
    return (info.context or {}).get(name)


class FieldError(ValueError):
    """A check's failure that names a field below where the validator runs (``path``, e.g.
    ``spectra[1].element`` for a material-level check); :func:`request_errors` appends it to the loc."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class SpectrumIn(BaseModel):
    """One K-edge spectrum of one absorbing element (absolute energy in eV)."""

    model_config = ConfigDict(extra="forbid")

    element: str = Field(description="absorbing element symbol, e.g. 'Cu'")
    energy: list[float] = Field(description="absolute photon energy, eV, strictly increasing")
    mu: list[float] = Field(description="absorption; any scale (normalized on the element window)")
    # "experimental": a measured spectrum (raw mu over the edge, beamline energy scale); it is
    # normalized (e0, pre-edge line, edge step) and aligned onto the training spectra's edge before
    # the computed path (xastopo.preprocessing.measured, applied by xastopo.inference.InputBuilder)
    kind: Literal["computed", "experimental"] = "computed"

    @field_validator("element")
    @classmethod
    def _known_element(cls, v: str) -> str:
        if v not in Z_OF:
            raise ValueError(f"unknown element symbol '{v}'")
        return v

    @field_validator("energy", "mu")
    @classmethod
    def _finite(cls, v: list[float], info: ValidationInfo) -> list[float]:
        most = _limit(info, "max_points")
        if most is not None and len(v) > most:
            raise ValueError(f"too many points ({len(v)} > {most})")
        # One C-level sum decides for every valid list (a NaN or an infinity makes it non-finite); only then
        # is the first bad index looked for (finite values can also overflow the sum: then none is found and
        # the list passes). A per-value Python loop here was ~40 % of parsing a request body.
        if not math.isfinite(sum(v)):
            bad = next((i for i, x in enumerate(v) if not math.isfinite(x)), None)
            if bad is not None:
                raise ValueError(f"contains NaN or infinite values (first at index {bad})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SpectrumIn:
        if len(self.energy) != len(self.mu):
            raise ValueError(f"energy has {len(self.energy)} points but mu has {len(self.mu)}")
        e = self.energy
        if not all(map(operator.lt, e, islice(e, 1, None))):  # C loops; the index only for the error
            i = next(i for i in range(1, len(e)) if e[i] <= e[i - 1])
            raise ValueError(f"energy must be strictly increasing (index {i}: {e[i]} after {e[i - 1]})")
        return self


class MaterialIn(BaseModel):
    """One material: its composition (``formula`` or ``elements``, optional) and one spectrum per
    absorbing element it has a spectrum for (several elements allowed; none when the composition is
    given)."""

    model_config = ConfigDict(extra="forbid")

    material_id: str = Field(min_length=1, max_length=200)
    formula: str | None = Field(default=None, max_length=500,
                                description="chemical formula, e.g. 'Cu2S', 'Bi2Se3', 'Ca(OH)2'")
    elements: list[str] | None = Field(default=None, max_length=92,
                                       description="the material's element symbols (instead of formula)")
    spectra: list[SpectrumIn] = Field(default_factory=list)

    @field_validator("formula")
    @classmethod
    def _readable_formula(cls, v: str | None) -> str | None:
        if v is not None:
            parse_formula(v)  # ValueError naming the problem
        return v

    @field_validator("elements")
    @classmethod
    def _known_unique_elements(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("no elements: list the material's element symbols (or send formula)")
        seen: set[str] = set()
        for j, el in enumerate(v):
            if el not in Z_OF:
                raise FieldError(f"[{j}]", f"unknown element symbol '{el}'")
            if el in seen:
                raise FieldError(f"[{j}]", f"duplicate element '{el}'")
            seen.add(el)
        return v

    @field_validator("spectra")
    @classmethod
    def _unique(cls, v: list[SpectrumIn]) -> list[SpectrumIn]:
        seen: set[str] = set()
        for s in v:
            if s.element in seen:
                raise ValueError(f"duplicate element '{s.element}': send one spectrum per element "
                                 "(combine sites first)")
            seen.add(s.element)
        return v

    @model_validator(mode="after")
    def _composition(self) -> MaterialIn:
        if self.formula is not None and self.elements is not None:
            raise FieldError("elements", "send formula or elements, not both")
        if not self.spectra and self.formula is None and self.elements is None:
            raise FieldError("spectra", "no spectra: send at least one absorbing element's spectrum, or the "
                                        "material's formula or elements (a composition-only answer)")
        given = self.given_composition
        if given is not None:
            for j, s in enumerate(self.spectra):
                if s.element not in given:
                    raise FieldError(f"spectra[{j}].element", f"'{s.element}' is not in {self.composition_name}")
        return self

    @property
    def given_composition(self) -> set[str] | None:
        """The elements of ``formula`` or ``elements``; None when neither is given."""
        if self.formula is not None:
            return set(parse_formula(self.formula))
        return set(self.elements) if self.elements is not None else None

    @property
    def composition(self) -> list[str]:
        """The material's elements sorted by Z (the spectra's elements when no composition is given)."""
        given = self.given_composition
        return sorted(given if given is not None else {s.element for s in self.spectra}, key=atomic_number)

    @property
    def composition_name(self) -> str:
        """How errors name the composition: ``the formula 'Cu2S'`` or ``elements [Cu, S]``."""
        if self.formula is not None:
            return f"the formula '{self.formula}'"
        return f"elements [{', '.join(self.elements or [])}]"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    materials: list[MaterialIn]

    @field_validator("materials")
    @classmethod
    def _count(cls, v: list[MaterialIn], info: ValidationInfo) -> list[MaterialIn]:
        if not v:
            raise ValueError("no materials")
        most = _limit(info, "max_materials")
        if most is not None and len(v) > most:
            raise ValueError(f"too many materials ({len(v)} > {most})")
        return v


def parse_request(data: Any, limits: Mapping[str, int] | None = None) -> PredictRequest:
    """Validate a request body; ``limits`` = {max_materials, max_points} (the serving settings')."""
    return PredictRequest.model_validate(data, context=dict(limits or {}))


class RequestBodyError(ValueError):
    """A body that is no request at all: not JSON (``kind`` "json": HTTP 400) or JSON that is not an object
    (``kind`` "object": 422). The message says which, without the file or field prefix."""

    def __init__(self, kind: Literal["json", "object"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_request_json(body: bytes | str, limits: Mapping[str, int] | None = None) -> PredictRequest:
    """Parse and validate a JSON request body in one pass (pydantic's own JSON parser), as the service's gate
    and ``xastopo predict request.json`` read bodies; ``limits`` as in :func:`parse_request`.

    Why not ``json.loads`` then :func:`parse_request`: building Python floats for every spectrum value made
    ``json.loads`` alone ~11 ms of a 64-material body (~15 ms with the validation) against ~3 ms here, the
    largest cost of a request in the service. Nesting must be checked first (:func:`json_depth`).

    Raises :class:`RequestBodyError` (not JSON, or not an object) or pydantic's ``ValidationError``."""
    try:
        return PredictRequest.model_validate_json(body, context=dict(limits or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise RequestBodyError("json", f"not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise RequestBodyError("object", 'must be a JSON object {"materials": [...]}') from None
        raise


class Prediction(BaseModel):
    """One answer per material, in request order (also the CLI's CSV row).

    ``elements_used``: every element the model read, sorted by Z; of these, ``elements_with_spectrum``
    entered with their spectrum and ``elements_by_type`` by their atom type only (no spectrum sent, or
    none the model has training spectra for). ``composition_only``: no spectrum was read at all.
    ``uncertainty``: the spread of the model's ensemble members (None for a model without one).
    """

    material_id: str
    probability_topological: float
    label: Literal["topological", "trivial"]
    elements_used: list[str]
    warnings: list[str] = Field(default_factory=list)
    model_name: str = ""
    model_version: str = ""
    uncertainty: float | None = None
    elements_with_spectrum: list[str] = Field(default_factory=list)
    elements_by_type: list[str] = Field(default_factory=list)
    composition_only: bool = False


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model_name: str
    model_version: str


class EdgeExplanation(BaseModel):
    """One element of a material in an explanation (``xastopo.explain``). With a spectrum: the energy
    grid of the model's window (eV), the spectrum after preprocessing on it (edge-step units),
    the attribution of each energy (probability units: positive pushed toward topological), their sum,
    the energies of the largest |attributions|, and ``spectrum_effect`` = P(material) - P(this element
    read by its type only). Without one (read by type): the element only."""

    element: str
    with_spectrum: bool
    energy: list[float] = Field(default_factory=list)
    spectrum: list[float] = Field(default_factory=list)
    attribution: list[float] = Field(default_factory=list)
    attribution_total: float | None = None
    top_energies: list[float] = Field(default_factory=list)
    spectrum_effect: float | None = None


class Explanation(BaseModel):
    """A prediction with its per-energy attributions. ``probability_at_baseline``: the model's answer
    with every sent spectrum replaced by its ``baseline``; ``attribution_total``: the sum of all
    edges' attributions, to compare with ``probability - probability_at_baseline``."""

    prediction: Prediction
    method: str
    baseline: str
    probability_at_baseline: float
    attribution_total: float
    edges: list[EdgeExplanation]


class ExplainResponse(BaseModel):
    explanations: list[Explanation]
    model_name: str
    model_version: str


# ------------------------------------------------------------------------------- errors
def error_item(loc: str, message: str, index: int | None = None, field: str | None = None) -> dict[str, Any]:
    """One entry of an error answer: where (``materials[3].spectra[0].energy``), which material, what."""
    return {"loc": loc, "index": index, "field": field, "message": message}


def error_line(item: dict[str, Any]) -> str:
    """``loc: message`` (the service's ``error`` and the CLI's error line)."""
    return f"{item['loc']}: {item['message']}" if item["loc"] else item["message"]


def request_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors → [{loc: 'materials[3].spectra[0].energy', index: 3, field: 'spectra[0].energy', ...}]."""
    out = []
    for err in exc.errors(include_url=False, include_context=True, include_input=False):
        loc, index = "", None
        parts = list(err["loc"])
        for part in parts:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        below = (err.get("ctx") or {}).get("error")
        if isinstance(below, FieldError):  # a check that names a field below its validator's
            loc += below.path if below.path.startswith("[") else f".{below.path}"
        field = None
        if len(parts) >= 2 and parts[0] == "materials" and isinstance(parts[1], int):
            index = parts[1]
            field = loc.split("]", 1)[1].lstrip(".") or None
        msg = str(err["msg"]).removeprefix("Value error, ")
        if len(parts) == 4 and parts[2] == "spectra":  # a spectrum-level check: name its field
            first = msg.split(" ", 1)[0]
            if first in ("energy", "mu", "kind"):
                loc, field = f"{loc}.{first}", f"{field}.{first}"
        out.append(error_item(loc, msg, index, field))
    return out or [error_item("", "invalid request")]


# ------------------------------------------------------------------------------ hostile bodies
DEPTH_CHUNK = 1 << 20  # bytes scanned per numpy pass: bounded memory (~13 MB) whatever the body size
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')  # deleted by bytes.translate


def json_depth(body: bytes, limit: int) -> int:
    """Deepest nesting of ``[``/``{`` outside JSON strings (escaped quotes honoured), or a number above
    ``limit`` as soon as the scan finds it deeper: compare the result with ``limit`` (below it, the
    count of opening brackets is returned without a scan: an upper bound that is enough to decide).

    Why before parsing: the stdlib and pydantic parsers recurse per level, and a 2 KB body nested 1,000
    deep raised RecursionError deep in the stack (an unanswered request and a worker deaf to SIGTERM in
    the service, a traceback in the CLI). This scan is a few vectorized passes (about 0.2 s for a 13 MB
    body, nothing for a normal one), so it can run on every body. The one implementation: the service
    (request bodies) and :func:`xastopo.batch_predict.read_json_request` (files) both call it."""
    if b"\\" not in body:
        # No escapes (every real request: numbers, ids, symbols): the strings are exactly the spans between
        # successive quotes. One translate keeps the brackets and quotes (a few bytes per material), the
        # quoted spans are cut out of that, and the depth is a cumulative sum over the brackets left (C loops:
        # ~0.1 ms for a 64-material body; splitting the whole body took ~0.4 ms, a char scan ~12 % of the
        # service's CPU under load).
        structure = body.translate(None, _NOT_STRUCTURE)
        opening = structure.count(b"[") + structure.count(b"{")
        if opening <= limit:
            return opening
        outside = b"".join(structure.split(b'"')[::2])
        if not outside:
            return 0
        steps = np.frombuffer(outside, dtype=np.uint8)
        return int(np.cumsum(np.where((steps == 91) | (steps == 123), 1, -1), dtype=np.int64).max())
    opening = body.count(b"[") + body.count(b"{")
    if opening <= limit:
        return opening
    a = np.frombuffer(body, dtype=np.uint8)
    depth, in_str, run, deepest = 0, 0, 0, 0  # carried over chunks: level, inside a string, trailing "\" run
    for start in range(0, a.size, DEPTH_CHUNK):
        c = a[start:start + DEPTH_CHUNK]
        idx = np.arange(c.size, dtype=np.int32)
        last_plain = np.maximum.accumulate(np.where(c == 92, -1, idx).astype(np.int32))
        run_at = idx - last_plain + np.where(last_plain < 0, run, 0)  # backslash run ending at each byte
        quotes = np.flatnonzero(c == 34)
        before = np.where(quotes > 0, run_at[np.maximum(quotes - 1, 0)], run)
        toggle = np.zeros(c.size, dtype=np.uint8)
        toggle[quotes[before % 2 == 0]] = 1  # an unescaped quote opens or closes a string
        toggle[0] ^= in_str
        inside = np.bitwise_xor.accumulate(toggle)
        step = np.zeros(c.size, dtype=np.int8)
        step[(c == 91) | (c == 123)] = 1
        step[(c == 93) | (c == 125)] = -1
        step[inside.astype(bool)] = 0
        level = np.cumsum(step, dtype=np.int32) + depth
        deepest = max(deepest, int(level.max()))
        if deepest > limit:
            break
        depth, in_str, run = int(level[-1]), int(inside[-1]), int(run_at[-1])
    return deepest
