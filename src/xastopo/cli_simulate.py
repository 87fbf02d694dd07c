"""``xastopo simulate``: FEFF10 K-edge XANES of every absorbing element, fanned out with Dask."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

_ID = re.compile(r"^(mp|mvc)-\d+$")


class InputError(Exception):
    """Bad user input: reported as one line, exit code 2."""


def _parse_materials(spec: str) -> list[str]:
    p = Path(spec)
    text = p.read_text() if p.is_file() else spec
    ids = [t for t in re.split(r"[\s,]+", text) if t]
    bad = [i for i in ids if not _ID.match(i)]
    if not ids:
        raise InputError(f"no material ids in {spec!r}")
    if bad:
        raise InputError(f"not a material id (mp-123 or mvc-123): {', '.join(bad[:5])}")
    return list(dict.fromkeys(ids))


def simulate(
    materials: Annotated[
        str | None, typer.Option("--materials", help="Comma-separated ids, or a file of ids.")
    ] = None,
    n_materials: Annotated[
        int | None, typer.Option("--n-materials", min=1, help="Planner: number of materials.")
    ] = None,
    budget_cpu_hours: Annotated[
        float | None,
        typer.Option("--budget-cpu-hours", min=0.0, help="Planner and run: stop after this many CPU-hours."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Existing Dask scheduler address or scheduler file."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="LocalCluster workers (0 = one per core).")
    ] = None,
    params: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="params.yaml with a 'simulate:' block (default: XASTOPO_PARAMS, else ./params.yaml, else the "
            "project's); keys it leaves out come from the project's params.yaml.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (shards, manifest, cache).")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Recompute recorded failures.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, compute nothing.")] = False,
    elements: Annotated[
        str | None,
        typer.Option(
            "--elements",
            help="Only these absorbing elements' K edges (e.g. Cu,Ti,V), every unique site; "
            "planned for every labeled material that has one, first element first.",
        ),
    ] = None,
    by_uncertainty: Annotated[
        bool,
        typer.Option(
            "--by-uncertainty",
            help="Planner: the labeled materials the served model is least sure of (its uncertainty from "
            "the formula, per estimated CPU-second), instead of the most whole materials per CPU-hour.",
        ),
    ] = False,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model-dir", help="Exported model for --by-uncertainty (default: serving.model_dir)."),
    ] = None,
) -> None:
    """Simulate K-edge XANES (FEFF10) of every absorbing element of the selected or planned materials.

    Results go to append-only parquet shards under OUT/shards with OUT/manifest.json; a killed run
    resumes from the per-site cache in OUT/cache.
    """
    try:
        if model_dir is not None and not by_uncertainty:
            raise InputError("--model-dir is the model --by-uncertainty asks; give --by-uncertainty too")
        if by_uncertainty and materials:
            raise InputError("--by-uncertainty plans materials: give --n-materials or --budget-cpu-hours, "
                             "not --materials")
        summary = _simulate(
            materials, n_materials, budget_cpu_hours, scheduler, workers, params, out, retry_failed, dry_run,
            _parse_elements(elements), _model_dir(model_dir, params) if by_uncertainty else None,
        )
    except (InputError, FileNotFoundError, ValueError, KeyError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, sort_keys=True))


def _parse_elements(spec: str | None) -> list[str] | None:
    """Element symbols from 'Cu,Ti V'; an unknown symbol is an InputError naming it."""
    if not spec:
        return None
    from .elements import SYMBOLS

    els = [t for t in re.split(r"[\s,]+", spec) if t]
    bad = [e for e in els if e not in SYMBOLS]
    if bad:
        raise InputError(f"--elements: not an element symbol: {', '.join(bad)}")
    return list(dict.fromkeys(els))


def _model_dir(given: Path | None, params: Path | None) -> Path:
    """The exported model the uncertainty planner asks: ``--model-dir``, else the service's rule
    (``$XASTOPO_MODEL_DIR``, else ``serving.model_dir`` of ``--params`` when it has one, else of the
    project's params)."""
    from . import config

    if given is not None:
        d = given
    else:
        p = config.load_params(params) if params is not None else config.load_params()
        d = config.model_dir(p if "serving" in p else config.load_params(config.PROJECT_ROOT / "params.yaml"))
    if not (d / "model.onnx").is_file():
        raise InputError(f"--model-dir: no exported model (model.onnx) in {d}; run `dvc repro export`")
    return d


def uncertainty_values(cfg, raw_dir, model_dir: Path) -> dict[str, float]:
    """The served model's uncertainty of every labeled material with a structure, from its formula; a model
    folder that cannot be loaded or run is an InputError naming it."""
    import pandas as pd

    from .inference import ArtifactError
    from .screening import composition_uncertainty

    labeled = set(pd.read_csv(raw_dir / cfg["labels_csv"], usecols=["mp_id"]).mp_id)
    meta = pd.read_parquet(raw_dir / cfg["structures"], columns=["mp_id", "formula_sum"])
    meta = meta[meta["mp_id"].isin(labeled)]
    try:
        return composition_uncertainty(model_dir, dict(zip(meta.mp_id, meta.formula_sum, strict=True)))
    except ArtifactError as exc:
        raise InputError(f"--model-dir {model_dir}: {exc}") from None
    except RuntimeError as exc:  # ONNX Runtime failures (a graph that does not run)
        raise InputError(f"--model-dir {model_dir}: the model does not run: {str(exc).splitlines()[0]}") from None


def _withheld(missing: list[str], cfg, raw_dir: Path) -> list[dict[str, str]]:
    """Skip records for labeled materials without a structure (the data withholds some), so a list of
    materials still runs and the manifest says why those were not computed; an id that is neither in
    the structures nor in the labels is an InputError."""
    if not missing:
        return []
    import pandas as pd

    labeled = set(pd.read_csv(raw_dir / cfg["labels_csv"], usecols=["mp_id"]).mp_id)
    unknown = [m for m in missing if m not in labeled]
    if unknown:
        raise InputError(f"no structure for: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    typer.echo(f"warning: {len(missing)} labeled material(s) without a structure, recorded as skipped: "
               f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}", err=True)
    return [{"mp_id": m, "element": "*", "reason": "labeled, but no structure in the structures file (withheld)"}
            for m in missing]


def _select(materials, n_materials, budget, cfg, raw_dir, structures, out_dir, elements, model_dir=None):
    """(materials with their site jobs, skipped records, a one-line description): given ids or the plan."""
    from .simulate.pipeline import load_structures, prepare_materials
    from .simulate.planner import plan

    if materials:
        ids = _parse_materials(materials)
        df = load_structures(structures, ids)
        withheld = _withheld(sorted(set(ids) - set(df.mp_id)), cfg, raw_dir)
        mats, skipped = prepare_materials(dict(zip(df.mp_id, df.cif, strict=True)), cfg, only_elements=elements)
        skipped = withheld + skipped
        if n_materials:
            mats = mats[: int(n_materials)]
        desc = f"{len(mats)} given materials"
    else:
        if n_materials is None and budget is None:
            raise InputError("give --materials, --n-materials or --budget-cpu-hours")
        value = uncertainty_values(cfg, raw_dir, model_dir) if model_dir is not None else None
        p = plan(cfg, raw_dir, out_dir, n_materials=n_materials, budget_cpu_hours=budget, elements=elements,
                 value=value)
        mats, skipped = p.materials, p.skipped
        desc = p.describe() + (" (by uncertainty)" if value is not None else "")
    return mats, skipped, desc


def _simulate(
    materials, n_materials, budget_cpu_hours, scheduler, workers, params, out, retry_failed, dry_run, elements,
    model_dir=None,
):
    from .simulate.settings import load_params

    cfg, raw_dir = load_params(params)
    out_dir = Path(out) if out is not None else Path(cfg["out_dir"])
    n_materials = n_materials if n_materials is not None else cfg.get("n_materials")
    budget = budget_cpu_hours if budget_cpu_hours is not None else cfg.get("budget_cpu_hours")
    workers = workers if workers is not None else int(cfg.get("workers") or 0)
    scheduler = scheduler or cfg.get("scheduler")
    structures = raw_dir / cfg["structures"]
    if not structures.is_file():
        raise InputError(f"structures file not found: {structures}")

    mats, skipped, desc = _select(materials, n_materials, budget, cfg, raw_dir, structures, out_dir, elements,
                                  model_dir)
    typer.echo(desc, err=True)
    if dry_run:
        return {
            "dry_run": True,
            "materials": [m.mp_id for m in mats],
            "sites": sum(len(m.jobs) for m in mats),
        }

    from .simulate.cache import atomic_write_json
    from .simulate.cluster import dask_client
    from .simulate.pipeline import run_batch

    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with dask_client(scheduler, workers) as client:
        summary = run_batch(
            mats,
            cfg,
            out_dir,
            client,
            budget_cpu_hours=budget,
            retry_failed=retry_failed,
            extra_skipped=[s for s in skipped if s["element"] == "*"],  # unusable structures
        )
    summary.update({"started": started, "scheduler": scheduler or f"LocalCluster({workers or 'auto'})"})
    atomic_write_json(out_dir / "runs" / f"run-{started}.json", summary)
    return summary


def register(app: typer.Typer) -> None:
    """Add ``simulate`` as a command of the main CLI."""
    app.command("simulate")(simulate)


if __name__ == "__main__":
    _app = typer.Typer(add_completion=False)
    register(_app)
    _app()
