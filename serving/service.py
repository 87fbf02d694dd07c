"""BentoML 1.4 service: raw K-edge spectra → P(topological), on the exported ONNX model.

Two services, one process each:

* ``XasTopo`` (public, the one to serve): the ``predict`` and ``metadata`` APIs. Every request is
  checked *before* it can join a batch: an ASGI middleware enforces the bearer token, the body size
  (413) and the request schema (``xastopo.schema``: types, finite numbers, increasing energy, matching
  lengths, known and unique elements, size limits; 400/422), and ``predict`` then runs the model-
  dependent checks of :class:`xastopo.inference.Predictor` (window coverage, elements with statistics;
  422). Errors are JSON naming the material index and the field, e.g.
  ``{"error": "materials[2].spectra[0].energy: ...", "errors": [{"loc": ..., "index": 2, ...}]}``.
* ``XasTopoModel`` (internal, reached through ``bentoml.depends``): a batchable ``infer`` API that
  receives already-validated per-material arrays; BentoML's adaptive batching merges the materials
  of concurrent requests (``serving.max_batch_size`` / ``serving.max_latency_ms`` in params.yaml) into
  one ONNX Runtime call. A malformed item only fails itself, never the rest of a shared batch.

Configuration: ``XASTOPO_MODEL_DIR`` (else ``serving.model_dir`` of params.yaml, relative to that
file), ``XASTOPO_PARAMS`` (else ./params.yaml or the one beside ``serving/``), ``XASTOPO_API_TOKEN``
(optional bearer token), ``XASTOPO_DEVICE`` = auto | cpu (auto: CUDA when a GPU is visible).
A missing, corrupted or checksum-mismatched artifact stops start-up with one line
``xastopo: cannot start: <reason>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
try:  # inside a Bento the package ships as source under src/ (bentofile.yaml includes it)
    import xastopo  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the bento is run
    sys.path.insert(0, str(PROJECT_ROOT / "src"))

import xastopo.schema as schema  # noqa: E402
from xastopo.inference import ArtifactError, InputError, Predictor  # noqa: E402
from xastopo.schema import MaterialIn, Prediction, PredictResponse  # noqa: E402

logger = logging.getLogger("xastopo.serving")
HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
DEFAULTS = {"model_dir": "models/export", "max_materials": 256, "max_points": 5000,
            "max_body_bytes": 20_000_000, "max_batch_size": 64, "max_latency_ms": 1000, "workers": 1}


# --------------------------------------------------------------------------------------- config
def params_path() -> Path | None:
    if os.environ.get("XASTOPO_PARAMS"):
        return Path(os.environ["XASTOPO_PARAMS"]).resolve()
    for cand in (Path.cwd() / "params.yaml", PROJECT_ROOT / "params.yaml"):
        if cand.is_file():
            return cand.resolve()
    return None


def serving_config() -> dict[str, Any]:
    """``serving:`` of params.yaml over the defaults, plus the resolved model directory."""
    cfg = dict(DEFAULTS)
    p = params_path()
    if p is not None and p.is_file():
        cfg.update((yaml.safe_load(p.read_text()) or {}).get("serving") or {})
    base = p.parent if p is not None else PROJECT_ROOT
    if os.environ.get("XASTOPO_MODEL_DIR"):
        cfg["model_dir"] = Path(os.environ["XASTOPO_MODEL_DIR"]).resolve()
    else:
        md = Path(str(cfg["model_dir"]))
        cfg["model_dir"] = md if md.is_absolute() else (base / md).resolve()
    return cfg


CONFIG = serving_config()
# The schema's generic limits come from params.yaml (they are module globals read at validation time).
schema.MAX_MATERIALS = int(CONFIG["max_materials"])
schema.MAX_POINTS = int(CONFIG["max_points"])


def load_predictor(prefer_gpu: bool) -> Predictor:
    """The Predictor, or one clear line and exit(1) for a bad artifact (no traceback spew)."""
    if os.environ.get("XASTOPO_DEVICE", "auto").lower() == "cpu":
        prefer_gpu = False
    try:
        return Predictor(CONFIG["model_dir"], prefer_gpu=prefer_gpu)
    except ArtifactError as exc:
        fail_startup(str(exc))
        raise  # unreachable


def fail_startup(message: str) -> None:
    line = f"xastopo: cannot start: {message}"
    logger.error(line)
    print(line, file=sys.stderr, flush=True)
    # A worker process: exit without unwinding through BentoML's start-up (which would print a
    # traceback); the serve command has already checked the artifact once (see check_artifact).
    sys.stderr.flush()
    os._exit(1)


# ------------------------------------------------------------------------------------- errors
def error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"error": errors[0]["loc"] + ": " + errors[0]["message"] if errors[0]["loc"] else errors[0]["message"],
            "errors": errors}


def error_item(loc: str, message: str, index: int | None = None, field: str | None = None) -> dict[str, Any]:
    return {"loc": loc, "index": index, "field": field, "message": message}


def validation_errors(exc: Any) -> list[dict[str, Any]]:
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


def input_error_item(exc: InputError) -> dict[str, Any]:
    return error_item(f"materials[{exc.index}].{exc.field}", exc.message, exc.index, exc.field)


# --------------------------------------------------------------------------------- middleware
class GateMiddleware:
    """Pure ASGI: bearer token (401), body size (413), content type (415), JSON (400) and the request
    schema (422) of ``predict``, answered before anything reaches BentoML or the batch queue."""

    def __init__(self, app: Any, predict_path: str = "/predict") -> None:
        self.app = app
        self.predict_path = predict_path
        self.max_body = int(CONFIG["max_body_bytes"])

    @staticmethod
    async def _send_json(send: Any, status: int, body: dict[str, Any], extra: list | None = None) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = os.environ.get("XASTOPO_API_TOKEN")
        if token:
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return await self._send_json(send, 401, {"error": "missing or invalid bearer token "
                                                         "(send 'Authorization: Bearer <token>')"},
                                             [(b"www-authenticate", b"Bearer")])
        if scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await self._send_json(send, 413, self._too_large(int(declared)))
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await self._send_json(send, 413, self._too_large(size, at_least=True))
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        if scope["path"] == self.predict_path:
            problem = await self._check_predict(headers, body)
            if problem is not None:
                return await self._send_json(send, *problem)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_large(self, size: int, at_least: bool = False) -> dict[str, Any]:
        what = f"more than {self.max_body}" if at_least else str(size)
        return {"error": f"request body too large: {what} bytes > limit {self.max_body} (serving.max_body_bytes); "
                         "split the materials over several requests"}

    async def _check_predict(self, headers: dict[str, str], body: bytes) -> tuple[int, dict] | None:
        import anyio
        from pydantic import ValidationError

        ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", ""):
            return 415, {"error": f"unsupported content type '{ctype}': send application/json"}
        try:
            data = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return 400, {"error": f"request body is not valid JSON ({exc})"}
        if not isinstance(data, dict):
            return 422, error_body([error_item("", "request body must be a JSON object "
                                                   "{\"materials\": [...]}")])
        try:
            await anyio.to_thread.run_sync(schema.PredictRequest.model_validate, data)
        except ValidationError as exc:
            return 422, error_body(validation_errors(exc))
        except RecursionError:
            return 400, {"error": "request body nested too deeply"}
        return None


# ------------------------------------------------------------------------------------ services
@bentoml.service(name="xastopo-model", workers=1, traffic={"timeout": 120})
class XasTopoModel:
    """Internal: the ONNX session behind adaptive batching (one worker owns the accelerator)."""

    def __init__(self) -> None:
        self.predictor = load_predictor(prefer_gpu=True)
        self.n_points = self.predictor.preprocessor.n_points
        self.batch_sizes: list[int] = []
        logger.info("xastopo model %s v%s on %s", self.predictor.name, self.predictor.version,
                    self.predictor.provider)

    def _item(self, item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(item["x"], dtype=np.float32)
        z = np.asarray(item["z"], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.n_points or z.shape != (x.shape[0],) or x.shape[0] == 0:
            raise ValueError(f"bad item shapes x{x.shape} z{z.shape}")
        if not np.all(np.isfinite(x)) or np.any(z < 1) or np.any(z > 118):
            raise ValueError("bad item values")
        return x, z

    def _run(self, arrays: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        return [float(p) for p in self.predictor.predict_materials(arrays)]

    @bentoml.api(batchable=True, max_batch_size=int(CONFIG["max_batch_size"]),
                 max_latency_ms=int(CONFIG["max_latency_ms"]))
    def infer(self, items: list[dict[str, Any]]) -> list[float]:
        """Validated per-material arrays {x [absorbers, n_points] float32, z [absorbers]} → P(topological);
        NaN for an item that cannot be run (it alone fails, not the batch)."""
        self.batch_sizes.append(len(items))
        del self.batch_sizes[:-1000]
        out = [math.nan] * len(items)
        good: list[int] = []
        arrays: list[tuple[np.ndarray, np.ndarray]] = []
        for i, item in enumerate(items):
            try:
                arrays.append(self._item(item))
                good.append(i)
            except Exception as exc:  # noqa: BLE001 - isolate one malformed item
                logger.warning("batch item %d rejected: %s", i, exc)
        if not good:
            return out
        try:
            probs = self._run(arrays)
        except Exception:  # noqa: BLE001 - fall back to one run per item so only the culprit fails
            logger.exception("batched ONNX run failed; retrying item by item")
            probs = []
            for a in arrays:
                try:
                    probs.append(self._run([a])[0])
                except Exception:  # noqa: BLE001
                    probs.append(math.nan)
        for i, p in zip(good, probs, strict=True):
            out[i] = p
        return out

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        return self.predictor.describe()

    @bentoml.api
    def batch_stats(self) -> dict[str, Any]:
        """Sizes (materials) of the most recent batches this worker ran (observability, tests)."""
        return {"batch_sizes": list(self.batch_sizes)}


@bentoml.service(name="xastopo", workers=int(CONFIG["workers"]), traffic={"timeout": 120})
class XasTopo:
    """Public API: ``POST /predict`` and ``POST /metadata``; health at /healthz /livez /readyz."""

    model = bentoml.depends(XasTopoModel)

    def __init__(self) -> None:
        # Preprocessing only (the dependency runs the model); checks the artifact again in this process.
        self.predictor = load_predictor(prefer_gpu=False)

    @bentoml.on_deployment
    def check_artifact() -> None:
        """Runs once in the `bentoml serve` process before any worker starts."""
        try:
            Predictor(CONFIG["model_dir"], prefer_gpu=False)
        except ArtifactError as exc:
            line = f"xastopo: cannot start: {exc}"
            print(line, file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    async def _model(self, method: str, *args: Any) -> Any:
        """Call the model service; retry a dropped keep-alive connection (a known race between
        BentoML's internal aiohttp client and uvicorn, bentoml/BentoML#4971). The calls are pure."""
        import asyncio

        import aiohttp

        for attempt in range(3):
            try:
                return await getattr(self.model.to_async, method)(*args)
            except aiohttp.ClientConnectionError:
                if attempt == 2:
                    raise
                logger.info("model service connection dropped; retrying %s", method)
                await asyncio.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    def _arrays(self, materials: list[MaterialIn]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[dict]]:
        arrays, errors = [], []
        for i, m in enumerate(materials):
            try:
                arrays.append(self.predictor.material_arrays(i, m))
            except InputError as exc:
                errors.append(input_error_item(exc))
        return arrays, errors

    @bentoml.api(route="/predict")
    async def predict(self, materials: list[MaterialIn]) -> PredictResponse:
        """One prediction per material, in request order. Bad input: 4xx JSON naming
        ``materials[i].<field>``; the material's spectra must cover the element's window."""
        import anyio
        from starlette.responses import JSONResponse

        arrays, errors = await anyio.to_thread.run_sync(self._arrays, materials)
        if errors:
            return JSONResponse(error_body(errors), status_code=422)
        items = [{"x": x, "z": z} for x, z in arrays]
        probs = await self._model("infer", items)
        bad = [i for i, p in enumerate(probs) if not math.isfinite(p)]
        if bad:
            return JSONResponse(error_body([error_item(f"materials[{i}].spectra", "the model could not be run "
                                                       "on this material's spectra", i, "spectra") for i in bad]),
                                status_code=422)
        preds: list[Prediction] = [self.predictor.prediction(m.material_id, p, a[1])
                                   for m, p, a in zip(materials, probs, arrays, strict=True)]
        return PredictResponse(predictions=preds, model_name=self.predictor.name,
                               model_version=self.predictor.version)

    @bentoml.api(route="/metadata")
    async def metadata(self) -> dict[str, Any]:
        """Model card: name, version, MLflow run id, dataset hash, test metrics, preprocessing
        parameters, the execution provider in use, and the serving limits."""
        out = await self._model("describe")
        out["serving"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in CONFIG.items()}
        out["serving"]["auth"] = bool(os.environ.get("XASTOPO_API_TOKEN"))
        return out

    @bentoml.api(route="/batch_stats")
    async def batch_stats(self) -> dict[str, Any]:
        """Sizes of the recent adaptive batches of the model service (observability)."""
        return await self._model("batch_stats")


XasTopo.add_asgi_middleware(GateMiddleware, predict_path="/predict")
