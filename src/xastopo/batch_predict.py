"""Batch prediction from files: parquet of site spectra, a JSON request or a CSV of formulas → CSV,
one row a material.

Inputs: a parquet of site spectra (``mp_id, absorbing_element, energy, mu``, optional ``weight`` or
``multiplicity`` and ``formula``: one formula per material, blank rows take the material's other
rows' formula), a JSON request (the service's schema, formula/elements included), or a CSV
``material_id,formula`` (composition only: screening candidate lists that have no spectra; needs a
model that reads compositions, ``nn_any``).

A thin shell over :mod:`xastopo.inference` (the service's path): the file becomes a list of
materials, :meth:`~xastopo.inference.InputBuilder.build` turns them into arrays (request → arrays) and
:meth:`~xastopo.inference.Predictor.predict_inputs` into answers (arrays → predictions). Several
sites of one element are combined by the Preprocessor exactly as in training.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from xastopo import config
from xastopo.inference import InputError, MaterialSites, Predictor
from xastopo.schema import (
    Prediction,
    PredictRequest,
    RequestBodyError,
    error_line,
    json_depth,
    parse_request_json,
    request_errors,
)

CSV_COLUMNS = ["material_id", "probability_topological", "label", "elements_used", "warnings", "uncertainty",
               "elements_with_spectrum", "elements_by_type", "composition_only"]
LIST_COLUMNS = ("elements_used", "elements_with_spectrum", "elements_by_type")


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
    """A JSON request, validated as the service validates it (the serving size limits, and the nesting
    limit ``serving.max_json_depth`` checked before parsing: the parsers recurse per level). Any
    unreadable body is a BatchInputError naming the file, never a traceback (CLI) or a 500 (page)."""
    serving = config.serving_settings(config.load_params(params_path))
    body = path.read_bytes()
    if json_depth(body, serving.max_json_depth) > serving.max_json_depth:
        raise BatchInputError(f"{path}: nested more than {serving.max_json_depth} levels deep "
                              "(serving.max_json_depth; a request needs 6)")
    try:
        return parse_request_json(body, serving.limits)
    except RequestBodyError as exc:
        raise BatchInputError(f"{path}: {exc}") from None
    except ValidationError as exc:
        raise BatchInputError(f"{path}: {validation_message(exc)}") from None
    except RecursionError:
        raise BatchInputError(f"{path}: nested too deeply") from None


def _formula_of(path: Path, material_id: str, values) -> str | None:
    """The one formula of a material's rows (blank rows ignored); an error when they disagree."""
    given = {str(v).strip() for v in values if not pd.isna(v)}
    given.discard("")
    if len(given) > 1:
        raise BatchInputError(f"{path}: material {material_id}: its rows give different formulas "
                              f"({', '.join(repr(f) for f in sorted(given))}); send one formula per material")
    return given.pop() if given else None


def parquet_materials(path: Path) -> list[MaterialSites]:
    """Group site rows by material and element; weights from 'weight'/'multiplicity' or equal; the
    material's formula from an optional 'formula' column."""
    from xastopo.data.readers import ReaderError, read_site_spectra

    try:
        df = read_site_spectra(path)
    except ReaderError as exc:
        raise BatchInputError(str(exc)) from exc
    wcol = next((c for c in ("weight", "multiplicity") if c in df.columns), None)
    out: list[MaterialSites] = []
    for mp, g in df.groupby("mp_id", sort=False):
        spectra: dict[str, list] = {}
        for r in g.itertuples(index=False):
            w = float(getattr(r, wcol)) if wcol else 1.0
            energy = np.asarray(r.energy if r.energy is not None else [], dtype=float)
            mu = np.asarray(r.mu if r.mu is not None else [], dtype=float)
            spectra.setdefault(str(r.absorbing_element), []).append((energy, mu, w))
        formula = _formula_of(path, str(mp), g["formula"]) if "formula" in g.columns else None
        out.append(MaterialSites(str(mp), spectra, formula=formula))
    return out


