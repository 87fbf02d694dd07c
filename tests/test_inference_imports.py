"""Inference and serving never import torch, the model or the training code, nor the CLI, checked by
really importing them in a fresh interpreter (third-party imports included; tests/test_architecture.py
checks the package's own import graph statically)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "xastopo.models", "xastopo.training", "xastopo.cli", "xastopo.cli_simulate")


def imported_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_inference_and_cli_shell_import_no_models_training_or_torch() -> None:
    mods = imported_after("import xastopo.inference, xastopo.batch_predict, xastopo.schema, xastopo.config")
    assert "xastopo.inference" in mods and forbidden(mods) == []


def test_service_imports_no_models_training_or_torch() -> None:
    mods = imported_after("import serving.service")
    assert "bentoml" in mods and forbidden(mods) == []
