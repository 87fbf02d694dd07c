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
  uncertainty}`` per item. A malformed item only fails itself, never the rest of a shared batch. A request of
  ``serving.max_batch_size`` materials or more is a batch on its own and goes to ``infer_whole`` (the same
  code, past the batch queue, where BentoML's batcher held it back waiting for run-mates).

Settings are read when a service starts (``xastopo.config.serving_settings``: ``serving:`` of
params.yaml, found by the one path rule of ``xastopo.config``; ``XASTOPO_MODEL_DIR`` overrides
``serving.model_dir``, which is relative to params.yaml), except the four values BentoML's
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
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import bentoml
import numpy as np

from xastopo import config
from xastopo.config import ConfigError, ServingSettings
from xastopo.explain import Attributions, Explainer, ExplainSettings, explanations
from xastopo.inference import ArtifactError, InputBuilder, Predictor
from xastopo.schema import (
    DEPTH_CHUNK,
    ExplainResponse,
    MaterialIn,
    PredictRequest,
    PredictResponse,
    RequestBodyError,
    error_item,
    error_line,
    json_depth,
    parse_request_json,
    request_errors,
)
from xastopo.web.app import MODEL_FAILED, BackendUnavailable, create_app

logger = logging.getLogger("xastopo.serving")
HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
EXPLAIN_PATH = "/explain"  # validated by the gate like /predict (same request schema)
UI_PATH = "/ui"  # the web page (xastopo.web): its shell is public, its /ui/api calls need the token
RETRY_AFTER = b"1"  # seconds, on 503/429: a shed request is worth retrying at once (the queue drains in ms)
TOKEN_ENV = "XASTOPO_API_TOKEN"
T = TypeVar("T")


# --------------------------------------------------------------------------------- settings
@functools.cache
def declared() -> ServingSettings:
    """The one import-time read of params.yaml.

    BentoML evaluates ``@bentoml.service(workers=...)`` and ``@bentoml.api(batchable=..., max_batch_size=...,
    max_latency_ms=...)`` when this module is imported, so those four values are taken here, at class
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


def page_shell(scope: dict) -> bool:
    """A GET of the web page's shell (``/ui``, ``/ui/``, ``/ui/static/*``): no data in it, so it is
    public like the health paths; the page then sends the bearer token with every ``/ui/api`` call."""
    path = scope.get("path", "")
    return scope.get("method") in ("GET", "HEAD") and (path in (UI_PATH, UI_PATH + "/")
                                                       or path.startswith(UI_PATH + "/static/"))


# ------------------------------------------------------------------------------ hostile input
# json_depth / DEPTH_CHUNK: the one implementation is in xastopo.schema (the CLI and the page use it too)


def bound_graceful_shutdown(seconds: int) -> None:
    """Give this worker's uvicorn server a graceful-shutdown timeout when none was set.

    Why: BentoML starts uvicorn with ``timeout_graceful_shutdown=None`` unless ``bentoml serve`` gets the
    hidden ``--timeout-graceful-shutdown`` flag, and its process manager waits a day for workers, so one
    request that never completes (a stuck client, a trickled body) kept the service alive after SIGTERM.
    Called from each service's ``__init__``, which runs in the worker's main thread after uvicorn installed
    its SIGTERM handler (a bound method of the ``uvicorn.Server``): after ``seconds`` uvicorn cancels what
    is still in flight and exits. An explicit flag wins; anything unexpected leaves uvicorn as it is."""
    import signal

    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    cfg = getattr(server, "config", None)
    if cfg is not None and hasattr(cfg, "timeout_graceful_shutdown") and cfg.timeout_graceful_shutdown is None:
        cfg.timeout_graceful_shutdown = seconds
        logger.info("graceful shutdown bounded to %d s (serving.shutdown_grace_s)", seconds)


def freeze_startup_heap() -> None:
    """Collect once, then take everything alive after start-up (modules, BentoML, the loaded artifact) out of
    the garbage collector's sight (``gc.freeze``); what requests allocate is still collected.

    Why: a worker holds well over 100,000 tracked objects once started, and every full (generation-2)
    collection walked all of them (~25 ms on these cores), landing on whichever request was running: at 8
    single-material clients the p99 latency was 73 ms, 29 ms with the start-up heap frozen (and 10 % less CPU
    per 64-material request). Called at the end of each service's start-up."""
    import gc

    gc.collect()
    gc.freeze()


def release_request_timers() -> None:
    """Make BentoML's per-request timeout release its timer when the request ends.

    Why: ``bentoml._internal.server.http.traffic.TimeoutMiddleware`` (BentoML 1.4.40, unchanged upstream
    in April 2026) schedules ``loop.call_later(traffic.timeout, ...)`` for every request and never cancels
    it. The timer holds the request's future and its contextvars (with its OpenTelemetry span) until it
    fires, so every worker kept ~5-13 KB per request for ``traffic.timeout`` seconds (120 s here): found
    in the 10-minute soak (RSS +73 %), counted as one live ``TimerHandle``/``_Span``/``Future`` per
    request answered, /readyz included. This replaces its ``__call__`` with the same logic plus
    ``handle.cancel()`` when the request is done (a cancelled timer is dropped by asyncio). Idempotent;
    runs at import in every worker process (both services import this module)."""
    import asyncio

    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from starlette.responses import JSONResponse

    if getattr(TimeoutMiddleware, "_xastopo_releases_timer", False):
        return

    async def __call__(self: Any, scope: dict, receive: Any, send: Any) -> None:  # noqa: N807
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        handle = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: dict) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                    status_code=504)
                await resp(scope, receive, send)
        else:
            await fut
        finally:
            handle.cancel()

    TimeoutMiddleware.__call__ = __call__
    TimeoutMiddleware._xastopo_releases_timer = True


