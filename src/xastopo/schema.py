"""Request/response schema shared by the CLI and the service (one definition, one set of checks).

Generic checks (types, finite numbers, strictly increasing energy, matching lengths, known element
symbols, no duplicate elements, size limits) live here as pydantic validators, so the service answers
them with HTTP 400 naming the field, and the CLI reports the same words. Checks that need the fitted
model (window coverage, elements with statistics) are added by :class:`xastopo.inference.Predictor`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from xastopo.elements import Z_OF

# Defaults; the service and CLI override them from params.yaml (serving.*).
MAX_POINTS = 5000
MAX_MATERIALS = 256


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
    def _finite(cls, v: list[float]) -> list[float]:
        if len(v) > MAX_POINTS:
            raise ValueError(f"too many points ({len(v)} > {MAX_POINTS})")
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
    def _count(cls, v: list[MaterialIn]) -> list[MaterialIn]:
        if not v:
            raise ValueError("no materials")
        if len(v) > MAX_MATERIALS:
            raise ValueError(f"too many materials ({len(v)} > {MAX_MATERIALS})")
        return v


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
