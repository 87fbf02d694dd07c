"""The page's ASGI app: static files plus three JSON endpoints under ``/ui/api`` over the service.

* ``POST api/analyze`` (multipart: ``files`` — at most ``serving.page_max_files`` spectrum files of
  one material —, ``formula``, ``material_id``): the prediction, its explanation (per-energy
  attributions) and, per edge, the training class means to draw beside the user's spectrum. Each file
  is read by the CLI's readers (parquet of site spectra, a JSON request, measured files such as XDI
  through ``batch_predict.measured_material``); a problem is reported next to the file or the formula
  it comes from, in words (HTTP 422), never as a traceback. A model service that cannot answer now is
  a 503 JSON with Retry-After whose ``error`` says so in words.
* ``POST api/batch`` (multipart: ``file`` — a parquet / JSON / CSV of many materials): streams
  newline-delimited JSON progress events (one per ``serving.page_batch_step`` materials) and ends with
  the predictions CSV, the same table as ``xastopo predict --skip-invalid`` (a material the model could
  not run is an invalid row, never a made-up label); a model service that stops answering ends the
  stream with an ``{"event": "error"}`` line.
* ``GET api/card``: the model card (metadata.json, and model_card.json / class_means.json when the
  export has them; an older export without them still works).

The app holds no model: a *backend* (the public BentoML service, see ``serving/service.py``) gives the
:class:`~xastopo.inference.InputBuilder` and runs the model service's ``infer`` and ``explain`` APIs.
The token rule is the service's gate (an ASGI middleware in front of every path): the page shell
(``/ui``, ``/ui/static/*``) carries no data and is public, every ``/ui/api`` call needs the bearer
token when ``XASTOPO_API_TOKEN`` is set; the page asks for it and sends it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xastopo.batch_predict import (
    MEASURED_SUFFIXES,
    BatchInputError,
    invalid_row,
    measured_material,
    parquet_materials,
    read_json_request,
    read_materials,
    write_csv,
)
from xastopo.config import ServingSettings
from xastopo.elements import parse_formula
from xastopo.explain import CLASS_MEANS_FILE, Attributions, ExplainSettings, explanation, load_optional_artifact
from xastopo.inference import ArtifactError, InputBuilder, InputError, MaterialSites

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
SPECTRUM_SUFFIXES = (".parquet", ".pq", ".json")
BATCH_SUFFIXES = (".parquet", ".pq", ".json", ".csv")
MODEL_FAILED = "the model could not be run on this material's spectra"
logger = logging.getLogger("xastopo.web")


class BackendUnavailable(RuntimeError):
    """The model service cannot answer now (unreachable, restarting, shedding load, or running another
    artifact than the preprocessing that built the arrays): answered 503 with ``Retry-After:
    retry_after`` seconds, never a wrong or made-up answer. Raised by a :class:`Backend`'s model calls."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Backend(Protocol):
    """What the page needs from the service it is mounted on. Both model calls go through the service's
    one checked path (``XasTopo.model_results``: artifact checksum, finite probabilities) and raise
    :class:`BackendUnavailable` when the model service cannot answer."""

    builder: InputBuilder
    explain_settings: ExplainSettings
    settings: ServingSettings

    async def model_outputs(self, arrays: Sequence[Arrays]) -> list[dict[str, Any] | None]:
        """{probability, uncertainty} per material (the model service's batched ``infer``); None for a
        material the model could not run (no finite probability)."""
        ...

    async def model_attributions(self, arrays: Sequence[Arrays]) -> list[dict[str, Any] | None]:
        """:meth:`xastopo.explain.Attributions.to_dict` per material (the model service's ``explain``);
        None for a material the model could not run."""
        ...


class UploadError(ValueError):
    """A user's file cannot be used; the message says why, in words."""


# ------------------------------------------------------------------------------- reading uploads
def _clean(message: str, tmp: Path, name: str) -> str:
    """A reader's message with the temporary path replaced by the uploaded file's name."""
    return message.replace(str(tmp), name).replace(str(tmp.parent) + "/", "")


def _safe_name(name: str) -> str:
    base = Path(name or "upload").name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:120] or "upload"