release_request_timers()


def cache_media_types() -> None:
    """Compute each BentoML IO model's media type once, not per response.

    Why: ``_bentoml_sdk.io_models.IOMixin.mime_type`` builds the model's whole JSON schema on every call for a
    root model (the model service's ``infer`` answers ``list[dict]``), and BentoML calls it for every
    response: 13 % of the model worker's CPU at 8 concurrent single-material clients (py-spy). A class's
    schema never changes while serving, so the answer is cached per class. Idempotent; runs at import."""
    import functools

    from _bentoml_sdk.io_models import IOMixin

    if getattr(IOMixin, "_xastopo_cached_mime_type", False):
        return
    compute = IOMixin.mime_type.__func__

    @functools.cache
    def cached(cls: type) -> str:
        return compute(cls)

    IOMixin.mime_type = classmethod(cached)
    IOMixin._xastopo_cached_mime_type = True


cache_media_types()


# --------------------------------------------------------------------------------- middleware
class GateMiddleware:
    """Pure ASGI: bearer token (401), body size (413), a body not received within
    ``serving.body_timeout_s`` (408), content type (415), nesting deeper than ``serving.max_json_depth``
    and JSON (400) and the request schema (422) of ``predict``, answered before anything reaches BentoML
    or the batch queue. An unexpected error while checking a body is a 400 (logged), never a hang. A valid
    body goes on as the parsed request (:func:`gated`), not to be parsed again."""

    def __init__(self, app: Any, predict_path: str = "/predict") -> None:
        self.app = app
        self.predict_path = predict_path
        self.schema_paths = frozenset({predict_path, EXPLAIN_PATH})
        settings = config.serving_settings()  # built when the worker starts
        self.max_body = settings.max_body_bytes
        self.limits = settings.limits
        self.max_depth = settings.max_json_depth
        self.body_timeout = settings.body_timeout_s
        self.token = api_token()

    @staticmethod
    async def _send_json(send: Any, status: int, body: dict[str, Any], extra: list | None = None) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS or page_shell(scope):
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
        import anyio

        chunks, size, more, too_large = [], 0, True, False
        with anyio.move_on_after(self.body_timeout) as reading:
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    too_large = True  # answered below, outside the timeout: a slow 413 send is never cut by a 408
                    break
                chunks.append(chunk)
                more = msg.get("more_body", False)
        if too_large:
            return await self._send_json(send, 413, self._too_large(size, at_least=True))
        if reading.cancelled_caught:
            return await self._send_json(send, 408, {"error": f"request body not received within {self.body_timeout} s "
                                                     f"({size} bytes arrived; serving.body_timeout_s)"},
                                         [(b"connection", b"close")])
        body = b"".join(chunks)
        if scope["path"] in self.schema_paths:
            try:
                checked = await self._check_predict(headers, body)
            except Exception as exc:  # noqa: BLE001 - a body we cannot check is refused, never left hanging
                logger.exception("request body could not be checked")
                checked = 400, {"error": f"request body could not be read ({type(exc).__name__})"}
            if not isinstance(checked, PredictRequest):
                return await self._send_json(send, *checked)
            # Hand the validated request to the API (:func:`gated`) and give BentoML a stub body to parse: the
            # body is parsed once, here (BentoML's second parse and validation cost ~3 ms per 64 materials).
            scope.setdefault("state", {})[GATED_REQUEST] = checked
            body = GATED_STUB
            scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
            scope["headers"].append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_retry_after(message: dict) -> None:
            """A 503 (the batcher shedding load it cannot serve within ``max_latency_ms``) or 429 tells the
            client when to retry."""
            if message["type"] == "http.response.start" and message["status"] in (429, 503):
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"retry-after" for k, _ in headers):
                    message = {**message, "headers": [*headers, (b"retry-after", RETRY_AFTER)]}
            await send(message)

        return await self.app(scope, replay, send_retry_after)

    def _too_large(self, size: int, at_least: bool = False) -> dict[str, Any]:
        what = f"more than {self.max_body}" if at_least else str(size)
        return {"error": f"request body too large: {what} bytes > limit {self.max_body} (serving.max_body_bytes); "
                         "split the materials over several requests"}

    async def _check_predict(self, headers: dict[str, str], body: bytes) -> tuple[int, dict] | PredictRequest:
        """The validated request, or the error answer (status, body) for it."""
        import anyio
        from pydantic import ValidationError

        ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", ""):
            return 415, {"error": f"unsupported content type '{ctype}': send application/json"}
        depth = (json_depth(body, self.max_depth) if len(body) < DEPTH_CHUNK
                 else await anyio.to_thread.run_sync(json_depth, body, self.max_depth))
        if depth > self.max_depth:
            return 400, {"error": f"request body nested more than {self.max_depth} levels deep "
                                  "(serving.max_json_depth; a request needs 6)"}
        try:
            return await anyio.to_thread.run_sync(parse_request_json, body or b"null", self.limits)
        except RequestBodyError as exc:
            if exc.kind == "json":
                return 400, {"error": f"request body is {exc}"}
            return 422, error_body([error_item("", f"request body {exc}")])
        except ValidationError as exc:
            return 422, error_body(request_errors(exc))
        except RecursionError:
            return 400, {"error": "request body nested too deeply"}


