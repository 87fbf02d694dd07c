"""Readers for the raw formats: FEFF ``xmu.dat`` and the shipped parquet tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SITE_SPECTRA_COLUMNS = ["spectrum_id", "mp_id", "absorbing_element", "site", "source", "energy", "mu"]


class ReaderError(ValueError):
    """A raw file could not be read; the message names the file and the problem."""


def read_xmu(path: str | Path) -> dict:
    """Read a FEFF ``xmu.dat``: columns omega (absolute eV), e, k, mu, mu0, chi.

    Returns ``{"energy", "mu", "mu0", "k", "xsedge50"}``. ``xsedge50`` is FEFF's own normalization
    factor from the header (``xsedge+ 50, used to normalize mu``), None if absent.
    """
    p = Path(path)
    if not p.is_file():
        raise ReaderError(f"{p}: file not found")
    xsedge50 = None
    rows: list[list[float]] = []
    with p.open() as fh:
        for line in fh:
            s = line.strip()
            if not s:
                continue
            if s.startswith("#"):
                if "xsedge+" in s and "normalize mu" in s:
                    try:
                        xsedge50 = float(s.lstrip("#").split()[-1].replace("D", "E"))
                    except ValueError:
                        xsedge50 = None
                continue
            try:
                rows.append([float(x.replace("D", "E")) for x in s.split()])
            except ValueError as exc:
                raise ReaderError(f"{p}: non-numeric data line: {s[:60]!r}") from exc
    if not rows:
        raise ReaderError(f"{p}: no data lines")
    widths = {len(r) for r in rows}
    if widths != {6}:
        raise ReaderError(f"{p}: expected 6 columns (omega e k mu mu0 chi), found {sorted(widths)}")
    a = np.asarray(rows)
    return {"energy": a[:, 0], "k": a[:, 2], "mu": a[:, 3], "mu0": a[:, 4], "xsedge50": xsedge50}


def read_site_spectra(path: str | Path) -> pd.DataFrame:
    """Read ``site_spectra.parquet`` (or a user file with at least its core columns)."""
    p = Path(path)
    if not p.is_file():
        raise ReaderError(f"{p}: file not found")
    try:
        df = pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ReaderError(f"{p}: not a readable parquet file ({exc.__class__.__name__})") from exc
    required = ["mp_id", "absorbing_element", "energy", "mu"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ReaderError(f"{p}: missing column(s) {', '.join(missing)}")
    if "spectrum_id" not in df.columns:
        df["spectrum_id"] = [f"row{i}" for i in range(len(df))]
    if "site" not in df.columns:
        df["site"] = np.nan
    if "source" not in df.columns:
        df["source"] = "user"
    return df.reset_index(drop=True)


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read ``topology_labels.csv`` (one row per mp-id, binary ``label`` and ``label3``)."""
    p = Path(path)
    if not p.is_file():
        raise ReaderError(f"{p}: file not found")
    try:
        df = pd.read_csv(p, dtype={"mp_id": str, "label": str, "label3": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReaderError(f"{p}: not a readable csv ({exc.__class__.__name__})") from exc
    missing = [c for c in ("mp_id", "label", "label3") if c not in df.columns]
    if missing:
        raise ReaderError(f"{p}: missing column(s) {', '.join(missing)}")
    return df

