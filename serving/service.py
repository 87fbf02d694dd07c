"""BentoML 1.4 service: raw K-edge spectra → P(topological), on the exported ONNX model.

Two services, one process each, over the two halves of :mod:`xastopo.inference` (the CLI runs the
same halves in one process):

* ``XasTopo`` (public, the one to serve): the ``predict`` and ``metadata`` APIs. Every request is
  checked *before* it can join a batch: an ASGI middleware enforces the bearer token, the body size
  (413) and the request schema (``xastopo.schema``: types, finite numbers, increasing energy, matching
  lengths, known and unique elements, a readable formula, spectra only of the composition's elements,
  size limits; 400/415/422), and ``predict`` then runs request → arrays
  (:meth:`xastopo.inference.InputBuilder.build`: window coverage, elements with statistics or, for a
  model that reads compositions, read by type only; 422) and, with the probabilities and
  uncertainties from the model service, builds the answers
  (:meth:`~xastopo.inference.InputBuilder.predictions`). It loads the preprocessing half only: no
  ONNX session. Errors are JSON naming the material index and the field, e.g.
  ``{"error": "materials[2].spectra[0].energy: ...", "errors": [{"loc": ..., "index": 2, ...}]}``.
* ``XasTopoModel`` (internal, reached through ``bentoml.depends``): the one ONNX session
  (:class:`xastopo.inference.Predictor`) behind a batchable ``infer`` API that receives
  already-validated per-material arrays ``{x, z, has}``; BentoML's adaptive batching merges the
  materials of concurrent requests (``serving.max_batch_size`` / ``serving.max_latency_ms``) into one
  ONNX Runtime call (:meth:`~xastopo.inference.Predictor.outputs`), answering ``{probability,
  uncertainty}`` per item. A malformed item only fails itself, never the rest of a shared batch.

Settings are read when a service starts (``xastopo.config.serving_settings``: ``serving:`` of
params.yaml, found by the one path rule of ``xastopo.config``; ``XASTOPO_MODEL_DIR`` overrides
``serving.model_dir``, which is relative to params.yaml), except the three numbers BentoML's
decorators need at import (see :func:`declared`). ``XASTOPO_API_TOKEN`` (optional bearer token),
``XASTOPO_DEVICE`` = auto | cpu (auto: CUDA when a GPU is visible). A missing, corrupted or
checksum-mismatched artifact, or a bad params.yaml, stops start-up with one line
``xastopo: cannot start: <reason>``.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import bentoml
import numpy as np

from xastopo import config
from xastopo.config import ConfigError, ServingSettings
from xastopo.inference import ArtifactError, InputBuilder, Predictor
from xastopo.schema import MaterialIn, PredictResponse, error_item, error_line, parse_request, request_errors

logger = logging.getLogger("xastopo.serving")
HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
TOKEN_ENV = "XASTOPO_API_TOKEN"
T = TypeVar("T")


# --------------------------------------------------------------------------------- settings
@functools.cache
def declared() -> ServingSettings:
    """The one import-time read of params.yaml.

    BentoML evaluates ``@bentoml.service(workers=...)`` and ``@bentoml.api(max_batch_size=...,
    max_latency_ms=...)`` when this module is imported, so those three numbers are taken here, at class
    definition, from ``serving:`` of params.yaml through the same :func:`xastopo.config.serving_settings`
    that every service reads again when it starts (everything else: limits, model directory, token).
    """
    try:
        return config.serving_settings()
    except ConfigError as exc:
        print(f"xastopo: cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def api_token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


def load_or_exit(load: Callable[[], T]) -> T:
    """``load()``, or one clear line and exit(1) for a bad artifact or parameter (no traceback spew)."""
    try:
        return load()
    except (ArtifactError, ConfigError) as exc:
        line = f"xastopo: cannot start: {exc}"
        logger.error(line)
        print(line, file=sys.stderr, flush=True)
        # A worker process: exit without unwinding through BentoML's start-up (which would print a
        # traceback); the serve command has already checked the artifact once (see check_artifact).
        sys.stderr.flush()
        os._exit(1)


# ------------------------------------------------------------------------------------- errors
def error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"error": error_line(errors[0]), "errors": errors}


# --------------------------------------------------------------------------------- middleware
class GateMiddleware:
    """Pure ASGI: bearer token (401), body size (413), content type (415), JSON (400) and the request
    schema (422) of ``predict``, answered before anything reaches BentoML or the batch queue."""

    def __init__(self, app: Any, predict_path: str = "/predict") -> None:
        self.app = app
        self.predict_path = predict_path
        settings = config.serving_settings()  # built when the worker starts
        self.max_body = settings.max_body_bytes
        self.limits = settings.limits
        self.token = api_token()

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
        if self.token:
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
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
            await anyio.to_thread.run_sync(parse_request, data, self.limits)
        except ValidationError as exc:
            return 422, error_body(request_errors(exc))
        except RecursionError:
            return 400, {"error": "request body nested too deeply"}
        return None


# ------------------------------------------------------------------------------------ services
@bentoml.service(name="xastopo-model", workers=1, traffic={"timeout": 120})
class XasTopoModel:
    """Internal: the ONNX session behind adaptive batching (one worker owns the accelerator)."""

    def __init__(self) -> None:
        model_dir = load_or_exit(lambda: config.serving_settings().model_dir)
        prefer_gpu = os.environ.get("XASTOPO_DEVICE", "auto").lower() != "cpu"
        self.predictor = load_or_exit(lambda: Predictor(model_dir, prefer_gpu=prefer_gpu))
        self.n_points = self.predictor.preprocessor.n_points
        self.batch_sizes: list[int] = []
        logger.info("xastopo model %s v%s on %s", self.predictor.name, self.predictor.version,
                    self.predictor.provider)

    def _item(self, item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(item["x"], dtype=np.float32)
        z = np.asarray(item["z"], dtype=np.int64)
        has = np.asarray(item["has"] if item.get("has") is not None else np.ones(len(z)), dtype=np.float32)
        if (x.ndim != 2 or x.shape[1] != self.n_points or z.shape != (x.shape[0],) or has.shape != z.shape
                or x.shape[0] == 0):
            raise ValueError(f"bad item shapes x{x.shape} z{z.shape} has{has.shape}")
        if not np.all(np.isfinite(x)) or np.any(z < 1) or np.any(z > 118) or not np.all((has == 0) | (has == 1)):
            raise ValueError("bad item values")
        return x, z, has

    def _run(self, arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[dict[str, float | None]]:
        probs, unc = self.predictor.outputs(arrays)
        return [{"probability": float(p), "uncertainty": None if unc is None else float(unc[k])}
                for k, p in enumerate(probs)]

    @bentoml.api(batchable=True, max_batch_size=declared().max_batch_size,
                 max_latency_ms=declared().max_latency_ms)
    def infer(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated per-material arrays {x [absorbers, n_points] float32, z [absorbers], has [absorbers]
        (1: the row is the absorber's spectrum, 0: by type only; all ones when absent)} →
        {probability: P(topological), uncertainty: float or None (a model without one)}; probability
        NaN for an item that cannot be run (it alone fails, not the batch)."""
        self.batch_sizes.append(len(items))
        del self.batch_sizes[:-1000]
        failed = {"probability": math.nan, "uncertainty": None}
        out: list[dict[str, Any]] = [dict(failed) for _ in items]
        good: list[int] = []
        arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i, item in enumerate(items):
            try:
                arrays.append(self._item(item))
                good.append(i)
            except Exception as exc:  # noqa: BLE001 - isolate one malformed item
                logger.warning("batch item %d rejected: %s", i, exc)
        if not good:
            return out
        try:
            results = self._run(arrays)
        except Exception:  # noqa: BLE001 - fall back to one run per item so only the culprit fails
            logger.exception("batched ONNX run failed; retrying item by item")
            results = []
            for a in arrays:
                try:
                    results.append(self._run([a])[0])
                except Exception:  # noqa: BLE001
                    results.append(dict(failed))
        for i, r in zip(good, results, strict=True):
            out[i] = r
        return out

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        return self.predictor.describe()

    @bentoml.api
    def batch_stats(self) -> dict[str, Any]:
        """Sizes (materials) of the most recent batches this worker ran (observability, tests)."""
        return {"batch_sizes": list(self.batch_sizes)}


