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
    rec = pd.read_parquet(materials, columns=["mp_id", "absorbing_element", "label3"])
    sp = pd.read_csv(split)
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


def _register_optional() -> None:
    """Commands that live in their own modules register themselves here."""
    try:
        from xastopo.cli_simulate import register
    except ImportError:
        return
    register(app)


_register_optional()

if __name__ == "__main__":
    app()
