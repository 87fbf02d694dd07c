"""The gate hands the request it validated to the API (one parse per request): BentoML receives a stub body
that parses as an empty request, and the API reads the gate's parsed materials (``serving.service.gated``).
Checked on the real middleware with a real request body built from a shipped spectrum; the service itself
(BentoML server, answers equal to the in-process prediction) is tested in tests/integration/test_service.py."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pytest

pytest.importorskip("bentoml")


def _run_gate(body: bytes) -> tuple[list[dict], dict | None, bytes | None]:
    from serving.service import GateMiddleware

    seen: dict = {}

    async def app(scope: dict, receive, send) -> None:
        msg = await receive()
        seen["scope"], seen["body"] = scope, msg["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def run() -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "path": "/predict", "method": "POST",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
        await GateMiddleware(app)(scope, receive, send)
        return sent

    sent = asyncio.run(run())
    return sent, seen.get("scope"), seen.get("body")


def test_gate_hands_its_parsed_request_to_the_api(spectra_path) -> None:
    from serving.service import GATED_REQUEST, GATED_STUB, gated
    from xastopo.schema import MaterialIn, parse_request_json

    row = pd.read_parquet(spectra_path, filters=[("source", "==", "omnixas_feff_raw")]).iloc[0]
    spec = {"element": row.absorbing_element, "energy": [float(v) for v in row.energy],
            "mu": [float(v) for v in row.mu]}
    body = json.dumps({"materials": [{"material_id": str(row.mp_id), "spectra": [spec]}]}).encode()
    sent, scope, passed = _run_gate(body)
    assert sent[0]["status"] == 200
    assert passed == GATED_STUB and json.loads(GATED_STUB) == {"materials": []}
    assert dict(scope["headers"])[b"content-length"] == str(len(GATED_STUB)).encode()
    handed = scope["state"][GATED_REQUEST]
    assert handed == parse_request_json(body)

    class Ctx:  # the API's ``ctx.request.scope`` of that request
        class request:  # noqa: N801
            pass
    Ctx.request.scope = scope
    stub = json.loads(GATED_STUB)["materials"]  # what BentoML parsed
    assert gated(stub, Ctx) == handed.materials
    mine = [MaterialIn(material_id="y", formula="Cu2O")]
    assert gated(mine, Ctx) == mine  # materials BentoML parsed from a body the gate did not replace


def test_gate_still_refuses_a_bad_body_before_the_api() -> None:
    sent, scope, passed = _run_gate(b'{"materials": []}')
    assert sent[0]["status"] == 422 and scope is None and passed is None
