"""The service under a mixed load: closed-loop locust users alternating single-material and 64-material
requests of real shipped spectra (``benchmarks/real_requests.py``), loopback, bounded in time; latency and
throughput per request size, written to benchmarks/results/service_mixed.json.

Why: a request of ``serving.max_batch_size`` materials or more goes to the model worker's ``infer_whole``, past
BentoML's batch queue (``serving/service.py``); this shows what that costs the small requests that share the
model worker with it, which the one-size runs of ``benchmarks/service_load.py`` cannot.

    python benchmarks/service_mixed.py --duration 15 --concurrency 16     # ~1 min
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from real_requests import ROOT, default_model_dir, real_materials
from service_load import bodies_of, run_locust, start

RESULTS = ROOT / "benchmarks" / "results" / "service_mixed.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--large", type=int, default=64, help="materials per large request")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="2 CPU cores, locust on them too; nothing else running")
    args = ap.parse_args()

    model_dir = args.model_dir or default_model_dir()
    mats = real_materials(model_dir)
    bodies = [b for pair in zip(bodies_of(mats, 1, 64), bodies_of(mats, args.large, 64), strict=True) for b in pair]
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        (tmp / "bodies.json").write_text(json.dumps(bodies))
        srv = start(model_dir, True, tmp)
        try:
            for r in run_locust(srv.url, tmp / "bodies.json", args.concurrency, args.duration, tmp / "mixed"):
                rows.append({"name": r["Name"], "requests": int(r["Request Count"]),
                             "failures": int(r["Failure Count"]), "req_per_s": round(float(r["Requests/s"]), 1),
                             "p50_ms": float(r["50%"]), "p95_ms": float(r["95%"]), "p99_ms": float(r["99%"])})
        finally:
            srv.stop()
    result = {"model_dir": str(model_dir), "duration_s": args.duration, "concurrency": args.concurrency,
              "large": args.large, "note": args.note, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{r['name']:>12} {r['requests']:>6} requests, {r['failures']} failed, {r['req_per_s']:7.1f} req/s, "
              f"p50 {r['p50_ms']:g} p95 {r['p95_ms']:g} p99 {r['p99_ms']:g} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