#: where the gate leaves the request it validated (``scope["state"]``, Starlette's ``request.state``), and the
#: body BentoML gets instead (it must still parse as the API's input: no materials)
GATED_REQUEST = "xastopo_request"
GATED_STUB = b'{"materials": []}'


def error_response(response: Any, ctx: bentoml.Context) -> Any:
    """An error answer of an API that takes ``ctx``: BentoML sets the answer's status from ``ctx.response``
    (200 unless set), so the status goes there too."""
    ctx.response.status_code = response.status_code
    return response


def gated(materials: list[MaterialIn], ctx: bentoml.Context) -> list[MaterialIn]:
    """The materials of the request: those the gate validated (BentoML then parsed only the stub), else the
    ones BentoML parsed (a call that did not pass the gate, e.g. in-process)."""
    try:
        state = ctx.request.scope.get("state") or {}
    except LookupError:  # not in an HTTP request
        return materials
    parsed = state.get(GATED_REQUEST)
    return parsed.materials if parsed is not None and not materials else materials


# ------------------------------------------------------------------------------------ services
class ModelUnavailable(bentoml.exceptions.ServiceUnavailable, BackendUnavailable):
    """The model service cannot answer now (unreachable after retries, shedding load, or running another
    artifact than this worker's preprocessing): 503 with Retry-After ``retry_after`` seconds from
    /predict, /explain and the page (which catches it as :class:`xastopo.web.app.BackendUnavailable`);
    an API that lets it through gets BentoML's 503, to which the gate adds Retry-After."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        bentoml.exceptions.ServiceUnavailable.__init__(self, message)
        self.retry_after = retry_after


def unavailable(exc: ModelUnavailable) -> Any:
    """The 503 JSON answer of a :class:`ModelUnavailable`."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})