def read_spectrum_upload(name: str, content: bytes, workdir: Path) -> list[MaterialSites]:
    """The materials of one uploaded spectrum file, by the CLI's readers (the suffix decides):
    parquet of site spectra, JSON request, or a measured file (XDI, ... :data:`MEASURED_SUFFIXES`)."""
    suffix = Path(name).suffix.lower()
    if not content:
        raise UploadError("the file is empty")
    path = workdir / _safe_name(name)
    path.write_bytes(content)
    try:
        if suffix == ".json":
            return [MaterialSites.from_request(m) for m in read_json_request(path).materials]
        if suffix in (".parquet", ".pq"):
            return parquet_materials(path)
        if suffix in MEASURED_SUFFIXES:
            m = measured_material([path])
            marks = {el: [(name, edge) for _, edge in sites] for el, sites in (m.measured or {}).items()}
            return [dataclasses.replace(m, material_id=Path(name).stem, measured=marks or None)]
    except BatchInputError as exc:
        message = _clean(str(exc), path, name)
        raise UploadError(message.removeprefix(f"{name}: ")) from None
    known = ("a parquet of site spectra (mp_id, absorbing_element, energy, mu), a JSON request or a measured "
             "spectrum (" + ", ".join(MEASURED_SUFFIXES) + ")")
    raise UploadError(f"cannot read '{suffix or name}' files here: upload {known}")


def combine_uploads(uploads: Sequence[tuple[str, bytes]], formula: str | None, material_id: str | None
                    ) -> tuple[MaterialSites | None, list[dict[str, Any]], str | None, str | None]:
    """One material from several files: (material or None, per-file reports, formula error, error).

    Each file must hold one material; an element may come from one file only; the typed formula wins
    over one carried by a file."""
    reports: list[dict[str, Any]] = []
    spectra: dict[str, list] = {}
    measured: dict[str, list] = {}
    file_formula, ids = None, []
    with tempfile.TemporaryDirectory(prefix="xastopo-ui-") as tmp:
        for name, content in uploads:
            rep: dict[str, Any] = {"name": name, "elements": [], "error": None}
            reports.append(rep)
            try:
                mats = read_spectrum_upload(name, content, Path(tmp))
                if len(mats) != 1:
                    shown = ", ".join(m.material_id for m in mats[:3]) + (", ..." if len(mats) > 3 else "")
                    raise UploadError(f"this file holds {len(mats)} materials ({shown}); upload one material's "
                                      "spectra here, or use the batch form for many")
                m = mats[0]
                if not m.spectra:
                    raise UploadError("the file holds no spectrum")
                for el in m.spectra:
                    owner = next((r["name"] for r in reports if el in r["elements"]), None)
                    if owner is not None:
                        raise UploadError(f"a {el} spectrum was already given by '{owner}': send each element once")
                rep["elements"] = sorted(m.spectra)
                spectra.update({el: list(s) for el, s in m.spectra.items()})
                measured.update(getattr(m, "measured", None) or {})
                rep["kind"] = "measured" if getattr(m, "measured", None) else "computed"
                file_formula = file_formula or m.formula or (",".join(m.elements) if m.elements else None)
                ids.append(m.material_id)
            except UploadError as exc:
                rep["error"] = str(exc)
    formula = (formula or "").strip() or None
    formula_error = None
    if formula is not None:
        try:
            parse_formula(formula)
        except ValueError as exc:
            formula_error = str(exc)
    if any(r["error"] for r in reports) or formula_error:
        return None, reports, formula_error, None
    if not spectra and formula is None:
        return None, reports, None, "upload at least one spectrum file, or type the material's formula"
    mid = (material_id or "").strip() or (ids[0] if ids else "material")
    use_formula = formula if formula is not None else (file_formula if file_formula and "," not in file_formula
                                                       else None)
    elements = tuple(file_formula.split(",")) if use_formula is None and file_formula and "," in file_formula else None
    material = MaterialSites(mid, spectra, formula=use_formula, elements=elements)
    if measured:
        material = dataclasses.replace(material, measured=measured)
    return material, reports, None, None


