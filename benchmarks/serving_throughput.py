"""Throughput of the BentoML service: requests/s and materials/s, CPU vs CUDA execution provider.

Starts the real service (``bentoml serve serving.service:XasTopo`` on a loopback port) once per
provider — CPUExecutionProvider, then CUDAExecutionProvider when a GPU is visible — in the same
run, warms BentoML's adaptive-batching dispatcher up, then keeps ``--concurrency`` clients posting
``--materials`` materials per request for ``--duration`` seconds. Also times the bare ONNX session
(in process, batches of serving.max_batch_size) per provider, to show the serving overhead.
Writes benchmarks/results/serving_throughput.json and prints CUDA/CPU ratios.

    python benchmarks/serving_throughput.py --model-dir models/export --duration 15 --concurrency 16

Requests are real spectra from ``--request`` (a JSON file in the service's request schema) or, by
default, synthetic K-edge spectra on each supported element's window (throughput does not depend
on the values). Everything stays under ~2 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

from xastopo.local_server import BIN, LocalServer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serving_throughput.json"


# ------------------------------------------------------------------------------------ inputs
def default_model_dir() -> Path:
    """The model directory the CLI and the service use (config.model_dir: env, else params.yaml)."""
    from xastopo.config import load_params, model_dir

    return model_dir(load_params(ROOT / "params.yaml"))


def synthetic_materials(model_dir: Path, n: int, seed: int = 0) -> list[dict]:
    """Smooth K-edge-like spectra (arctan edge + white line + noise) covering each element's window."""
    pre = json.loads((model_dir / "preprocessor.json").read_text())
    els = sorted(pre["elements"], key=lambda k: -pre["elements"][k]["n_train"])[:6]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 1 + (i % 2)  # one or two absorbing elements per material
        spectra = []
        for el in rng.choice(els, size=min(k, len(els)), replace=False):
            w = pre["elements"][el]
            e = np.linspace(w["lo"] - 8.0, w["hi"] + 8.0, 300)
            edge = w["lo"] + 5.0 + rng.normal(0, 0.5)
            mu = 0.5 + np.arctan((e - edge) / 1.5) / np.pi + 0.3 * np.exp(-((e - edge - 4.0) / 3.0) ** 2)
            mu += rng.normal(0, 0.005, e.size)
            spectra.append({"element": str(el), "energy": e.round(4).tolist(), "mu": mu.round(6).tolist()})
        out.append({"material_id": f"synthetic-{i}", "spectra": spectra})
    return out


def request_pool(args: argparse.Namespace) -> list[dict]:
    if args.request:
        mats = json.loads(Path(args.request).read_text())["materials"]
    else:
        mats = synthetic_materials(args.model_dir, 64)
    k = args.materials
    return [{"materials": [mats[(i + j) % len(mats)] for j in range(k)]} for i in range(0, len(mats), 1)]


