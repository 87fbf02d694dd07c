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
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...",
                                        help="parquet with mp_id, absorbing_element, energy, mu (several sites "
                                        "of an element are combined; optional 'weight' or 'multiplicity' column; "
                                        "optional 'formula' column, one formula per material), a JSON file in the "
                                        "service's request schema (with formula/elements), or a CSV "
                                        "material_id,formula (composition only, for a model that reads "
                                        "compositions); or measured files of ONE material (XDI, .xmu, two/multi-"
                                        "column text or CSV: energy + mu, I0/It or If/I0), with --formula"),
    out: Path = typer.Option(..., "--out", help="CSV: material_id, probability_topological, label, "
                             "elements_used, warnings, uncertainty, elements_with_spectrum, elements_by_type, "
                             "composition_only"),
    model_dir: Path = typer.Option(None, help="exported model directory (default: XASTOPO_MODEL_DIR, else "
                                   "serving.model_dir of the parameter file, relative to it)"),
    params: Path = typer.Option(None, help="parameter file (default: XASTOPO_PARAMS, else ./params.yaml, else "
                                "the project's)"),
    skip_invalid: bool = typer.Option(False, help="write invalid materials as rows with a warning "
                                      "instead of stopping at the first one"),
    formula: str = typer.Option(None, help="measured files: the material's formula (every element of it is "
                                "read; those without a file by type)"),
    element: str = typer.Option(None, help="measured files: the absorbing element when a header does not name it"),
    columns: str = typer.Option(None, help="measured files with ambiguous columns: role=column by 1-based number "
                                "or name, e.g. 'energy=1,i0=2,itrans=3' (roles: energy, mu, i0, itrans, ifluor)"),
    material_id: str = typer.Option(None, help="measured files: the id in the CSV (default: the formula)"),
    distributed: bool = typer.Option(False, help="fan the batches out over Dask (an embedded LocalCluster "
                                     "unless --scheduler): answers identical to one process"),
    scheduler: str = typer.Option(None, help="an existing Dask scheduler's address or scheduler file (implies "
                                  "--distributed; the model directory must be readable by its workers)"),
    workers: int = typer.Option(0, min=0, help="LocalCluster worker processes (0 = one per core)"),
    batch_size: int = typer.Option(256, min=1, help="materials per ONNX run (and per Dask chunk multiple)"),
) -> None:
    """Batch prediction for many materials (the same Predictor as the service); or one material from
    its measured spectra (normalized and aligned onto the training spectra first)."""
    from xastopo.batch_predict import MEASURED_SUFFIXES, BatchInputError, predict_file, predict_measured_files
    from xastopo.config import ConfigError
    from xastopo.data.measured import parse_columns_option
    from xastopo.inference import ArtifactError, InputError

    tabular = (".parquet", ".pq", ".json")
    measured = (len(inputs) > 1 or formula is not None or element is not None or columns is not None
                or inputs[0].suffix.lower() in set(MEASURED_SUFFIXES) - {".csv"})
    try:
        if measured:
            bad = [p for p in inputs if p.suffix.lower() in tabular or p.suffix.lower() not in MEASURED_SUFFIXES]
            if bad:
                fail(f"{bad[0]}: measured files are {', '.join(MEASURED_SUFFIXES)} (one material per call); "
                     "a .parquet/.json batch goes alone, without --formula/--element/--columns")
            n, n_bad = predict_measured_files(inputs, out, formula, model_dir, params, element,
                                              parse_columns_option(columns), material_id), 0
        else:
            n, n_bad = predict_file(inputs[0], out, model_dir, params, skip_invalid, batch_size,
                                    distributed or workers > 0, scheduler, workers)
    except (BatchInputError, InputError, ArtifactError, ConfigError, ValueError) as exc:
        fail(str(exc))
    console.print(f"wrote {n} predictions to {out}" + (f" ({n_bad} invalid, see warnings)" if n_bad else ""))


@app.command("explain")
def explain(
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...",
                                        help="what `xastopo predict` reads: a parquet of site spectra (optional "
                                        "'formula' column), a JSON request or a CSV material_id,formula; or "
                                        "measured files of ONE material (XDI, ...) with --formula"),
    out: Path = typer.Option(..., "--out", help="attributions.csv (one row per material, element and energy: "
                             "energy_ev, spectrum after preprocessing, attribution, probability, ...) or "
                             "attributions.json (the service's /explain answer)"),
    model_dir: Path = typer.Option(None, help="exported model directory (default: XASTOPO_MODEL_DIR, else "
                                   "serving.model_dir of the parameter file)"),
    params: Path = typer.Option(None, help="parameter file (explain: block; default as for predict)"),
    formula: str = typer.Option(None, help="measured files: the material's formula"),
    element: str = typer.Option(None, help="measured files: the absorbing element when a header does not name it"),
    columns: str = typer.Option(None, help="measured files with ambiguous columns, e.g. 'energy=1,mu=3'"),
    material_id: str = typer.Option(None, help="measured files: the id in the output (default: the formula)"),
) -> None:
    """Per-energy attributions of each material's prediction (the same Predictor and method as the
    service's POST /explain; `explain:` in params.yaml)."""
    from xastopo.batch_predict import BatchInputError
    from xastopo.config import ConfigError
    from xastopo.explain import explain_file
    from xastopo.inference import ArtifactError, InputError

    try:
        cols = None
        if columns is not None:
            from xastopo.data.measured import parse_columns_option

            cols = parse_columns_option(columns)
        n = explain_file(inputs, out, model_dir, params, formula, element, cols, material_id)
    except (BatchInputError, InputError, ArtifactError, ConfigError, ValueError) as exc:
        fail(str(exc))
    console.print(f"wrote the attributions of {n} material(s) to {out}")


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
    from xastopo.cli_measured import register as register_measured
    from xastopo.cli_simulate import register

    register(app)
    register_measured(app)


_register_commands()

if __name__ == "__main__":
    app()