@bentoml.service(name="xastopo", workers=declared().workers, traffic={"timeout": 120})
class XasTopo:
    """Public API: ``POST /predict`` and ``POST /metadata``; health at /healthz /livez /readyz."""

    model = bentoml.depends(XasTopoModel)

    def __init__(self) -> None:
        # Preprocessing only (the dependency owns the one ONNX session); checks the artifact again here.
        self.settings = load_or_exit(config.serving_settings)
        self.builder = load_or_exit(lambda: InputBuilder(self.settings.model_dir))

    @bentoml.on_deployment
    def check_artifact() -> None:
        """Runs once in the `bentoml serve` process before any worker starts: the whole artifact,
        ONNX graph included, must load (a session opened and dropped here, in no serving process)."""
        try:
            Predictor(config.serving_settings().model_dir, prefer_gpu=False)
        except (ArtifactError, ConfigError) as exc:
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

    @bentoml.api(route="/predict")
    async def predict(self, materials: list[MaterialIn]) -> PredictResponse:
        """One prediction per material, in request order. Bad input: 4xx JSON naming
        ``materials[i].<field>``; the material's spectra must cover the element's window. A material is
        its spectra and, optionally, its ``formula`` or ``elements`` (a model that reads compositions
        answers from the composition alone too)."""
        import anyio
        from starlette.responses import JSONResponse

        inputs = await anyio.to_thread.run_sync(self.builder.build, materials)
        if inputs.errors:
            return JSONResponse(error_body([e.item() for e in inputs.errors]), status_code=422)
        results = await self._model("infer", [{"x": x, "z": z, "has": has} for x, z, has in inputs.valid_arrays()])
        probs = [float(r["probability"]) for r in results]
        bad = [i for i, p in zip(inputs.valid, probs, strict=True) if not math.isfinite(p)]
        if bad:
            return JSONResponse(error_body([error_item(f"materials[{i}].spectra", "the model could not be run "
                                                       "on this material's spectra", i, "spectra") for i in bad]),
                                status_code=422)
        unc = [None if r.get("uncertainty") is None else float(r["uncertainty"]) for r in results]
        return PredictResponse(predictions=self.builder.predictions(inputs, probs, unc), model_name=self.builder.name,
                               model_version=self.builder.version)

    @bentoml.api(route="/metadata")
    async def metadata(self) -> dict[str, Any]:
        """Model card: name, version, MLflow run id, dataset hash, test metrics, preprocessing
        parameters, the execution provider in use, and the serving limits."""
        out = await self._model("describe")
        out["serving"] = {**self.settings.to_dict(), "auth": bool(api_token())}
        return out

    @bentoml.api(route="/batch_stats")
    async def batch_stats(self) -> dict[str, Any]:
        """Sizes of the recent adaptive batches of the model service (observability)."""
        return await self._model("batch_stats")


XasTopo.add_asgi_middleware(GateMiddleware, predict_path="/predict")
