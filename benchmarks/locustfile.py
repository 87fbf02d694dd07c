"""Locust user for ``benchmarks/service_load.py``: closed loop (no think time), each user posting the
request bodies of ``$XASTOPO_LOAD_BODIES`` (a JSON list of request bodies) round-robin to ``/predict``.
A 200 whose prediction count differs from the request's material count is recorded as a failure."""

from __future__ import annotations

import itertools
import json
import os

from locust import FastHttpUser, constant, task

BODIES = [json.dumps(b) for b in json.loads(open(os.environ["XASTOPO_LOAD_BODIES"]).read())]
COUNTS = [b.count('"material_id"') for b in BODIES]
_next = itertools.count()


class Client(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 60.0
    connection_timeout = 10.0

    @task
    def predict(self) -> None:
        k = next(_next) % len(BODIES)
        with self.client.post("/predict", data=BODIES[k], headers={"Content-Type": "application/json"},
                              catch_response=True, name=f"predict[{COUNTS[k]}]") as r:
            if r.status_code == 200 and len(r.json()["predictions"]) != COUNTS[k]:
                r.failure("wrong number of predictions")
