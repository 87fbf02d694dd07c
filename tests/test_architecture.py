"""The import rules of the layers (README, Architecture), checked over every import in the package.

Layers, lowest first: core (config, elements, devices, families, schema, artifacts) → data and simulate
→ preprocessing → models → training → export → inference → entry points (stages, CLI, service).
A module imports only its own layer or lower ones; inference and serving never reach models,
training or torch, not even through another module; only the CLI imports the CLI.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RANK = {
    "config": 0, "elements": 0, "devices": 0, "families": 0, "schema": 0, "artifacts": 0,
    "data": 1, "simulate": 1,
    "preprocessing": 2,
    "models": 3,
    "training": 4,
    "export": 5,
    "inference": 6, "batch_predict": 6, "measured_report": 6, "screening": 6, "explain": 6,
    "stages": 7, "cli": 7, "cli_simulate": 7, "cli_measured": 7, "local_server": 7, "serving": 7, "web": 7,
}
SERVING_SIDE = ("inference", "batch_predict", "explain", "serving", "web")
FORBIDDEN_FOR_SERVING = ("xastopo.models", "xastopo.training", "torch")
CLI = ("xastopo.cli", "xastopo.cli_simulate", "xastopo.cli_measured")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "src":
        parts = parts[1:]
    else:  # serving/service.py
        parts = ["xastopo", "serving", *parts[1:]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    out: set[str] = set()
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def graph(root: Path) -> dict[str, set[str]]:
    files = sorted((root / "src" / "xastopo").rglob("*.py")) + sorted((root / "serving").glob("*.py"))
    return {module_name(p, root): imports_of(p, module_name(p, root)) for p in files}


def layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "xastopo" and parts[1] in RANK else None


def closure(g: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` reaches, through the package's own modules."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for t in g.get(m, ()):
            if t not in seen:
                seen.add(t)
                if t in g:
                    todo.append(t)
    return seen


def violations(root: Path) -> list[str]:
    g = graph(root)
    bad = []
    for mod, targets in g.items():
        src = layer(mod)
        for t in targets:
            dst = layer(t)
            if src and dst and RANK[dst] > RANK[src]:
                bad.append(f"{mod} imports {t}: {src} may not import the higher layer {dst}")
            if src == "data" and dst == "preprocessing":
                bad.append(f"{mod} imports {t}: data never imports preprocessing")
            if t in CLI and mod not in CLI:
                bad.append(f"{mod} imports {t}: only the CLI imports the CLI")
        if src in SERVING_SIDE:
            for t in closure(g, mod):
                if any(t == f or t.startswith(f + ".") for f in FORBIDDEN_FOR_SERVING):
                    bad.append(f"{mod} reaches {t}: inference and serving never import models, training or torch")
    return sorted(set(bad))


def test_the_package_follows_the_import_rules():
    assert violations(REPO) == []


def test_a_forbidden_import_is_caught(tmp_path):
    """The same check on a copy of the tree with one forbidden import added, each rule in turn."""
    for i, (rel, line, expect) in enumerate((
        ("src/xastopo/data/labels.py", "from xastopo.preprocessing.spectrum import resample_linear",
         "data never imports preprocessing"),
        ("src/xastopo/preprocessing/features.py", "import xastopo.training.metrics", "higher layer training"),
        ("src/xastopo/schema.py", "from xastopo import cli", "only the CLI imports the CLI"),
        ("src/xastopo/data/validation.py", "import torch  # reached from inference through data",
         "never import models, training or torch"),
    )):
        copy = tmp_path / f"case{i}"
        shutil.copytree(REPO / "src", copy / "src")
        shutil.copytree(REPO / "serving", copy / "serving")
        f = copy / rel
        f.write_text(f.read_text() + f"\n\ndef _added():\n    {line}\n")
        found = violations(copy)
        assert any(expect in v for v in found), (rel, found)
