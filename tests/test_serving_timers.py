"""Two BentoML behaviours the service works around (found by benchmarks/soak.py), checked on BentoML's own
classes: its per-request timeout must not keep a live timer per answered request (the soak's RSS growth),
and the service's client to the model worker must never swap its connection pool under calls in flight
(the soak's hangs and 500s, ``RuntimeError: Connector is closed``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("bentoml")


def test_timeout_middleware_leaves_no_live_timer_per_request() -> None:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    import serving.service  # noqa: F401 - applies release_request_timers() at import, as in every worker

    async def app(scope: dict, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def run(n: int) -> tuple[int, int]:
        mw = TimeoutMiddleware(app, timeout=120)
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        for _ in range(n):
            await mw({"type": "http", "path": "/predict"}, receive, send)
        loop = asyncio.get_running_loop()
        live = [h for h in loop._scheduled if not h.cancelled()]  # noqa: SLF001 - the heap the leak lived in
        return len(live), sum(m["type"] == "http.response.start" for m in sent)

    live, answered = asyncio.run(run(300))
    assert answered == 300
    assert live == 0, f"{live} request timers still scheduled after 300 answered requests (each holds its request)"


def test_timeout_middleware_still_times_out() -> None:
    """The replaced __call__ keeps BentoML's behaviour: a request slower than the timeout gets a 504."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    import serving.service  # noqa: F401

    async def slow(scope: dict, receive, send) -> None:
        await asyncio.sleep(5)

    async def run() -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        await TimeoutMiddleware(slow, timeout=0.05)({"type": "http", "path": "/predict"}, receive, send)
        return sent

    sent = asyncio.run(run())
    assert sent[0]["status"] == 504


def test_model_client_never_swaps_its_session_under_calls_in_flight() -> None:
    """BentoML's dependency client reads ``runner_connection`` of the dependency's service config; the model
    service sets it so that its ``SessionManager`` never closes a session other calls still use."""
    from _bentoml_impl.client.proxy2 import SessionManager

    from serving.service import XasTopoModel

    conn = XasTopoModel.config["runner_connection"]
    manager = SessionManager("http://127.0.0.1:1", timeout=1, headers={}, max_age=conn["max_age"],
                             max_requests=conn["max_requests"])

    assert asyncio.run(_count(manager, 5_000)) == 1
    default = SessionManager("http://127.0.0.1:1", timeout=1, headers={})  # BentoML's defaults: a swap per 100
    assert asyncio.run(_count(default, 5_000)) > 1


async def _count(manager, n: int) -> int:
    seen = set()
    for _ in range(n):
        seen.add(id(await manager.get_session()))
    await manager.close()
    return len(seen)


def test_media_types_are_computed_once_per_io_model_and_unchanged() -> None:
    """BentoML built an output model's whole JSON schema per response to find its media type; the service
    caches it per class: the same answer as BentoML's own computation, and no second computation."""
    from _bentoml_sdk.io_models import IOMixin

    import serving.service
    from serving.service import XasTopo, XasTopoModel

    original = IOMixin.mime_type.__func__.__wrapped__  # BentoML's function, behind the cache
    for svc in (XasTopoModel, XasTopo):
        for api in svc.apis.values():
            for spec in (api.input_spec, api.output_spec):
                assert spec.mime_type() == original(spec)
    before = IOMixin.mime_type.__func__.cache_info()
    XasTopoModel.apis["infer"].output_spec.mime_type()
    after = IOMixin.mime_type.__func__.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    serving.service.cache_media_types()  # idempotent: still the one cache
    assert IOMixin.mime_type.__func__.cache_info().hits == after.hits


def test_model_payload_travels_as_one_pickle_and_reads_back_exactly() -> None:
    """The entry worker sends each material's arrays as bytes (``wire_item``): BentoML's pickle payload is
    one chunk instead of one out-of-band buffer per array (193 for 64 materials), and the model worker's
    ``_item`` reads back exactly the arrays sent; a malformed item is a ValueError (it alone fails)."""
    import numpy as np
    from _bentoml_impl.serde import PickleSerde

    from serving.service import XasTopoModel, wire_item

    rng = np.random.default_rng(0)
    arrays = [(rng.normal(size=(a, 200)).astype(np.float32), rng.integers(1, 90, size=a),
               (rng.random(a) > 0.5).astype(np.float32)) for a in rng.integers(1, 6, size=64)]
    assert len(PickleSerde().serialize_value([{"x": x, "z": z, "has": h} for x, z, h in arrays]).data) == 193
    payload = PickleSerde().serialize_value([wire_item(x, z, h) for x, z, h in arrays])
    assert len(payload.data) == 1
    model = XasTopoModel.inner.__new__(XasTopoModel.inner)
    model.n_points = 200
    for item, (x, z, h) in zip(PickleSerde().deserialize_value(payload), arrays, strict=True):
        got = model._item(item)  # noqa: SLF001
        for a, b in zip(got, (x, z, h), strict=True):
            np.testing.assert_array_equal(a, b)
    x, z, h = arrays[0]
    for bad in (wire_item(x[:, :199], z, h),                      # a row of the wrong length
                wire_item(np.full_like(x, np.nan), z, h),         # non-finite
                wire_item(x, np.zeros_like(z), h),                # Z out of range
                {**wire_item(x, z, h), "has": b"\x00" * 3}):      # truncated
        with pytest.raises(ValueError):
            model._item(bad)  # noqa: SLF001


def test_freeze_startup_heap_hides_the_startup_objects_from_the_collector() -> None:
    """After ``freeze_startup_heap`` a full collection no longer walks what start-up left alive (modules,
    BentoML, the service classes): a fresh interpreter that imported the service has almost nothing left to
    scan, and a full collection costs a fraction of what it did."""
    import subprocess
    import sys

    # two collections before counting: a collection untracks tuples that hold only untracked objects (CPython),
    # so a count after one can include a tuple the next collection untracks (frozen = n - 1, not a leak)
    code = ("import gc, time\nimport serving.service as s\ngc.collect()\ngc.collect()\nn = len(gc.get_objects())\n"
            "t = time.perf_counter(); gc.collect(); before = time.perf_counter() - t\n"
            "s.freeze_startup_heap()\nleft = len(gc.get_objects())\n"
            "t = time.perf_counter(); gc.collect(); after = time.perf_counter() - t\n"
            "print(n, gc.get_freeze_count(), left, before, after)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120).stdout.split()
    n, frozen, left, before, after = int(out[0]), int(out[1]), int(out[2]), float(out[3]), float(out[4])
    assert n > 50_000 and frozen >= n and left < 1_000, (n, frozen, left)
    assert after < before / 5, (before, after)
