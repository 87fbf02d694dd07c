"""Request/response schema shared by the CLI and the service (one definition, one set of checks).

Generic checks (types, finite numbers, strictly increasing energy, matching lengths, known element
symbols, no duplicate elements, size limits) live here as pydantic validators, so the service answers
them with HTTP 422 naming the field, and the CLI reports the same words. Checks that need the fitted
model (window coverage, elements with statistics) are added by :class:`xastopo.inference.InputBuilder`.

The size limits are not constants here: they are the serving settings (``serving.max_materials``,
``serving.max_points`` of params.yaml, :attr:`xastopo.config.ServingSettings.limits`), passed as the
validation context by :func:`parse_request`. Validated without a context, a request has no size limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from xastopo.elements import Z_OF


def _limit(info: ValidationInfo, name: str) -> int | None:
    return (info.context or {}).get(name)


class SpectrumIn(BaseModel):
    """One K-edge spectrum of one absorbing element (absolute energy in eV)."""

    model_config = ConfigDict(extra="forbid")

    element: str = Field(description="absorbing element symbol, e.g. 'Cu'")
    energy: list[float] = Field(description="absolute photon energy, eV, strictly increasing")
    mu: list[float] = Field(description="absorption; any scale (normalized on the element window)")
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
        bad = [i for i, x in enumerate(v) if not math.isfinite(x)]
        if bad:
            raise ValueError(f"contains NaN or infinite values (first at index {bad[0]})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SpectrumIn:
        if len(self.energy) != len(self.mu):
            raise ValueError(f"energy has {len(self.energy)} points but mu has {len(self.mu)}")
        for i in range(1, len(self.energy)):
            if self.energy[i] <= self.energy[i - 1]:
                raise ValueError(f"energy must be strictly increasing (index {i}: {self.energy[i]} after "
                                 f"{self.energy[i - 1]})")
        if self.kind == "experimental":
            raise ValueError("kind 'experimental' is not supported yet: measured spectra need the "
                             "experimental preprocessing path (pre-edge line, arctan edge fit); send "
                             "computed FEFF spectra")
        return self


class MaterialIn(BaseModel):
    """One material: one spectrum per absorbing element (several elements allowed)."""

    model_config = ConfigDict(extra="forbid")

    material_id: str = Field(min_length=1, max_length=200)
    spectra: list[SpectrumIn]

    @field_validator("spectra")
    @classmethod
    def _non_empty_unique(cls, v: list[SpectrumIn]) -> list[SpectrumIn]:
        if not v:
            raise ValueError("no spectra: send at least one absorbing element's spectrum")
        seen: set[str] = set()
        for s in v:
            if s.element in seen:
                raise ValueError(f"duplicate element '{s.element}': send one spectrum per element "
                                 "(combine sites first)")
            seen.add(s.element)
        return v


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


class Prediction(BaseModel):
    """One answer per material, in request order (also the CLI's CSV row)."""

    material_id: str
    probability_topological: float
    label: Literal["topological", "trivial"]
    elements_used: list[str]
    warnings: list[str] = Field(default_factory=list)
    model_name: str = ""
    model_version: str = ""


class PredictResponse(BaseModel):
    predictions: list[Prediction]
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
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc, index = "", None
        parts = list(err["loc"])
        for part in parts:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
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
