"""Soak and fault run of the real service on loopback, bounded in time; prints a summary and writes
benchmarks/results/soak.json. Exit code 1 when a check fails.

Phases, on a served *copy* of the model directory (so it can be replaced safely):

1. hostile bodies: nesting 1,000 deep, huge numbers, 1 MB strings, 50,000 small materials, a trickled
   body: each must get a 4xx within a bounded time;
2. mixed load for ``--duration`` seconds: ``--clients`` closed-loop clients, ~70 % valid requests of real
   shipped spectra (1-16 materials) and ~30 % of every bad-input kind the service knows; checks: zero
   5xx, every 200 identical (probability within 1e-6, label, model version) to the in-process prediction,
   every bad request a 4xx; server RSS (all its processes) growth from after warm-up to the end < 10 %;
3. worker killed under load: SIGKILL the model worker; the service must come back (a 200 again) and no
   accepted request may be answered wrongly (failed requests while it restarts are counted, not wrong);
4. artifact replaced while serving: a different model (same graph, another calibration bias, its own
   checksums and version) is copied over the served directory, then the model worker is killed so it
   reloads: every 200 must still be the loaded model's answer (the service refuses with 503 rather than
   mix the new model's probabilities with the old preprocessing and version).

    python benchmarks/soak.py --duration 600          # the README's run (10 minutes of mixed load)
    python benchmarks/soak.py --duration 20           # quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import yaml
from real_requests import ROOT, default_model_dir, real_materials

from xastopo.local_server import BIN, LocalServer

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
ATOL = 1e-6


# ----------------------------------------------------------------------------------- processes
def tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    kids: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        kids.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += kids.get(p, [])
    return found


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def model_worker(pid: int) -> int | None:
    for p in tree(pid)[1:]:
        try:
            argv = open(f"/proc/{p}/cmdline").read().split("\0")
        except OSError:
            continue
        if "--service-name" in argv and argv[argv.index("--service-name") + 1] == "xastopo-model":
            return p
    return None


# ------------------------------------------------------------------------------------- requests
def bad_requests(one: dict) -> list[tuple[str, bytes, str]]:
    """(kind, body, content type) of every bad-input kind the service refuses."""
    s = one["spectra"][0]

    def mat(**kw) -> bytes:
        return json.dumps({"materials": [{**one, "spectra": [{**s, **kw}]}]}).encode()

    n = len(s["energy"])
    return [
        ("not_json", b"{materials: [", "application/json"),
        ("content_type", json.dumps({"materials": [one]}).encode(), "text/plain"),
        ("not_object", b"[1, 2]", "application/json"),
        ("nan", mat(mu=[float("nan")] * n), "application/json"),
        ("energy_not_increasing", mat(energy=s["energy"][::-1]), "application/json"),
        ("length_mismatch", mat(mu=s["mu"][:-3]), "application/json"),
        ("too_few_points", mat(energy=s["energy"][:5], mu=s["mu"][:5]), "application/json"),
        ("unknown_element", mat(element="Xx"), "application/json"),
        ("window_not_covered", mat(energy=[e - 500.0 for e in s["energy"]]), "application/json"),
        ("missing_field", json.dumps({"materials": [{"spectra": one["spectra"]}]}).encode(), "application/json"),
        ("extra_field", json.dumps({"materials": [one], "x": 1}).encode(), "application/json"),
        ("formula_mismatch", json.dumps({"materials": [{**one, "formula": "NaCl"}]}).encode(), "application/json"),
        ("too_many_materials", json.dumps({"materials": [{"material_id": str(i), "elements": ["Cu"]}
                                                         for i in range(300)]}).encode(), "application/json"),
        ("deep", b"[" * 1000 + b"]" * 1000, "application/json"),
    ]


def hostile(url: str, port: int, one: dict) -> list[dict]:
    rows = []
    for kind, body, _ in [
        ("nested_1000", b'{"materials":' + b"[" * 1000 + b"]" * 1000 + b"}", ""),
        ("huge_integer", b'{"materials": [{"material_id": "x", "n": ' + b"9" * 5000 + b"}]}", ""),
        ("infinity", json.dumps({"materials": [{**one, "spectra": [{**one["spectra"][0], "mu": [1e999] * len(
            one["spectra"][0]["mu"])}]}]}).encode(), ""),
        ("string_1MB", json.dumps({"materials": [{**one, "material_id": "m" * 1_000_000}]}).encode(), ""),
        ("materials_50000", json.dumps({"materials": [{"material_id": str(i), "elements": ["Cu"]}
                                                      for i in range(50_000)]}).encode(), ""),
    ]:
        t0 = time.monotonic()
        r = requests.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=60)
        rows.append({"kind": kind, "status": r.status_code, "seconds": round(time.monotonic() - t0, 3),
                     "error": r.json().get("error", "")[:120]})
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(60)
    t0 = time.monotonic()
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{")
    head = s.recv(200)
    s.close()
    rows.append({"kind": "slow_sender", "status": int(head.split()[1]), "seconds": round(time.monotonic() - t0, 3)})
    for r in rows:
        r["ok"] = 400 <= r["status"] < 500 and r["seconds"] < 30
    return rows


class Load:
    """Closed-loop mixed clients; every answer checked against the in-process predictions."""

    def __init__(self, url: str, materials: list[dict], expected: dict[str, tuple[float, str]], version: str,
                 bad: list[tuple[str, bytes, str]], clients: int, seed: int = 14) -> None:
        self.url, self.materials, self.expected, self.version, self.bad = url, materials, expected, version, bad
        self.clients, self.rng = clients, random.Random(seed)
        self.stats = {"valid_ok": 0, "valid_refused_503": 0, "valid_failed": 0, "wrong": 0, "bad_4xx": 0,
                      "bad_not_4xx": 0, "http_5xx": 0, "connection_errors": 0}
        self.examples: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def add(self, key: str, example: str | None = None) -> None:
        with self.lock:
            self.stats[key] += 1
            if example and len(self.examples) < 20:
                self.examples.append(example)

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        s = requests.Session()
        while not self.stop.is_set():
            what = "?"
            try:
                if rng.random() < 0.7:
                    k = rng.choice((1, 1, 4, 16))
                    what = f"valid ({k} materials)"
                    start = rng.randrange(len(self.materials))
                    mats = [self.materials[(start + j) % len(self.materials)] for j in range(k)]
                    r = s.post(f"{self.url}/predict", json={"materials": mats}, timeout=60)
                    if r.status_code == 200:
                        self.check(r.json(), mats)
                    elif r.status_code == 503:
                        self.add("valid_refused_503")
                    else:
                        self.add("http_5xx" if r.status_code >= 500 else "valid_failed",
                                 f"valid → {r.status_code} {r.text[:120]}")
                else:
                    kind, body, ctype = rng.choice(self.bad)
                    what = kind
                    r = s.post(f"{self.url}/predict", data=body, headers={"Content-Type": ctype}, timeout=60)
                    if 400 <= r.status_code < 500:
                        self.add("bad_4xx")
                    else:
                        self.add("http_5xx" if r.status_code >= 500 else "bad_not_4xx",
                                 f"{kind} → {r.status_code} {r.text[:120]}")
            except requests.RequestException as exc:
                self.add("connection_errors", f"{what}: {type(exc).__name__} at {time.strftime('%H:%M:%S')}")
                s = requests.Session()
                time.sleep(0.05)

    def check(self, answer: dict, mats: list[dict]) -> None:
        preds = answer["predictions"]
        ok = len(preds) == len(mats) and answer["model_version"] == self.version
        for p, m in zip(preds, mats, strict=False):
            want_p, want_label = self.expected[m["material_id"]]
            ok = ok and p["material_id"] == m["material_id"] and abs(p["probability_topological"] - want_p) <= ATOL \
                and p["label"] == want_label
        self.add("valid_ok" if ok else "wrong", None if ok else f"wrong answer: {json.dumps(preds)[:200]}")

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)


def variant_model(src: Path, dst: Path) -> str:
    """A different valid model: the same graph with the calibration bias moved by +1, re-checksummed,
    version "<v>-replaced". Returns the new version."""
    import onnx
    from onnx import numpy_helper

    from xastopo.artifacts import sha256_file

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    moved = False
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.size == 1 and init.name.endswith("bias") and arr.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(arr + np.float32(1.0), init.name))
            moved = True
    if not moved:  # any scalar float initializer changes the answers
        init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).dtype == np.float32)
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.5), init.name))
    onnx.save(model, str(dst / "model.onnx"))
    meta = json.loads((dst / "metadata.json").read_text())
    meta["onnx_sha256"] = sha256_file(dst / "model.onnx")
    meta["model_version"] = f"{meta['model_version']}-replaced"
    (dst / "metadata.json").write_text(json.dumps(meta, indent=2))
    return meta["model_version"]


def wait_200(url: str, body: dict, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if requests.post(f"{url}/predict", json=body, timeout=10).status_code == 200:
                return time.monotonic() - t0
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return None


# ----------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--fault-seconds", type=float, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from xastopo.inference import Predictor
    from xastopo.schema import parse_request

    src = args.model_dir or default_model_dir()
    mats = real_materials(src)
    ref = Predictor(src, prefer_gpu=False)
    expected = {p.material_id: (p.probability_topological, p.label)
                for p in ref.predict(parse_request({"materials": mats}).materials)}
    result: dict = {"duration_s": args.duration, "clients": args.clients, "materials": len(mats),
                    "note": "2 CPU cores shared with a running FEFF simulation (one core busy)"}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        served = tmp / "model"
        shutil.copytree(src, served)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["serving"]["body_timeout_s"] = 5
        (tmp / "params.yaml").write_text(yaml.safe_dump(params))
        env = {k: v for k, v in os.environ.items() if not k.startswith("XASTOPO_")}
        env.update(XASTOPO_MODEL_DIR=str(served), XASTOPO_PARAMS=str(tmp / "params.yaml"), XASTOPO_DEVICE="cpu",
                   BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(tmp / "bentoml_home"),
                   PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
        srv = LocalServer("serving.service:XasTopo", env, ROOT, tmp / "serve.log")
        try:
            srv.wait_ready()
            # 1. hostile bodies
            result["hostile"] = hostile(srv.url, srv.port, mats[0])
            failures += [f"hostile {r['kind']}: {r['status']} in {r['seconds']} s" for r in result["hostile"]
                         if not r["ok"]]
            bad = bad_requests(mats[0])
            # 2. mixed load
            rss0 = rss_mb(tree(srv.proc.pid))
            t0 = time.monotonic()
            with Load(srv.url, mats, expected, ref.version, bad, args.clients) as load:
                samples = []
                while time.monotonic() - t0 < args.duration:
                    time.sleep(min(5.0, args.duration / 4))
                    samples.append(round(rss_mb(tree(srv.proc.pid)), 1))
            rss1 = rss_mb(tree(srv.proc.pid))
            result["mixed"] = {**load.stats, "examples": load.examples, "rss_mb_start": round(rss0, 1),
                               "rss_mb_end": round(rss1, 1), "rss_samples_mb": samples,
                               "rss_growth": round(rss1 / rss0 - 1, 4),
                               "requests_per_s": round(sum(load.stats.values()) / (time.monotonic() - t0), 1)}
            m = result["mixed"]
            if m["http_5xx"] or m["wrong"] or m["bad_not_4xx"] or m["valid_failed"]:
                failures.append(f"mixed load: {m['http_5xx']} 5xx, {m['wrong']} wrong, {m['bad_not_4xx']} bad "
                                f"not 4xx, {m['valid_failed']} valid refused")
            if m["rss_growth"] >= 0.10:
                failures.append(f"RSS grew {m['rss_growth']:.1%}")
            # 3. kill the model worker under load
            with Load(srv.url, mats, expected, ref.version, bad, args.clients, seed=15) as load:
                time.sleep(args.fault_seconds / 2)
                victim = model_worker(srv.proc.pid)
                os.kill(victim, signal.SIGKILL) if victim else None
                back = wait_200(srv.url, {"materials": mats[:1]}, 60)
                time.sleep(args.fault_seconds / 2)
            result["worker_killed"] = {**load.stats, "examples": load.examples, "victim": victim,
                                       "back_after_s": None if back is None else round(back, 2)}
            if victim is None or back is None or load.stats["wrong"]:
                failures.append(f"worker kill: victim {victim}, back {back}, wrong {load.stats['wrong']}")
            # 4. artifact replaced while serving, then the model worker restarts on the new one
            new_version = variant_model(src, tmp / "new_model")
            with Load(srv.url, mats, expected, ref.version, bad, args.clients, seed=16) as load:
                time.sleep(args.fault_seconds / 3)
                for f in ("model.onnx", "preprocessor.json", "metadata.json"):  # in place, file by file
                    os.replace(tmp / "new_model" / f, served / f)
                time.sleep(args.fault_seconds / 3)
                victim = model_worker(srv.proc.pid)
                os.kill(victim, signal.SIGKILL) if victim else None
                time.sleep(args.fault_seconds / 3 + 5)
            result["artifact_replaced"] = {**load.stats, "examples": load.examples, "new_version": new_version}
            if load.stats["wrong"]:
                failures.append(f"artifact replaced: {load.stats['wrong']} answers not from the loaded model")
            # SIGTERM with requests in flight
            procs = tree(srv.proc.pid)
            held = socket.create_connection(("127.0.0.1", srv.port))
            held.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 9000\r\n\r\n{")
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            while time.monotonic() - t0 < 30 and any(os.path.exists(f"/proc/{p}") and
                                                     open(f"/proc/{p}/stat").read().split(") ")[1][0] != "Z"
                                                     for p in procs if os.path.exists(f"/proc/{p}/stat")):
                srv.proc.poll()
                time.sleep(0.05)
            result["sigterm_stop_s"] = round(time.monotonic() - t0, 2)
            held.close()
            if result["sigterm_stop_s"] > 10:
                failures.append(f"SIGTERM took {result['sigterm_stop_s']} s")
        finally:
            srv.stop()
            result["server_log_errors"] = [ln[:200] for ln in srv.log.read_text(errors="replace").splitlines()
                                           if "Traceback" in ln or "[ERROR]" in ln][:20]
    result["failures"] = failures
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("hostile:", ", ".join(f"{r['kind']} {r['status']} {r['seconds']}s" for r in result["hostile"]))
    m = result["mixed"]
    print(f"mixed {args.duration:.0f} s, {args.clients} clients: {m['valid_ok']} valid answered identically, "
          f"{m['bad_4xx']} bad → 4xx, {m['http_5xx']} 5xx, {m['wrong']} wrong, {m['valid_refused_503']} shed (503), "
          f"RSS {m['rss_mb_start']} → {m['rss_mb_end']} MB ({m['rss_growth']:+.1%})")
    w = result["worker_killed"]
    print(f"model worker killed: back after {w['back_after_s']} s; {w['valid_ok']} right, {w['wrong']} wrong, "
          f"{w['valid_refused_503'] + w['http_5xx'] + w['connection_errors'] + w['valid_failed']} failed meanwhile")
    a = result["artifact_replaced"]
    print(f"artifact replaced + worker restarted: {a['valid_ok']} right (loaded model), {a['wrong']} wrong, "
          f"{a['valid_refused_503']} refused with 503")
    print(f"SIGTERM with a request in flight: stopped in {result['sigterm_stop_s']} s")
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    print(f"wrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