def model_failed(indices: Sequence[int]) -> Any:
    """The 422 JSON answer naming each material the model gave no finite probability for."""
    from starlette.responses import JSONResponse

    return JSONResponse(error_body([error_item(f"materials[{i}].spectra", MODEL_FAILED, i, "spectra")
                                    for i in indices]), status_code=422)


def wire_item(x: np.ndarray, z: np.ndarray, has: np.ndarray) -> dict[str, bytes]:
    """One material's validated arrays as the entry worker sends them to the model service: raw bytes
    (float32 ``x`` [absorbers, n_points], int64 ``z``, float32 ``has``; ``XasTopoModel._item`` reads them back).

    Why bytes: BentoML pickles a call with protocol 5 and sends every numpy array as its own out-of-band
    buffer, written to the socket one by one: a 64-material call was 193 chunks, and pickling plus writing
    them was ~15 % of the entry worker's time per request (py-spy); bytes travel inside the one pickle."""
    return {"x": np.ascontiguousarray(x, dtype=np.float32).tobytes(),
            "z": np.ascontiguousarray(z, dtype=np.int64).tobytes(),
            "has": np.ascontiguousarray(has, dtype=np.float32).tobytes()}


# BentoML's client to a dependency (``_bentoml_impl.client.proxy2.SessionManager``, 1.4.40 and upstream in April
# 2026) replaces its aiohttp session every ``runner_connection.max_requests`` (default 100) calls or ``max_age``
# (300 s) and *closes the old one at once*, under the calls still in flight on it: in the soak those calls hung
# until the client gave up (read timeouts) or failed with ``RuntimeError: Connector is closed`` (the 500s). On
# loopback to one model worker a refresh buys nothing (no DNS, no balancing), so it is pushed out of reach; a
# model worker that restarts is still reconnected (aiohttp opens a new connection for a refused one).
NEVER_REFRESH = {"max_requests": 2**31 - 1, "max_age": 10.0**9}


