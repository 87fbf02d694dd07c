"""The `xastopo` command line: data summaries, batch prediction, screening, simulation.

Every command fails on bad input with exit code != 0 and one readable line (no traceback).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Topological vs trivial materials from K-edge XANES.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Inspect the versioned dataset made by `dvc repro`.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()


def fail(message: str) -> None:
    """Print one readable error line and exit 2 (bad input) — never a traceback."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@data_app.command("summary")
def data_summary(
    materials: Path = typer.Option(Path("data/interim/materials.parquet"), help="assembled records"),
    split: Path = typer.Option(Path("data/interim/split.csv"), help="split file"),
) -> None:
    """Materials per absorbing element, 3-class label and split (after `dvc repro`)."""
    import pandas as pd

    for p in (materials, split):
        if not p.is_file():
            fail(f"{p} not found: run `dvc repro` first (or pass --materials/--split)")
    try:
        rec = pd.read_parquet(materials, columns=["mp_id", "absorbing_element", "label3"])
    except Exception as exc:  # pyarrow raises many types for a bad file
        fail(f"{materials}: cannot read assembled records ({exc.__class__.__name__})")
    try:
        sp = pd.read_csv(split)
    except Exception as exc:
        fail(f"{split}: cannot read split file ({exc.__class__.__name__})")
    if not {"mp_id", "split"} <= set(sp.columns):
        fail(f"{split}: needs columns mp_id and split")
    from xastopo.data.split import SPLITS, split_table

    t = split_table(rec, sp)
    table = Table(title=f"{rec['mp_id'].nunique()} labeled materials, {len(rec)} element spectra")
    for col in ("element", "class", *SPLITS, "total"):
        table.add_column(col, justify="left" if col in ("element", "class") else "right")
    for r in t.itertuples(index=False):
        table.add_row(r.absorbing_element, r.label3, *(str(getattr(r, s)) for s in SPLITS), str(r.total))
    tot = sp["split"].value_counts()
    table.add_section()
    table.add_row("all", "materials", *(str(int(tot.get(s, 0))) for s in SPLITS), str(len(sp)))
    console.print(table)


@app.command("predict")
def predict(
    input: Path = typer.Argument(..., help="parquet with mp_id, absorbing_element, energy, mu (several sites "
                                 "of an element are combined; optional 'weight' or 'multiplicity' column; "
                                 "optional 'formula' column, one formula per material), a JSON file in the "
                                 "service's request schema (with formula/elements), or a CSV "
                                 "material_id,formula (composition only, for a model that reads compositions)"),
    out: Path = typer.Option(..., "--out", help="CSV: material_id, probability_topological, label, "
                             "elements_used, warnings, uncertainty, elements_with_spectrum, elements_by_type, "
                             "composition_only"),
    model_dir: Path = typer.Option(None, help="exported model directory (default: XASTOPO_MODEL_DIR, else "
                                   "serving.model_dir of the parameter file, relative to it)"),
    params: Path = typer.Option(None, help="parameter file (default: XASTOPO_PARAMS, else ./params.yaml, else "
                                "the project's)"),
    skip_invalid: bool = typer.Option(False, help="write invalid materials as rows with a warning "
                                      "instead of stopping at the first one"),
) -> None:
    """Batch prediction for many materials (the same Predictor as the service)."""
    from xastopo.batch_predict import BatchInputError, predict_file
    from xastopo.config import ConfigError
    from xastopo.inference import ArtifactError, InputError

    try:
        n, n_bad = predict_file(input, out, model_dir, params, skip_invalid)
    except (BatchInputError, InputError, ArtifactError, ConfigError) as exc:
        fail(str(exc))
    console.print(f"wrote {n} predictions to {out}" + (f" ({n_bad} invalid, see warnings)" if n_bad else ""))


@app.command("report")
def report(
    metrics_dir: Path = typer.Option(Path("metrics"), help="folder of <model>.json metrics (from `dvc repro`)"),
    split: str = typer.Option("test", help="val or test"),
) -> None:
    """Print the model comparison table (markdown) from the metrics files; the README's table is this."""
    import json

    from xastopo.training.report import ORDER, comparison_markdown

    if split not in ("val", "test"):
        fail(f"--split must be val or test, got '{split}'")
    files = {p.stem: p for p in sorted(metrics_dir.glob("*.json"))}
    if not files:
        fail(f"no metrics files in {metrics_dir}: run `dvc repro` first")
    results = {}
    for name in [n for n in ORDER if n in files] + [n for n in files if n not in ORDER]:
        try:
            results[name] = json.loads(files[name].read_text())
            results[name][split]["macro_f1"]
        except (json.JSONDecodeError, KeyError, TypeError):
            fail(f"{files[name]}: not a metrics file with a '{split}' section")
    print(comparison_markdown(results, split), end="")


@app.command("compare")
def compare(
    base: Path = typer.Argument(..., help="workspace of the reference run (after `dvc repro`)"),
    other: Path = typer.Argument(..., help="workspace of the changed run (e.g. a copy trained with feff10_sim)"),
    model: str = typer.Option("nn", help="model name (metrics/<model>.json)"),
    split: str = typer.Option("test", help="val or test"),
    n_boot: int = typer.Option(2000, min=100, help="bootstrap resamples"),
    out: Path | None = typer.Option(None, help="also write the result as JSON here"),
) -> None:
    """Compare one model between two runs on the same materials: per-class F1, macro-F1 and AUC with
    a paired bootstrap interval of the difference. Fails if the runs' materials differ."""
    import json

    from xastopo.training.compare import CompareError, comparison_markdown, load_run, paired_bootstrap

    if split not in ("val", "test"):
        fail(f"--split must be val or test, got '{split}'")
    try:
        a = load_run(base, model, split, name=str(base))
        b = load_run(other, model, split, name=str(other))
        res = paired_bootstrap(a, b, n_boot=n_boot)
    except CompareError as exc:
        fail(str(exc))
    if out is not None:
        out.write_text(json.dumps(res, indent=2) + "\n")
    print(comparison_markdown(res, base.resolve().name, other.resolve().name, split), end="")


def _register_commands() -> None:
    """Commands that live in their own (entry-point) modules register themselves here."""
    from xastopo.cli_simulate import register

    register(app)


_register_commands()

if __name__ == "__main__":
    app()
