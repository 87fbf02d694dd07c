"""Run FEFF10 (feff10-rs) for one site in a child process; parse xmu.dat; retry once on failure.

FEFF runs in a fresh child Python process so that (a) the glibc malloc tuning variables take effect
(they are read at process start), (b) FEFF's console output goes to a log file, and (c) a crash or a
hang of FEFF cannot take the Dask worker down with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_CHILD = "import sys, feff10; feff10.run(sys.argv[1], sys.argv[2])"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the FEFF child gets SIGKILL when its parent (the Dask worker) dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def feff_version() -> str:
    import feff10

    return str(getattr(feff10, "__version__", "unknown"))


def method_string() -> str:
    return f"FEFF10 (feff10-rs {feff_version()})"


def parse_xmu(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of FEFF's xmu.dat: omega (absolute eV), e, k, mu, mu0, chi.

    Points whose energy does not increase strictly are dropped so that ``omega`` is strictly increasing.
    """
    rows = []
    with open(path) as fh:
        for line in fh:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            rows.append([float(x) for x in s.split()[:6]])
    if not rows:
        raise ValueError(f"{path}: no data rows")
    a = np.asarray(rows, dtype=np.float64)
    if a.shape[1] < 6 or not np.all(np.isfinite(a)):
        raise ValueError(f"{path}: malformed xmu.dat")
    keep = np.concatenate([[True], np.diff(a[:, 0]) > 0])
    while not np.all(np.diff(a[keep, 0]) > 0):  # pathological ordering: keep a running maximum
        e = a[:, 0]
        keep = e > np.maximum.accumulate(np.concatenate([[-np.inf], e[:-1]]))
    a = a[keep]
    return {n: a[:, i] for i, n in enumerate(("omega", "e", "k", "mu", "mu0", "chi"))}


_MSG = re.compile(r"(?i)(error|quitting|could not|cannot|bad counts|crash|fatal)")


def _failure_message(path: Path) -> str:
    """The FEFF pipeline error plus the last FEFF diagnostics before it, from the run's log."""
    try:
        lines = [s.strip() for s in path.read_text(errors="replace").splitlines() if s.strip()]
    except OSError:
        return ""
    cut = next((i for i in range(len(lines) - 1, -1, -1) if "FeffPipelineError" in lines[i]), None)
    if cut is None:
        return " ".join(lines[-3:])[-300:]
    diag = [s for s in lines[max(0, cut - 40) : cut] if _MSG.search(s) and "Traceback" not in s]
    return " | ".join([*diag[-3:], lines[cut].split(":", 1)[-1].strip()])[-400:]


def run_feff(inp_text: str, workdir: Path, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """One FEFF run in ``workdir``; returns {"ok", "error", "xmu"?, "seconds"}."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "feff.inp").write_text(inp_text)
    full_env = dict(os.environ)
    full_env.update({k: str(v) for k, v in env.items()})
    t0 = time.perf_counter()
    log = workdir / "feff.log"
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(workdir / "feff.inp"), str(workdir)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=full_env,
                timeout=timeout_s,
                cwd=workdir,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout_s:.0f} s", "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    xmu = workdir / "xmu.dat"
    if rc != 0 or not xmu.is_file():
        msg = _failure_message(log)
        return {"ok": False, "error": f"feff exit code {rc}: {msg}", "seconds": seconds}
    try:
        data = parse_xmu(xmu)
    except ValueError as exc:
        return {"ok": False, "error": str(exc), "seconds": seconds}
    return {"ok": True, "error": None, "xmu": data, "seconds": seconds}


def run_site_task(task: dict[str, Any]) -> dict[str, Any]:
    """Dask task: FEFF for one site, one retry with the slower-mixing SCF input if the first run fails.

    ``task`` holds ``key``, ``feff_inp``, ``retry_inp`` (or None), ``env``, ``timeout_s`` and any
    metadata, which is passed through.  The result never raises: failures come back with ``ok=False``.
    """
    tmp_root = task.get("tmp_dir") or None
    work = Path(tempfile.mkdtemp(prefix=f"feff_{task['key'][:12]}_", dir=tmp_root))
    errors = []
    total = 0.0
    try:
        attempts = [("primary", task["feff_inp"])]
        if task.get("retry_inp"):
            attempts.append(("retry", task["retry_inp"]))
        for i, (name, inp) in enumerate(attempts):
            r = run_feff(inp, work / name, task.get("env", {}), float(task.get("timeout_s", 1800)))
            total += r["seconds"]
            if r["ok"]:
                x = r["xmu"]
                return {
                    **task,
                    "ok": True,
                    "retried": i > 0,
                    "energy": x["omega"].tolist(),
                    "mu": x["mu"].astype(np.float32).tolist(),
                    "seconds": total,
                    "errors": errors,
                    "host": os.uname().nodename,
                }
            errors.append(f"{name}: {r['error']}")
        return {**task, "ok": False, "retried": len(attempts) > 1, "seconds": total, "errors": errors}
    except Exception as exc:  # never let one site stop the batch
        errors.append(f"{type(exc).__name__}: {exc}")
        return {**task, "ok": False, "retried": False, "seconds": total, "errors": errors}
    finally:
        shutil.rmtree(work, ignore_errors=True)
