"""Ingest: read raw site spectra and labels, validate every row, count every rejection.

Nothing is dropped silently: each rejected row is counted under a reason in the data-quality
report, and the valid rows carry on to `assemble`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from xastopo.data.readers import read_labels, read_site_spectra
from xastopo.data.validation import SpectrumError, real_range, validate_spectrum
from xastopo.elements import Z_OF

EXPERIMENTAL_SOURCES = ("veidt_experiment",)


def validate_sites(df: pd.DataFrame, min_points: int, flat_run_tol: float = 0.0) -> tuple[pd.DataFrame, Counter]:
    """Return the valid rows (energy/mu as float arrays, copied-run counts added) and reasons."""
    reasons: Counter = Counter()
    keep: list[int] = []
    energies, mus, n_flat_lo, n_flat_hi = [], [], [], []
    for i, row in enumerate(df.itertuples(index=False)):
        el = row.absorbing_element
        if not isinstance(el, str) or el not in Z_OF:
            reasons["unknown_element"] += 1
            continue
        mp = row.mp_id
        if not isinstance(mp, str) or not mp:
            reasons["missing_mp_id"] += 1
            continue
        try:
            e, m = validate_spectrum(
                row.energy if row.energy is not None else [], row.mu if row.mu is not None else [],
                min_points,
            )
        except SpectrumError as exc:
            reasons[exc.reason] += 1
            continue
        lo, hi = real_range(e, m, flat_run_tol)
        if hi - lo + 1 < min_points:
            reasons["too_few_real_points"] += 1
            continue
        keep.append(i)
        energies.append(e)
        mus.append(m.astype(np.float32))
        n_flat_lo.append(lo)
        n_flat_hi.append(len(m) - 1 - hi)
    out = df.iloc[keep].copy().reset_index(drop=True)
    out["energy"] = energies
    out["mu"] = mus
    out["n_copied_start"] = np.asarray(n_flat_lo, dtype=np.int64)
    out["n_copied_end"] = np.asarray(n_flat_hi, dtype=np.int64)
    return out, reasons


def simulated_sites(folder: str | Path) -> pd.DataFrame | None:
    """FEFF10 site spectra from the committed shards (``xastopo simulate``), None when there are none."""
    from xastopo.simulate.shards import SOURCE, read_shards

    df = read_shards(folder)
    if df.empty:
        return None
    df["spectrum_id"] = [f"{SOURCE}/{e}/{m}/{int(s):03d}/{k[:8]}" for e, m, s, k in
                         zip(df["absorbing_element"], df["mp_id"], df["site"], df["cache_key"], strict=True)]
    return df


def ingest(
    spectra_path: Path, labels_path: Path, min_points: int, flat_run_tol: float,
    simulated: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read and validate; return (valid sites, labels, quality report)."""
    sites = read_site_spectra(spectra_path)
    n_shipped = len(sites)
    if simulated is not None and len(simulated):
        sites = pd.concat([sites, simulated], ignore_index=True)
    labels = read_labels(labels_path)
    valid, reasons = validate_sites(sites, min_points, flat_run_tol)
    report = {
        "spectra": {
            "rows_read": int(len(sites)),
            "rows_read_shipped": int(n_shipped),
            "rows_read_simulated": int(len(sites) - n_shipped),
            "rows_valid": int(len(valid)),
            "rows_rejected": int(sum(reasons.values())),
            "rejected_by_reason": dict(sorted(reasons.items())),
            "rows_by_source": {k: int(v) for k, v in valid["source"].value_counts().sort_index().items()},
            "rows_with_copied_start_values": int((valid["n_copied_start"] > 0).sum()),
            "rows_with_copied_end_values": int((valid["n_copied_end"] > 0).sum()),
        },
        "labels": {"rows_read": int(len(labels))},
    }
    return valid, labels, report