def place_error(exc: InputError, reports: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(formula error, general error) for an InputError; a spectrum's error goes onto its file's report."""
    field = exc.field
    m = re.match(r"spectra\[([A-Z][a-z]?)\]", field)
    if m:
        el = m.group(1)
        for rep in reports:
            if el in rep["elements"]:
                rep["error"] = exc.message
                return None, None
    if field.startswith("formula") or field.startswith("elements"):
        return exc.message, None
    return None, exc.message


# ------------------------------------------------------------------------------------- the app
def class_means_for(means: dict | None, elements: Sequence[str]) -> dict[str, Any]:
    """The class means (energy, topological, trivial, counts) of the given elements, where known."""
    out: dict[str, Any] = {}
    for el in elements:
        e = ((means or {}).get("elements") or {}).get(el)
        if e:
            out[el] = {"energy": e["energy"],
                       **{c: (e.get(c) or {}).get("mean") for c in ("topological", "trivial")},
                       "n": {c: (e.get(c) or {}).get("n", 0) for c in ("topological", "trivial")}}
    return out


def card_payload(builder: InputBuilder, card: dict | None, means: dict | None, settings: ExplainSettings) -> dict:
    """What the model-card panel shows."""
    meta = builder.metadata
    pre = builder.preprocessor
    return {
        "model_name": builder.name, "model_version": builder.version, "model_kind": builder.kind,
        "threshold": builder.threshold, "test_metrics": meta.get("test_metrics"),
        "dataset_hash": meta.get("dataset_hash"), "mlflow_run_id": meta.get("mlflow_run_id"),
        "reads_composition": builder.reads_composition,
        "windows": {el: {"lo": w.lo, "hi": w.hi, "n_train": w.n_train} for el, w in sorted(pre.elements.items())},
        "card": card, "class_means": means is not None,
        "explain": {"method": settings.method, "top_fraction": settings.top_fraction},
        "measured_suffixes": list(MEASURED_SUFFIXES),
    }


def unavailable_body(exc: Exception) -> tuple[str, int]:
    """(message in words, Retry-After seconds) for a model call that failed: the backend's own
    :class:`BackendUnavailable`, or anything else the model service raised (logged; the page still gets
    an answer it can show, never a bare 500 or a cut stream)."""
    if isinstance(exc, BackendUnavailable):
        return f"the model service cannot answer now: {exc}", exc.retry_after
    logger.error("model service call failed", exc_info=exc)
    return f"the model service failed ({type(exc).__name__}); try again in a moment", 1


def create_app(get_backend: Callable[[], Backend]):
    """The page's Starlette app; ``get_backend()`` returns the running service (called per request),
    whose ``settings`` (``serving:`` of params.yaml) give the upload and progress sizes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    static = resources.files("xastopo.web") / "static"
    cache: dict[str, Any] = {}

    def artifacts(backend: Backend) -> tuple[dict | None, dict | None]:
        key = str(backend.builder.model_dir)
        if key not in cache:
            b = backend.builder
            cache[key] = (load_optional_artifact(b.model_dir, CLASS_MEANS_FILE, b.metadata),
                          load_optional_artifact(b.model_dir, "model_card.json", b.metadata))
        return cache[key]

    async def index(request: Request) -> Response:
        if not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/", status_code=307)
        return Response((static / "index.html").read_bytes(), media_type=STATIC_TYPES[".html"])

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        target = static / name
        suffix = Path(name).suffix
        if "/" in name or suffix not in STATIC_TYPES or not target.is_file():
            return JSONResponse({"error": f"no such file: {name}"}, status_code=404)
        return Response(target.read_bytes(), media_type=STATIC_TYPES[suffix],
                        headers={"cache-control": "no-cache"})

    async def card(request: Request) -> Response:
        backend = get_backend()
        try:
            means, model_card = artifacts(backend)
        except ArtifactError as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        return JSONResponse(card_payload(backend.builder, model_card, means, backend.explain_settings))

    async def form_files(request: Request, key: str, most: int) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
        form = await request.form(max_files=most)
        files, fields = [], {}
        for k, v in form.multi_items():
            if hasattr(v, "read"):
                if k == key and (v.filename or v.size):
                    files.append((v.filename or "upload", await v.read()))
            else:
                fields[k] = str(v)
        return files, fields

    async def analyze(request: Request) -> Response:
        backend = get_backend()
        try:
            uploads, fields = await form_files(request, "files", backend.settings.page_max_files)
        except Exception as exc:  # noqa: BLE001 - a malformed multipart body is the client's
            return JSONResponse({"ok": False, "error": f"could not read the upload ({exc.__class__.__name__})",
                                 "files": []}, status_code=400)
        material, reports, formula_error, error = await asyncio.to_thread(
            combine_uploads, uploads, fields.get("formula"), fields.get("material_id"))
        body: dict[str, Any] = {"ok": False, "files": reports, "formula_error": formula_error, "error": error}
        if material is None:
            return JSONResponse(body, status_code=422)
        builder = backend.builder
        try:
            arrays, notes = await asyncio.to_thread(builder.material_inputs, 0, material)
        except InputError as exc:
            body["formula_error"], body["error"] = place_error(exc, reports)
            return JSONResponse(body, status_code=422)
        try:
            raw = (await backend.model_attributions([arrays]))[0]
        except Exception as exc:  # noqa: BLE001 - the page answers in words, never a bare 500
            body["error"], retry = unavailable_body(exc)
            return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry)})
        if raw is None:
            body["error"] = MODEL_FAILED
            return JSONResponse(body, status_code=422)
        result = Attributions.from_dict(raw)
        pred = builder.prediction(material.material_id, result.probability, arrays[1], arrays[2], result.uncertainty,
                                  notes)
        top = backend.explain_settings.top_fraction
        ex = explanation(builder, pred, arrays, result, top)
        means, _ = artifacts(backend)
        body.update(ok=True, explanation=ex.model_dump(), top_fraction=top,
                    class_means=class_means_for(means, [e.element for e in ex.edges if e.with_spectrum]))
        return JSONResponse(body)

    async def batch(request: Request) -> Response:
        backend = get_backend()
        try:
            uploads, _ = await form_files(request, "file", backend.settings.page_max_files)
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"error": f"could not read the upload ({exc.__class__.__name__})"}, status_code=400)
        if len(uploads) != 1:
            return JSONResponse({"error": "upload one parquet, JSON or CSV file"}, status_code=422)
        name, content = uploads[0]
        suffix = Path(name).suffix.lower()
        if suffix not in BATCH_SUFFIXES:
            return JSONResponse({"error": f"cannot read '{suffix or name}' files here: upload a parquet of site "
                                          "spectra, a JSON request or a CSV material_id,formula"}, status_code=422)
        with tempfile.TemporaryDirectory(prefix="xastopo-ui-") as tmp:
            path = Path(tmp) / _safe_name(name)
            path.write_bytes(content)
            try:
                materials = await asyncio.to_thread(read_materials, path)
            except BatchInputError as exc:
                return JSONResponse({"error": _clean(str(exc), path, name)}, status_code=422)
        return StreamingResponse(batch_events(backend, materials, Path(name).stem),
                                 media_type="application/x-ndjson")

    async def batch_events(backend: Backend, materials: list[MaterialSites], stem: str) -> AsyncIterator[bytes]:
        """NDJSON: start, one progress event per ``serving.page_batch_step`` materials (one model call
        each), done with the CSV; or an error event when the model service stops answering."""
        builder = backend.builder
        total = len(materials)
        rows: list[Any] = [None] * total
        step = backend.settings.page_batch_step
        yield (json.dumps({"event": "start", "total": total}) + "\n").encode()
        for s in range(0, total, step):
            chunk = materials[s:s + step]
            inputs = await asyncio.to_thread(builder.build, chunk)
            for exc in inputs.errors:
                rows[s + exc.index] = invalid_row(chunk[exc.index].material_id, exc)
            if inputs.valid:
                try:
                    res = await backend.model_outputs(inputs.valid_arrays())
                except Exception as exc:  # noqa: BLE001 - end the stream with a line app.js shows
                    message, _ = unavailable_body(exc)
                    yield (json.dumps({"event": "error", "error": f"{message} (stopped after {s} of {total} "
                                                                  "materials)"}) + "\n").encode()
                    return
                failed = {i for i, r in zip(inputs.valid, res, strict=True) if r is None}
                for i in failed:  # an invalid row with the reason, never a label made from a NaN
                    rows[s + i] = invalid_row(chunk[i].material_id, InputError(i, "spectra", MODEL_FAILED))
                ran = [r for r in res if r is not None]
                if ran:
                    kept = dataclasses.replace(inputs, arrays=[None if i in failed else a
                                                               for i, a in enumerate(inputs.arrays)])
                    answers = builder.predictions(kept, [float(r["probability"]) for r in ran],
                                                  [None if r.get("uncertainty") is None else float(r["uncertainty"])
                                                   for r in ran])
                    for i in kept.valid:
                        rows[s + i] = answers[i]
            yield (json.dumps({"event": "progress", "done": min(s + step, total), "total": total}) + "\n").encode()
        with tempfile.TemporaryDirectory(prefix="xastopo-ui-") as tmp:
            out = Path(tmp) / "predictions.csv"
            write_csv(rows, out)
            text = out.read_text()
        n_bad = sum(1 for r in rows if isinstance(r, dict))
        yield (json.dumps({"event": "done", "rows": total, "invalid": n_bad, "csv": text,
                           "filename": f"{stem}_predictions.csv"}) + "\n").encode()

    routes = [Route("/", index), Route("/static/{name}", static_file),
              Route("/api/card", card, methods=["GET", "POST"]), Route("/api/analyze", analyze, methods=["POST"]),
              Route("/api/batch", batch, methods=["POST"])]
    return Starlette(routes=routes)
