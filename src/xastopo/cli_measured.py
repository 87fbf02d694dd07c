"""`xastopo plot-measured` and `xastopo measured-report`: measured spectra for people (registered on
the main app by :mod:`xastopo.cli`). Bad input exits 2 with one line naming the file and the reason."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    from xastopo.cli import console, fail

    @app.command("plot-measured")
    def plot_measured_cmd(
        file: Path = typer.Argument(..., help="a measured spectrum (XDI, .xmu, text, CSV)"),
        out: Path = typer.Option(..., "--out", help="PNG: raw mu with the fitted lines, normalized, and the "
                                 "model's input beside the computed training average of the element"),
        element: str = typer.Option(None, help="absorbing element when the header does not name it"),
        columns: str = typer.Option(None, help="role=column for ambiguous files, e.g. 'energy=1,mu=3'"),
        model_dir: Path = typer.Option(None, help="exported model directory (default as `predict`)"),
        params: Path = typer.Option(None, help="parameter file (default as `predict`)"),
        features: Path = typer.Option(Path("data/features/train.npz"), help="training features for the computed "
                                      "average (from `dvc repro featurize`)"),
    ) -> None:
        """Draw the normalization steps of a measured spectrum (the paper's Figure S10)."""
        from xastopo.batch_predict import BatchInputError, resolve_model_dir
        from xastopo.config import ConfigError
        from xastopo.data.measured import MeasuredError, parse_columns_option, read_measured
        from xastopo.data.validation import SpectrumError
        from xastopo.inference import ArtifactError, InputBuilder
        from xastopo.measured_report import plot_measured

        try:
            builder = InputBuilder(resolve_model_dir(model_dir, params))
            spec = read_measured(file, str(file), element, parse_columns_option(columns),
                                 min_points=builder.preprocessor.min_points)
            info = plot_measured(spec, builder.preprocessor, out, features)
        except SpectrumError as exc:
            fail(f"{file}: {exc}")
        except (MeasuredError, BatchInputError, ArtifactError, ConfigError, ValueError) as exc:
            fail(str(exc))
        shift = f", shifted {info['shift_ev']:+.1f} eV" if "shift_ev" in info else ""
        console.print(f"wrote {out} ({info['element']} K: e0 {info['e0']:.1f} eV, edge step "
                      f"{info['edge_step']:.3g}{shift})")

    @app.command("measured-report")
    def measured_report_cmd(
        manifest: Path = typer.Option(None, help="manifest.csv (file, element, map_key, label), files relative "
                                      "to it (default: data.experimental_manifest under data.raw_dir)"),
        veidt: Path = typer.Option(None, help="site spectra parquet whose veidt_experiment rows are checked too "
                                   "(default: data.site_spectra under data.raw_dir)"),
        model_dir: Path = typer.Option(None, help="exported model directory (default as `predict`)"),
        params: Path = typer.Option(None, help="parameter file (default as `predict`)"),
        out: Path = typer.Option(Path("reports/measured.md"), help="Markdown; the JSON goes beside it"),
    ) -> None:
        """Every measured file read or refused (counts by reason) and the labeled materials' predictions."""
        from xastopo.batch_predict import resolve_model_dir
        from xastopo.config import ConfigError, load_params, raw_path
        from xastopo.inference import ArtifactError
        from xastopo.measured_report import measured_report, report_markdown, write_report

        try:
            cfg = load_params(params)
            manifest = manifest or raw_path(cfg, "experimental_manifest")
            veidt = veidt or raw_path(cfg, "site_spectra")
        except ConfigError as exc:
            fail(str(exc))
        if not manifest.is_file():
            fail(f"{manifest}: manifest not found")
        try:
            rep = measured_report(manifest, resolve_model_dir(model_dir, params),
                                  veidt if veidt.is_file() else None)
        except (ArtifactError, ConfigError) as exc:
            fail(str(exc))
        write_report(rep, out, out.with_suffix(".json"))
        print(report_markdown(rep), end="")