def formula_csv_materials(path: Path) -> list[MaterialSites]:
    """A CSV ``material_id,formula`` (other columns ignored): composition-only materials, file order."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BatchInputError(f"{path}: not a readable csv ({exc.__class__.__name__})") from exc
    missing = [c for c in ("material_id", "formula") if c not in df.columns]
    if missing:
        raise BatchInputError(f"{path}: missing column(s) {', '.join(missing)} (expected material_id,formula)")
    if df.empty:
        raise BatchInputError(f"{path}: no materials")
    seen: dict[str, int] = {}
    out = []
    for i, (mid, formula) in enumerate(zip(df["material_id"].str.strip(), df["formula"], strict=True)):
        line = i + 2  # the header is line 1
        if not mid:
            raise BatchInputError(f"{path}: line {line}: empty material_id")
        if mid in seen:
            raise BatchInputError(f"{path}: line {line}: material_id {mid} repeats line {seen[mid]}")
        seen[mid] = line
        out.append(MaterialSites(mid, {}, formula=formula.strip()))
    return out


def read_materials(input_path: Path, params_path: Path | None = None) -> list[MaterialSites]:
    """The materials of a .json request, a .parquet of site spectra or a .csv of formulas, in file order."""
    suffix = input_path.suffix.lower()
    if suffix == ".json":
        return [MaterialSites.from_request(m) for m in read_json_request(input_path, params_path).materials]
    if suffix in (".parquet", ".pq"):
        return parquet_materials(input_path)
    if suffix == ".csv":
        return formula_csv_materials(input_path)
    raise BatchInputError(f"{input_path}: expected a .parquet, .json or .csv (material_id,formula) file")


def invalid_row(material_id: str, exc: InputError) -> dict:
    return {"material_id": material_id, "probability_topological": float("nan"), "label": "",
            "elements_used": "", "warnings": f"invalid: {exc}", "uncertainty": float("nan"),
            "elements_with_spectrum": "", "elements_by_type": "", "composition_only": ""}


def write_csv(rows: list[Prediction | dict], out: Path) -> int:
    """One row a material: lists joined by ';', warnings by ' | ', no uncertainty → empty."""
    table = [r.model_dump() if isinstance(r, Prediction) else r for r in rows]
    df = pd.DataFrame(table, columns=CSV_COLUMNS)[CSV_COLUMNS]
    for col in LIST_COLUMNS:
        df[col] = df[col].map(lambda v: ";".join(v) if isinstance(v, list) else v)
    df["warnings"] = df["warnings"].map(lambda v: " | ".join(v) if isinstance(v, list) else v)
    df["uncertainty"] = df["uncertainty"].map(lambda v: float("nan") if v is None else v)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return len(df)


def _options(params_path: Path | None) -> config.PredictOptions:
    """``predict:`` of the params file; the defaults when there is none (a ``--model-dir`` run needs no
    params otherwise, and must not start needing one). A malformed file or value is still an error."""
    try:
        params = config.load_params(params_path)
    except config.ConfigError:
        if params_path is not None or os.environ.get(config.PARAMS_ENV):
            raise
        return config.PredictOptions()
    return config.predict_options(params)


def predict_file(input_path: Path, out: Path, model_dir: Path | None, params_path: Path | None = None,
                 skip_invalid: bool = False, batch_size: int = 256, distributed: bool = False,
                 scheduler: str | None = None, workers: int = 0) -> tuple[int, int]:
    """Predict every material of ``input_path`` into ``out``; return (rows written, invalid).

    A material that cannot be used stops the run with an InputError naming it, or with
    ``skip_invalid`` becomes a row whose warning gives the reason. ``distributed`` (or a ``scheduler``)
    fans the batches out over Dask (:func:`xastopo.screening.predict_materials`: same answers).
    """
    from xastopo.screening import cached_predictor, predict_materials

    if not input_path.is_file():
        raise BatchInputError(f"{input_path}: file not found")
    mdir = resolve_model_dir(model_dir, params_path)
    distributed = distributed or bool(scheduler)
    options = _options(params_path)
    if distributed:  # a missing or corrupted model stops here, before the input is read
        cached_predictor(mdir)
    else:
        cached_predictor(mdir, options.ort_spinning, options.concurrent_runs)
    materials = read_materials(input_path, params_path)
    answers = predict_materials(mdir, materials, batch_size, distributed=distributed,
                                scheduler=scheduler, workers=workers, options=options)
    errors = [a for a in answers if isinstance(a, InputError)]
    if errors and not skip_invalid:
        exc = errors[0]
        raise InputError(exc.index, exc.field, f"{exc.message} (material_id {materials[exc.index].material_id})")
    rows = [invalid_row(materials[i].material_id, a) if isinstance(a, InputError) else a
            for i, a in enumerate(answers)]
    return write_csv(rows, out), len(errors)


# ------------------------------------------------------------------ measured (beamline) files
MEASURED_SUFFIXES = (".xdi", ".xmu", ".dat", ".txt", ".csv", ".nor", ".001", ".060")


def measured_material(paths: list[Path], formula: str | None = None, element: str | None = None,
                      columns: dict[str, str] | None = None, material_id: str | None = None,
                      min_points: int | None = None) -> MaterialSites:
    """Several measured files of one material → one :class:`MaterialSites`: each file a site of its
    element (repeat scans of one element are averaged with equal weights, as sites are), marked
    measured so the InputBuilder normalizes and aligns them. The element comes from each file's
    header, else ``element``; a file that cannot be read (or has fewer than ``min_points`` rows, the
    model's ``Preprocessor.min_points``) is a BatchInputError naming it."""
    from xastopo.data.measured import MeasuredError, read_measured

    if not paths:
        raise BatchInputError("no measured files given")
    spectra: dict[str, list] = {}
    measured: dict[str, list[tuple[str, str | None]]] = {}
    for path in paths:
        if not path.is_file():
            raise BatchInputError(f"{path}: file not found")
        try:
            s = read_measured(path, str(path), element, columns, min_points)
        except MeasuredError as exc:
            raise BatchInputError(str(exc)) from None
        spectra.setdefault(s.element, []).append((s.energy, s.mu, 1.0))
        measured.setdefault(s.element, []).append((str(path), s.edge))
    mid = material_id or (formula or "+".join(p.stem for p in paths))
    return MaterialSites(mid, spectra, formula=formula, measured=measured)


def predict_measured_files(paths: list[Path], out: Path, formula: str | None, model_dir: Path | None,
                           params_path: Path | None = None, element: str | None = None,
                           columns: dict[str, str] | None = None, material_id: str | None = None) -> int:
    """One material from measured files → one CSV row, through the same Predictor as every input."""
    predictor = Predictor(resolve_model_dir(model_dir, params_path))  # a bad model stops first, as predict_file
    material = measured_material(paths, formula, element, columns, material_id, predictor.preprocessor.min_points)
    inputs = predictor.build([material])
    if inputs.errors:
        raise inputs.errors[0]
    return write_csv(predictor.predict_inputs(inputs), out)  # type: ignore[arg-type]
