"""Batch prediction from files: parquet of site spectra or a JSON request → CSV, one row a material.

Uses the Predictor (same code path as the service); several sites of one element are combined with
the Preprocessor exactly as in training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

from xastopo.inference import InputError, Predictor
from xastopo.schema import Prediction, PredictRequest

CSV_COLUMNS = ["material_id", "probability_topological", "label", "elements_used", "warnings"]


class BatchInputError(ValueError):
    """The input file cannot be used; the message names the file, row or field."""


def resolve_model_dir(model_dir: Path | None, params_path: Path) -> Path:
    if model_dir is not None:
        return model_dir
    if os.environ.get("XASTOPO_MODEL_DIR"):
        return Path(os.environ["XASTOPO_MODEL_DIR"])
    if params_path.is_file():
        from xastopo.config import load_params

        return Path(load_params(params_path).get("serving", {}).get("model_dir", "models/export"))
    return Path("models/export")


def validation_message(exc: ValidationError) -> str:
    """First pydantic error as 'materials[3].spectra[0].energy: message'."""
    err = exc.errors()[0]
    loc = ""
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def read_json_request(path: Path) -> PredictRequest:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BatchInputError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return PredictRequest.model_validate(data)
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


def predict_file(input_path: Path, out: Path, model_dir: Path | None, params_path: Path,
                 skip_invalid: bool = False, batch_size: int = 256) -> tuple[int, int]:
    """Predict every material of ``input_path`` into ``out``; return (rows written, invalid)."""
    if not input_path.is_file():
        raise BatchInputError(f"{input_path}: file not found")
    predictor = Predictor(resolve_model_dir(model_dir, params_path))
    suffix = input_path.suffix.lower()
    if suffix == ".json":
        req = read_json_request(input_path)
        items = [(m.material_id, {s.element: [(s.energy, s.mu, 1.0)] for s in m.spectra},
                  {s.element: j for j, s in enumerate(m.spectra)}) for m in req.materials]
    elif suffix in (".parquet", ".pq"):
        items = [(mid, spectra, None) for mid, spectra in parquet_materials(input_path)]
    else:
        raise BatchInputError(f"{input_path}: expected a .parquet or .json file")
    rows: list[Prediction | dict] = [None] * len(items)  # type: ignore[list-item]
    n_bad = 0
    ok: list[tuple[int, tuple[np.ndarray, np.ndarray]]] = []
    for i, (mid, spectra, positions) in enumerate(tqdm(items, desc="preprocess", unit="material", mininterval=1.0,
                                            disable=len(items) < 200)):
        try:
            ok.append((i, predictor.sites_arrays(i, spectra, positions)))
        except InputError as exc:
            if not skip_invalid:
                raise InputError(exc.index, exc.field, f"{exc.message} (material_id {mid})") from None
            n_bad += 1
            rows[i] = {"material_id": mid, "probability_topological": float("nan"), "label": "",
                       "elements_used": "", "warnings": f"invalid: {exc}"}
    for start in tqdm(range(0, len(ok), batch_size), desc="predict", unit="batch", disable=len(ok) < 1000):
        chunk = ok[start:start + batch_size]
        probs = predictor.predict_materials([a for _, a in chunk])
        for (i, a), p in zip(chunk, probs, strict=True):
            rows[i] = predictor.prediction(items[i][0], p, a[1])
    table = [r.model_dump() if isinstance(r, Prediction) else r for r in rows]
    df = pd.DataFrame(table)[CSV_COLUMNS]
    df["elements_used"] = df["elements_used"].map(lambda v: ";".join(v) if isinstance(v, list) else v)
    df["warnings"] = df["warnings"].map(lambda v: " | ".join(v) if isinstance(v, list) else v)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return len(df), n_bad
