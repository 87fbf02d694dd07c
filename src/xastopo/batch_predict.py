"""Batch prediction from files: parquet of site spectra or a JSON request → CSV, one row a material.

A thin shell over :mod:`xastopo.inference` (the service's path): the file becomes a list of
materials, :meth:`~xastopo.inference.InputBuilder.build` turns them into arrays (request → arrays) and
:meth:`~xastopo.inference.Predictor.predict_inputs` into answers (arrays → predictions). Several
sites of one element are combined by the Preprocessor exactly as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from xastopo import config
from xastopo.inference import InputError, MaterialSites, Predictor
from xastopo.schema import Prediction, PredictRequest, error_line, parse_request, request_errors

CSV_COLUMNS = ["material_id", "probability_topological", "label", "elements_used", "warnings"]


class BatchInputError(ValueError):
    """The input file cannot be used; the message names the file, row or field."""


def resolve_model_dir(model_dir: Path | None, params_path: Path | None = None) -> Path:
    """``--model-dir`` if given, else :func:`xastopo.config.model_dir` (as the service resolves it)."""
    if model_dir is not None:
        return model_dir
    return config.model_dir(config.load_params(params_path))


def validation_message(exc: ValidationError) -> str:
    """First schema error as 'materials[3].spectra[0].energy: message' (as the service words it)."""
    return error_line(request_errors(exc)[0])


def read_json_request(path: Path, params_path: Path | None = None) -> PredictRequest:
    """A JSON request, validated as the service validates it (with the serving size limits)."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BatchInputError(f"{path}: not valid JSON ({exc})") from exc
    limits = config.serving_settings(config.load_params(params_path)).limits
    try:
        return parse_request(data, limits)
    except ValidationError as exc:
        raise BatchInputError(f"{path}: {validation_message(exc)}") from exc


def parquet_materials(path: Path) -> list[tuple[str, dict[str, list]]]:
    """Group site rows by material and element; weights from 'weight'/'multiplicity' or equal."""
    from xastopo.data.readers import ReaderError, read_site_spectra

    try:
        df = read_site_spectra(path)
    except ReaderError as exc:
        raise BatchInputError(str(exc)) from exc
    wcol = next((c for c in ("weight", "multiplicity") if c in df.columns), None)
    out: list[tuple[str, dict[str, list]]] = []
    for mp, g in df.groupby("mp_id", sort=False):
        spectra: dict[str, list] = {}
        for r in g.itertuples(index=False):
            w = float(getattr(r, wcol)) if wcol else 1.0
            energy = np.asarray(r.energy if r.energy is not None else [], dtype=float)
            mu = np.asarray(r.mu if r.mu is not None else [], dtype=float)
            spectra.setdefault(str(r.absorbing_element), []).append((energy, mu, w))
        out.append((str(mp), spectra))
    return out


def read_materials(input_path: Path, params_path: Path | None = None) -> list[MaterialSites]:
    """The materials of a .json request or a .parquet of site spectra, in file order."""
    suffix = input_path.suffix.lower()
    if suffix == ".json":
        return [MaterialSites.from_request(m) for m in read_json_request(input_path, params_path).materials]
    if suffix in (".parquet", ".pq"):
        return [MaterialSites(mid, spectra) for mid, spectra in parquet_materials(input_path)]
    raise BatchInputError(f"{input_path}: expected a .parquet or .json file")


def invalid_row(material_id: str, exc: InputError) -> dict:
    return {"material_id": material_id, "probability_topological": float("nan"), "label": "",
            "elements_used": "", "warnings": f"invalid: {exc}"}


def write_csv(rows: list[Prediction | dict], out: Path) -> int:
    table = [r.model_dump() if isinstance(r, Prediction) else r for r in rows]
    df = pd.DataFrame(table, columns=CSV_COLUMNS)[CSV_COLUMNS]
    df["elements_used"] = df["elements_used"].map(lambda v: ";".join(v) if isinstance(v, list) else v)
    df["warnings"] = df["warnings"].map(lambda v: " | ".join(v) if isinstance(v, list) else v)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return len(df)


def predict_file(input_path: Path, out: Path, model_dir: Path | None, params_path: Path | None = None,
                 skip_invalid: bool = False, batch_size: int = 256) -> tuple[int, int]:
    """Predict every material of ``input_path`` into ``out``; return (rows written, invalid).

    A material that cannot be used stops the run with an InputError naming it, or with
    ``skip_invalid`` becomes a row whose warning gives the reason.
    """
    if not input_path.is_file():
        raise BatchInputError(f"{input_path}: file not found")
    predictor = Predictor(resolve_model_dir(model_dir, params_path))
    materials = read_materials(input_path, params_path)
    inputs = predictor.build(materials, progress=True)
    if inputs.errors and not skip_invalid:
        exc = inputs.errors[0]
        raise InputError(exc.index, exc.field, f"{exc.message} (material_id {materials[exc.index].material_id})")
    answers = predictor.predict_inputs(inputs, batch_size, progress=True)
    invalid = {exc.index: invalid_row(materials[exc.index].material_id, exc) for exc in inputs.errors}
    rows = [a if a is not None else invalid[i] for i, a in enumerate(answers)]
    return write_csv(rows, out), len(invalid)
