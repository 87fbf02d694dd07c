"""The service under load, measured with locust (headless, loopback, bounded in time), against the
in-process ``Predictor`` on the same inputs in the same run.

For adaptive batching on and off (``serving.adaptive_batching``), the real service (``bentoml serve``
on a free loopback port, CPU provider, a params.yaml copy that differs only in that switch) gets closed-
loop locust users (no think time) at each concurrency (default 1, 8, 32, 128), posting single-material
and 64-material requests of real shipped spectra (``benchmarks/real_requests.py``), ``--duration``
seconds each: requests/s, materials/s, p50/p95/p99 latency, failures (a 503 counts as one). In process,
the same request bodies go through the CLI's path (schema → ``InputBuilder.build`` → ``Predictor.outputs``
→ answers) one request at a time, in this process, the model opened as `xastopo predict` opens it
(``predict:``; each body is one run; the other ``ort_spinning`` is recorded too: the service's model worker never
spins).

    python benchmarks/service_load.py --duration 10       # ~6 min; benchmarks/results/service_load.json

Targets (issue 14): concurrency 32 with 64-material requests >= 50 % of in-process materials/s; p99 <
100 ms at concurrency 8 with single-material requests. Locust itself runs on the same 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from real_requests import ROOT, default_model_dir, real_materials

from xastopo.local_server import BIN, LocalServer

RESULTS = ROOT / "benchmarks" / "results" / "service_load.json"


def bodies_of(materials: list[dict], k: int, count: int) -> list[dict]:
    """``count`` request bodies of ``k`` consecutive materials each (wrapping around)."""
    n = len(materials)
    return [{"materials": [materials[(i * k + j) % n] for j in range(k)]} for i in range(count)]


def in_process(model_dir: Path, bodies: list[dict], seconds: float, spinning: bool, concurrent_runs: int) -> dict:
    """Materials/s of the CLI's path on the same bodies, one request after another (best of 3 windows); the
    model opened as `xastopo predict` opens it when ``spinning`` and ``concurrent_runs`` are ``predict:``'s
    (a body is one run: the first session)."""
    from xastopo.inference import Predictor
    from xastopo.schema import parse_request

    pred = Predictor(model_dir, prefer_gpu=False, spinning=spinning, concurrent_runs=concurrent_runs)

    def one(body: dict) -> int:
        inputs = pred.build(parse_request(body).materials)
        probs, unc = pred.outputs(inputs.valid_arrays())
        pred.predictions(inputs, list(probs), None if unc is None else list(unc))
        return len(body["materials"])

    one(bodies[0])
    best = 0.0
    for _ in range(3):
        n, i, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += one(bodies[i % len(bodies)])
            i += 1
        best = max(best, n / (time.perf_counter() - t0))
    return {"materials_per_s": round(best, 1)}


def run_locust(url: str, bodies_file: Path, users: int, duration: int, prefix: Path) -> list[dict[str, str]]:
    """One headless locust run of ``users`` closed-loop users posting ``bodies_file``'s bodies (locustfile.py) for
    ``duration`` seconds: the rows of its stats CSV (one per request name, then "Aggregated"); its CSVs are
    written at ``prefix``."""
    env = {**os.environ, "XASTOPO_LOAD_BODIES": str(bodies_file)}
    cmd = [str(BIN / "locust"), "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless", "-u", str(users),
           "-r", str(users), "-t", f"{duration}s", "--host", url, "--csv", str(prefix), "--only-summary",
           "--stop-timeout", "10", "--loglevel", "ERROR"]
    subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=duration + 120)
    with open(f"{prefix}_stats.csv") as fh:
        return list(csv.DictReader(fh))


def locust_run(url: str, bodies_file: Path, users: int, duration: int, out: Path) -> dict:
    prefix = out / f"u{users}"
    agg = next(r for r in run_locust(url, bodies_file, users, duration, prefix) if r["Name"] == "Aggregated")
    failures: dict[str, int] = {}
    with open(f"{prefix}_failures.csv") as fh:
        for r in csv.DictReader(fh):
            failures[r["Error"][:80]] = failures.get(r["Error"][:80], 0) + int(r["Occurrences"])
    ok = int(agg["Request Count"]) - int(agg["Failure Count"])
    return {"requests": int(agg["Request Count"]), "failures": int(agg["Failure Count"]), "failure_kinds": failures,
            "ok_per_s": round(ok / duration, 1), "p50_ms": float(agg["50%"]), "p95_ms": float(agg["95%"]),
            "p99_ms": float(agg["99%"]), "max_ms": float(agg["Max Response Time"])}


def start(model_dir: Path, batching: bool, tmp: Path) -> LocalServer:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["serving"]["adaptive_batching"] = batching
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != "XASTOPO_API_TOKEN"}
    env.update(XASTOPO_MODEL_DIR=str(model_dir.resolve()), XASTOPO_DEVICE="cpu",
               XASTOPO_PARAMS=str(tmp / "params.yaml"),
               BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(tmp / "bentoml_home"),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    srv = LocalServer("serving.service:XasTopo", env, ROOT, tmp / "serve.log")
    srv.wait_ready()
    return srv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--materials", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--batching", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="2 CPU cores, locust on them too; nothing else running",
                    help="what else ran on the machine (recorded with the results)")
    args = ap.parse_args()

    from xastopo.config import load_params, predict_options

    model_dir = args.model_dir or default_model_dir()
    mats = real_materials(model_dir)
    opts = predict_options(load_params(ROOT / "params.yaml"))  # in process: as `xastopo predict` runs
    spinning, runs = opts.ort_spinning, opts.concurrent_runs
    result: dict = {"model_dir": str(model_dir), "duration_s": args.duration, "cpu_count": os.cpu_count(),
                    "note": args.note, "in_process_ort_spinning": spinning,
                    "in_process": {}, "service": []}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        files = {}
        for k in args.materials:
            bodies = bodies_of(mats, k, 64 if k == 1 else 8)
            files[k] = tmp / f"bodies_{k}.json"
            files[k].write_text(json.dumps(bodies))
            result["in_process"][str(k)] = in_process(model_dir, bodies, 2.0, spinning, runs)
            result["in_process"][str(k)][f"spinning_{not spinning}"] = in_process(model_dir, bodies, 2.0,
                                                                                  not spinning, runs)
            print(f"in process, {k} material(s)/request: {result['in_process'][str(k)]['materials_per_s']:.0f} "
                  f"materials/s (ONNX Runtime threads spinning: {spinning}; "
                  f"{result['in_process'][str(k)][f'spinning_{not spinning}']['materials_per_s']:.0f} with "
                  f"{not spinning})", flush=True)
        for mode in args.batching:
            run_dir = tmp / mode
            run_dir.mkdir()
            srv = start(model_dir, mode == "on", run_dir)
            try:
                for k in args.materials:
                    for c in args.concurrency:
                        out = run_dir / f"k{k}"
                        out.mkdir(exist_ok=True)
                        row = {"batching": mode, "materials_per_request": k, "concurrency": c,
                               **locust_run(srv.url, files[k], c, args.duration, out)}
                        row["materials_per_s"] = round(row["ok_per_s"] * k, 1)
                        row["vs_in_process"] = round(row["materials_per_s"]
                                                     / result["in_process"][str(k)]["materials_per_s"], 3)
                        result["service"].append(row)
                        print(f"batching {mode:>3} k={k:<3} c={c:<4} {row['ok_per_s']:>7.1f} req/s "
                              f"{row['materials_per_s']:>8.0f} mat/s ({row['vs_in_process']:.0%} of in-process) "
                              f"p50 {row['p50_ms']:.0f} p95 {row['p95_ms']:.0f} p99 {row['p99_ms']:.0f} ms "
                              f"failures {row['failures']} {row['failure_kinds'] or ''}", flush=True)
            finally:
                srv.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