# ------------------------------------------------------------------------------------ server
def start_server(model_dir: Path, device: str, log: Path) -> LocalServer:
    """The service for one execution provider (auto: CUDA when a GPU is visible; cpu)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XASTOPO_API_TOKEN",)}
    env.update(XASTOPO_MODEL_DIR=str(model_dir.resolve()), XASTOPO_DEVICE=device,
               BENTOML_DO_NOT_TRACK="True", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return LocalServer("serving.service:XasTopo", env, ROOT, log)


# -------------------------------------------------------------------------------------- load
def load(url: str, pool: list[dict], duration: float, concurrency: int) -> dict:
    bodies = [json.dumps(b).encode() for b in pool]
    n_mat = [len(b["materials"]) for b in pool]
    stop_at = time.monotonic() + duration
    lock = threading.Lock()
    stats = {"ok": 0, "materials": 0, "http_503": 0, "other_errors": 0, "latencies": []}

    def client(tid: int) -> None:
        s = requests.Session()
        i = tid
        while time.monotonic() < stop_at:
            k = i % len(bodies)
            i += concurrency
            t0 = time.perf_counter()
            try:
                r = s.post(f"{url}/predict", data=bodies[k], headers={"Content-Type": "application/json"},
                           timeout=60)
                code = r.status_code
            except requests.RequestException:
                code = -1
            dt = time.perf_counter() - t0
            with lock:
                if code == 200:
                    stats["ok"] += 1
                    stats["materials"] += n_mat[k]
                    stats["latencies"].append(dt)
                elif code == 503:
                    stats["http_503"] += 1
                else:
                    stats["other_errors"] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(t,)) for t in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    lat = sorted(stats.pop("latencies")) or [float("nan")]
    return {**stats, "seconds": round(wall, 3), "requests_per_s": round(stats["ok"] / wall, 2),
            "materials_per_s": round(stats["materials"] / wall, 2),
            "latency_p50_ms": round(1000 * statistics.median(lat), 2),
            "latency_p95_ms": round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2)}


def direct_onnx(model_dir: Path, pool: list[dict], prefer_gpu: bool, batch: int, seconds: float = 3.0) -> dict:
    """Bare ONNX Runtime session on pre-built padded batches (no HTTP, no preprocessing)."""
    from xastopo.inference import Predictor
    from xastopo.schema import MaterialIn

    p = Predictor(model_dir, prefer_gpu=prefer_gpu)
    mats = [MaterialIn.model_validate(m) for b in pool for m in b["materials"]]
    arrays = [p.material_arrays(i, m) for i, m in enumerate(mats)]
    arrays = (arrays * (batch // max(len(arrays), 1) + 1))[:batch]
    x, z, mask, has = p.padded(arrays)
    p.predict_arrays(x, z, mask, has)  # warm-up (CUDA kernels, allocator)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        p.predict_arrays(x, z, mask, has)
        n += 1
    dt = time.perf_counter() - t0
    return {"provider": p.provider, "batch": batch, "materials_per_s": round(n * batch / dt, 1)}


def run_provider(name: str, device: str, args: argparse.Namespace, pool: list[dict], logdir: Path) -> dict:
    t_start = time.monotonic()
    srv = start_server(args.model_dir, device, logdir / f"serve_{name}.log")
    try:
        srv.wait_ready()
        startup = time.monotonic() - t_start
        meta = requests.post(f"{srv.url}/metadata", timeout=60).json()
        for b in pool[: args.warmup]:  # the dispatcher trains its latency model on the first requests
            requests.post(f"{srv.url}/predict", json=b, timeout=60)
        res = load(srv.url, pool, args.duration, args.concurrency)
        sizes = requests.post(f"{srv.url}/batch_stats", timeout=60).json()["batch_sizes"]
        res.update(execution_provider=meta.get("execution_provider"), startup_s=round(startup, 2),
                   mean_batch_materials=round(float(np.mean(sizes)), 2) if sizes else None,
                   max_batch_materials=max(sizes) if sizes else None)
    finally:
        srv.stop()
    try:
        res["direct_onnx"] = direct_onnx(args.model_dir, pool, device != "cpu", args.direct_batch)
    except Exception as exc:  # noqa: BLE001 - the HTTP numbers are the point; note why this one is missing
        res["direct_onnx"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    return res


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=None, help="exported model (default: XASTOPO_MODEL_DIR or "
                    "serving.model_dir of params.yaml)")
    ap.add_argument("--request", type=Path, default=None, help="JSON request whose materials are sent (default: "
                    "synthetic spectra)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of load per provider")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    ap.add_argument("--materials", type=int, default=4, help="materials per request")
    ap.add_argument("--warmup", type=int, default=15, help="sequential warm-up requests")
    ap.add_argument("--direct-batch", type=int, default=64, help="batch of the bare ONNX timing")
    ap.add_argument("--providers", default="auto", help="auto (CPU, plus CUDA when a GPU is visible), cpu, or cuda")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.model_dir = (args.model_dir or default_model_dir()).resolve()
    if not (args.model_dir / "metadata.json").is_file():
        print(f"error: no exported model at {args.model_dir} (run `dvc repro export` or pass --model-dir)",
              file=sys.stderr)
        return 2

    import onnxruntime as ort

    from xastopo.inference import gpu_visible

    cuda_ok = gpu_visible() and "CUDAExecutionProvider" in ort.get_available_providers()
    wanted = {"auto": ["cpu"] + (["cuda"] if cuda_ok else []), "cpu": ["cpu"], "cuda": ["cuda"]}[args.providers]
    pool = request_pool(args)
    report: dict = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
        "cpu_count": os.cpu_count(), "gpu": gpu_name(), "gpu_visible": gpu_visible(),
        "onnxruntime": ort.__version__, "ort_providers_available": ort.get_available_providers(),
        "model": json.loads((args.model_dir / "metadata.json").read_text()).get("model_name"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="xastopo-bench-") as logdir:
        for name in wanted:
            device = "cpu" if name == "cpu" else "auto"
            print(f"[{name}] starting the service ...", flush=True)
            try:
                res = run_provider(name, device, args, pool, Path(logdir))
            except Exception as exc:  # noqa: BLE001 - keep the other provider's numbers
                res = {"error": f"{exc.__class__.__name__}: {str(exc)[-1500:]}"}
            report["results"][name] = res
            print(f"[{name}] {json.dumps(res)}", flush=True)
    r = report["results"]
    if "cpu" in r and "cuda" in r and r["cpu"].get("requests_per_s") and r["cuda"].get("requests_per_s"):
        report["cuda_over_cpu"] = {
            "requests_per_s": round(r["cuda"]["requests_per_s"] / r["cpu"]["requests_per_s"], 3),
            "materials_per_s": round(r["cuda"]["materials_per_s"] / r["cpu"]["materials_per_s"], 3),
        }
        d_cpu, d_gpu = r["cpu"].get("direct_onnx", {}), r["cuda"].get("direct_onnx", {})
        if d_cpu.get("materials_per_s") and d_gpu.get("materials_per_s"):
            report["cuda_over_cpu"]["direct_onnx_materials_per_s"] = round(
                d_gpu["materials_per_s"] / d_cpu["materials_per_s"], 3)
        print(f"CUDA/CPU: {json.dumps(report['cuda_over_cpu'])}")
    elif "cuda" not in r:
        print("no GPU visible (or no CUDAExecutionProvider): CPU only")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all("error" not in v for v in r.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