@bentoml.service(name="xastopo-model", workers=1, traffic={"timeout": 120}, runner_connection=NEVER_REFRESH)
class XasTopoModel:
    """Internal: the ONNX session behind adaptive batching (one worker owns the accelerator).

    Threads: BentoML 1.4 runs a worker's sync APIs through one limiter of ``threads`` slots (default 1),
    so a sync ``explain`` (about 100 ONNX runs per edge, seconds) held the only slot and the batched
    ``infer`` behind it waited until the batcher shed /predict with 503. ``explain`` is therefore async
    and runs on threads of its own limiter (``serving.explain_concurrency`` at once; ONNX Runtime's
    ``run`` is thread-safe): an explanation in flight never delays ``infer``'s slot."""

    def __init__(self) -> None:
        bound_graceful_shutdown(load_or_exit(config.serving_settings).shutdown_grace_s)
        model_dir = load_or_exit(lambda: config.serving_settings().model_dir)
        prefer_gpu = os.environ.get("XASTOPO_DEVICE", "auto").lower() != "cpu"
        self.predictor = load_or_exit(lambda: Predictor(model_dir, prefer_gpu=prefer_gpu))
        self.explainer = load_or_exit(lambda: Explainer(self.predictor, ExplainSettings.from_params(
            config.load_params())))
        self.n_points = self.predictor.preprocessor.n_points
        self.sha = str(self.predictor.metadata["onnx_sha256"])  # which artifact answered (XasTopo.model_results)
        self.explain_concurrency = load_or_exit(config.serving_settings).explain_concurrency
        self._explain_limiter: Any = None  # an anyio.CapacityLimiter, made in the event loop on first use
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # materials per call of the batched infer (recent ones)
        self.whole_sizes: deque[int] = deque(maxlen=1000)  # materials per call of infer_whole (recent ones)
        self.explaining = 0  # explanations running now (batch_stats: observability, tests)
        self._explaining_lock = threading.Lock()
        freeze_startup_heap()
        logger.info("xastopo model %s v%s on %s", self.predictor.name, self.predictor.version,
                    self.predictor.provider)

    def _item(self, item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """An item's checked arrays: as :func:`wire_item` sends them (bytes), or as arrays or lists."""
        x, z, has = item["x"], item["z"], item.get("has")
        if isinstance(x, bytes) and isinstance(z, bytes):
            x = np.frombuffer(x, dtype=np.float32).reshape(-1, self.n_points)  # a wrong size: ValueError
            z = np.frombuffer(z, dtype=np.int64)
            has = np.frombuffer(has, dtype=np.float32) if isinstance(has, bytes) else has
        x = np.asarray(x, dtype=np.float32)
        z = np.asarray(z, dtype=np.int64)
        has = np.asarray(has if has is not None else np.ones(len(z)), dtype=np.float32)
        if (x.ndim != 2 or x.shape[1] != self.n_points or z.shape != (x.shape[0],) or has.shape != z.shape
                or x.shape[0] == 0):
            raise ValueError(f"bad item shapes x{x.shape} z{z.shape} has{has.shape}")
        if not np.isfinite(x).all() or (z < 1).any() or (z > 118).any() or not ((has == 0) | (has == 1)).all():
            raise ValueError("bad item values")
        return x, z, has

    def _run(self, arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[dict[str, float | None]]:
        probs, unc = self.predictor.outputs(arrays)
        return [{"probability": float(p), "uncertainty": None if unc is None else float(unc[k]), "model": self.sha}
                for k, p in enumerate(probs)]

    @bentoml.api(batchable=declared().adaptive_batching, max_batch_size=declared().max_batch_size,
                 max_latency_ms=declared().max_latency_ms)
    def infer(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validated per-material arrays {x [absorbers, n_points] float32, z [absorbers], has [absorbers]
        (1: the row is the absorber's spectrum, 0: by type only; all ones when absent)} →
        {probability: P(topological), uncertainty: float or None (a model without one)}; probability
        NaN for an item that cannot be run (it alone fails, not the batch)."""
        self.batch_sizes.append(len(items))
        return self._infer(items)

    @bentoml.api
    def infer_whole(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``infer`` without the batch queue, for a request of ``serving.max_batch_size`` materials or more (a
        batch on its own). Why: BentoML's batcher counts queued *calls*, not materials, so it held a lone
        64-material call back for run-mates (about its learned average wait): at one client, p50 38-43 ms against
        10 ms unbatched (benchmarks/service_load.py)."""
        self.whole_sizes.append(len(items))
        return self._infer(items)

    def _infer(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The one implementation of ``infer`` and ``infer_whole``."""
        failed = {"probability": math.nan, "uncertainty": None, "model": self.sha}
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
    async def explain(self, items: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Validated per-material arrays (as ``infer``) → :meth:`xastopo.explain.Attributions.to_dict`
        each (per-energy attributions through this worker's ONNX session) with the artifact's checksum
        as ``model``; None for an item that cannot be run. Not batched: one material is already ~100
        model runs per edge in one call. Async, on threads of its own limiter (see the class): BentoML's
        one sync slot stays free for ``infer``."""
        import anyio

        if self._explain_limiter is None:
            self._explain_limiter = anyio.CapacityLimiter(self.explain_concurrency)
        return await anyio.to_thread.run_sync(self._explain, items, limiter=self._explain_limiter)

    def _explain(self, items: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        with self._explaining_lock:
            self.explaining += 1
        out: list[dict[str, Any] | None] = []
        try:
            for i, item in enumerate(items):
                try:
                    out.append({**self.explainer.attribute(self._item(item)).to_dict(), "model": self.sha})
                except Exception as exc:  # noqa: BLE001 - one bad item fails alone
                    logger.warning("explain item %d rejected: %s", i, exc)
                    out.append(None)
        finally:
            with self._explaining_lock:
                self.explaining -= 1
        return out

    @bentoml.api
    async def batch_stats(self) -> dict[str, Any]:
        """Sizes (materials) of the most recent batches this worker ran (``batch_sizes``: through the batch
        queue; ``whole_sizes``: requests that were a batch on their own), and how many explanations are running
        now (observability, tests). Async: answered on the event loop, never queued behind an API's thread."""
        return {"batch_sizes": list(self.batch_sizes), "whole_sizes": list(self.whole_sizes),
                "explaining": self.explaining}


@bentoml.service(name="xastopo", workers=declared().workers, traffic={"timeout": 120})
@bentoml.asgi_app(create_app(bentoml.get_current_service), path=UI_PATH)
class XasTopo:
    """Public API: ``POST /predict``, ``POST /explain`` and ``POST /metadata``; the web page at /ui
    (:mod:`xastopo.web`); health at /healthz /livez /readyz."""

    model = bentoml.depends(XasTopoModel)

    def __init__(self) -> None:
        # Preprocessing only (the dependency owns the one ONNX session); checks the artifact again here.
        self.settings = load_or_exit(config.serving_settings)
        self.builder = load_or_exit(lambda: InputBuilder(self.settings.model_dir))
        self.explain_settings = load_or_exit(lambda: ExplainSettings.from_params(config.load_params()))
        bound_graceful_shutdown(self.settings.shutdown_grace_s)
        self.warm = False

    @bentoml.on_startup
    async def start_warm_up(self) -> None:
        """Start :meth:`warm_up` in the background (the model service may not be up yet)."""
        import asyncio

        self._warm_task = asyncio.get_running_loop().create_task(self.warm_up())

    async def warm_up(self) -> None:
        """Run ``serving.warmup_requests`` model calls, then a few concurrent ones, before /readyz says
        ready. Why: BentoML's adaptive batcher learns its latency model from its first ~11 calls and, while
        it learns, sheds queued requests older than ``max_latency_ms`` with 503; a burst sent right after
        /readyz said ready used to get 503s. The calls are one material of zeros (the model's cost does not
        depend on the values); a failed call (the model service still starting) is retried."""
        import asyncio

        item = wire_item(np.zeros((1, self.builder.preprocessor.n_points), dtype=np.float32),
                         np.asarray([29], dtype=np.int64), np.ones(1, dtype=np.float32))
        done, failures = 0, 0
        while done < self.settings.warmup_requests:
            try:
                await self.model.to_async.infer([item])
                done += 1
            except Exception as exc:  # noqa: BLE001 - not up yet: retry, say so now and then
                failures += 1
                if failures % 50 == 1:
                    logger.info("warm-up: model service not answering yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.1)
        for size in (2, 4, 8):  # batches larger than one for the latency fit
            await asyncio.gather(*(self.model.to_async.infer([item]) for _ in range(size)), return_exceptions=True)
        freeze_startup_heap()
        self.warm = True
        logger.info("warm-up done (%d model calls): ready", done + 14)

    async def __is_ready__(self) -> bool:
        """/readyz: ready once the warm-up has run (BentoML also checks the model service)."""
        return self.warm

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

        for attempt in range(5):
            try:
                return await getattr(self.model.to_async, method)(*args)
            except ModelUnavailable:
                raise
            except bentoml.exceptions.ServiceUnavailable as exc:  # the model worker's batcher shed the call
                raise ModelUnavailable(f"model service busy ({exc}); retry") from exc
            except aiohttp.ClientConnectionError as exc:
                # Under heavy concurrency (128 clients) the drop recurs; a worker restart refuses
                # connections for seconds: after the retries it is an overload answer (503), not a 500.
                if attempt == 4:
                    raise ModelUnavailable(f"model service unavailable ({type(exc).__name__}); retry") from exc
                logger.info("model service connection dropped; retrying %s", method)
                await asyncio.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")

    @bentoml.api(route="/predict")
    async def predict(self, materials: list[MaterialIn], ctx: bentoml.Context) -> PredictResponse:
        """One prediction per material, in request order. Bad input: 4xx JSON naming
        ``materials[i].<field>``; the material's spectra must cover the element's window. A material is
        its spectra and, optionally, its ``formula`` or ``elements`` (a model that reads compositions
        answers from the composition alone too)."""
        answered = await self.checked_results("infer", gated(materials, ctx))
        if not isinstance(answered, tuple):
            return error_response(answered, ctx)
        inputs, results = answered
        probs = [float(r["probability"]) for r in results]
        unc = [None if r.get("uncertainty") is None else float(r["uncertainty"]) for r in results]
        return PredictResponse(predictions=self.builder.predictions(inputs, probs, unc), model_name=self.builder.name,
                               model_version=self.builder.version)

    async def checked_results(self, method: str, materials: list[MaterialIn]) -> Any:
        """The one request → model-answer path of ``/predict`` and ``/explain``: the model-dependent checks and
        arrays (``InputBuilder.build``, off the event loop), the model service's ``method`` on them
        (:meth:`model_results`), then ``(inputs, results)`` with every result finite; or the error answer to
        return as it is: 422 naming the materials that failed a check or got no finite answer, 503 +
        Retry-After when the model service cannot answer."""
        import anyio
        from starlette.responses import JSONResponse

        inputs = await anyio.to_thread.run_sync(self.builder.build, materials)
        if inputs.errors:
            return JSONResponse(error_body([e.item() for e in inputs.errors]), status_code=422)
        try:
            results = await self.model_results(method, inputs.valid_arrays())
        except ModelUnavailable as exc:
            return unavailable(exc)
        bad = [i for i, r in zip(inputs.valid, results, strict=True) if r is None]
        if bad:
            return model_failed(bad)
        return inputs, results

    async def model_results(self, method: str, arrays: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
                            ) -> list[dict[str, Any] | None]:
        """The one checked path from the model service to an answer (``/predict``, ``/explain`` and the
        page): the model service's ``method`` ("infer" or "explain"; "infer" of ``serving.max_batch_size``
        materials or more goes to ``infer_whole``, past the batch queue) on validated arrays → per material
        its result, or None where the model gave no finite probability (the caller answers 4xx naming
        that material, or the page's batch writes it as an invalid row).

        Raises :class:`ModelUnavailable` (503 + Retry-After) when the model service cannot be reached or
        answers from another artifact than this worker's: the model worker reloads the artifact if it
        restarts (killed, crashed), and when the artifact was replaced meanwhile its probabilities would
        come from another model than this worker's preprocessing, threshold and version."""
        if method == "infer" and len(arrays) >= self.settings.max_batch_size:
            method = "infer_whole"  # a batch on its own: straight to the model, not through the batch queue
        raw = await self._model(method, [wire_item(x, z, has) for x, z, has in arrays])
        mine = str(self.builder.metadata["onnx_sha256"])
        if any(r is not None and r.get("model") != mine for r in raw):
            logger.error("model service runs another artifact than this worker loaded: restart the service")
            raise ModelUnavailable("the model artifact changed while serving; the service must be restarted to "
                                   "serve the new model", retry_after=5)
        out: list[dict[str, Any] | None] = []
        for r in raw:
            try:
                finite = r is not None and math.isfinite(float(r["probability"]))
            except (KeyError, TypeError, ValueError):
                finite = False
            out.append({k: v for k, v in r.items() if k != "model"} if finite else None)
        return out

    async def model_outputs(self, arrays: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
                            ) -> list[dict[str, Any] | None]:
        """{probability, uncertainty} (or None) of validated arrays through the batched ``infer``."""
        return await self.model_results("infer", arrays)

    async def model_attributions(self, arrays: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
                                 ) -> list[dict[str, Any] | None]:
        """Attributions (or None) of validated arrays through the model service's ``explain``."""
        return await self.model_results("explain", arrays)

    @bentoml.api(route="/explain")
    async def explain(self, materials: list[MaterialIn], ctx: bentoml.Context) -> ExplainResponse:
        """Per-energy attributions of each material's prediction (``xastopo.explain``; method and
        settings in ``explain:`` of params.yaml), with the prediction itself. Same request, validation
        and errors as ``/predict``; at most ``explain.max_materials`` materials per request (422)."""
        from starlette.responses import JSONResponse

        materials = gated(materials, ctx)
        most = self.explain_settings.max_materials
        if len(materials) > most:
            message = (f"too many materials for /explain ({len(materials)} > {most}, explain.max_materials): "
                       "each costs about 100 model runs per edge; split the request")
            return error_response(JSONResponse(error_body([error_item("materials", message)]), status_code=422), ctx)
        answered = await self.checked_results("explain", materials)
        if not isinstance(answered, tuple):
            return error_response(answered, ctx)
        inputs, raws = answered
        results = [Attributions.from_dict(r) for r in raws]
        return ExplainResponse(explanations=explanations(self.builder, inputs, results,
                                                         self.explain_settings.top_fraction),
                               model_name=self.builder.name, model_version=self.builder.version)

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
