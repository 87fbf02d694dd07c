"""Does FEFF10 (our simulations) agree with FEFF9 (the shipped spectra)? Edge offset and shape.

For every (material, element) that both codes computed, with one symmetry-unique site of that element
in both (so the site spectra are the same physical site whatever the structure file's site order),
compare the shipped FEFF 9 spectrum (``omnixas_feff_raw`` first, else ``omnixas_feff_processed``, copied
end values cut) with our FEFF10 shard spectrum:

- edge offset: half-edge-step energy of FEFF9 minus that of FEFF10 (``preprocessing.edge``);
- shape on absolute energy: Pearson r on a 0.25 eV grid over the FEFF9 edge −6 … +50 eV, no shift;
- shape aligned at the edge: the same after shifting FEFF10 by the offset.

    python benchmarks/feff_transfer.py            # → benchmarks/results/feff_transfer.{json,png}
    python benchmarks/feff_transfer.py --shards /path/to/out/shards
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from xastopo.config import load_params, raw_path, resolve_path
from xastopo.data.validation import real_range
from xastopo.preprocessing.edge import half_step_energy

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (-6.0, 50.0)
STEP = 0.25
SHIPPED = ("omnixas_feff_raw", "omnixas_feff_processed")


def pearson_on_window(e_a, mu_a, e_b, mu_b, centre: float) -> float:
    lo = max(centre + WINDOW[0], e_a[0], e_b[0])
    hi = min(centre + WINDOW[1], e_a[-1], e_b[-1])
    grid = np.arange(lo, hi + 1e-9, STEP)
    if len(grid) < 20:
        return float("nan")
    return float(np.corrcoef(np.interp(grid, e_a, mu_a), np.interp(grid, e_b, mu_b))[0, 1])


def pairs(shards: Path, site_spectra: Path) -> pd.DataFrame:
    """One row per (material, element) with a single unique site computed by both codes."""
    sim = pd.concat([pd.read_parquet(f, columns=["mp_id", "absorbing_element", "n_equivalent_classes_element",
                                                 "energy", "mu"]) for f in sorted(shards.glob("*.parquet"))])
    sim = sim[sim.n_equivalent_classes_element == 1].drop_duplicates(["mp_id", "absorbing_element"])
    ship = pd.read_parquet(site_spectra, columns=["mp_id", "absorbing_element", "source", "energy", "mu"],
                           filters=[("source", "in", list(SHIPPED))])
    ship = ship.merge(sim[["mp_id", "absorbing_element"]], on=["mp_id", "absorbing_element"])
    n_rows = ship.groupby(["mp_id", "absorbing_element", "source"]).size().rename("n").reset_index()
    ship = ship.merge(n_rows, on=["mp_id", "absorbing_element", "source"])
    ship = ship[ship.n == 1]  # one shipped site too
    ship["rank"] = ship.source.map({s: i for i, s in enumerate(SHIPPED)})
    ship = ship.sort_values("rank").drop_duplicates(["mp_id", "absorbing_element"])
    return ship.merge(sim, on=["mp_id", "absorbing_element"], suffixes=("_9", "_10"))


def compare_row(r) -> dict:
    e9, m9 = np.asarray(r.energy_9, float), np.asarray(r.mu_9, float)
    lo, hi = real_range(e9, m9)
    e9, m9 = e9[lo: hi + 1], m9[lo: hi + 1]
    e10, m10 = np.asarray(r.energy_10, float), np.asarray(r.mu_10, float)
    h9, h10 = half_step_energy(e9, m9), half_step_energy(e10, m10)
    return {"mp_id": r.mp_id, "element": r.absorbing_element, "source_9": r.source,
            "edge_9_eV": h9, "edge_10_eV": h10, "offset_eV": h9 - h10,
            "r_absolute": pearson_on_window(e10, m10, e9, m9, h9),
            "r_aligned": pearson_on_window(e10 + (h9 - h10), m10, e9, m9, h9)}


def summarize(df: pd.DataFrame) -> dict:
    out = {}
    for el, g in df.groupby("element"):
        q = lambda s: [round(float(v), 3) for v in np.nanpercentile(s, [25, 50, 75])]  # noqa: E731
        out[el] = {"n": int(len(g)), "offset_eV_q25_median_q75": q(g.offset_eV),
                   "r_absolute_q25_median_q75": q(g.r_absolute), "r_aligned_q25_median_q75": q(g.r_aligned),
                   "sources_9": g.source_9.value_counts().to_dict()}
    return out


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for el, g in df.groupby("element"):
        ax[0].hist(g.offset_eV, bins=30, alpha=0.6, label=f"{el} (n={len(g)})")
    ax[0].set_xlabel("edge offset FEFF9 − FEFF10 (eV)")
    ax[0].set_ylabel("materials")
    ax[0].legend()
    ax[1].boxplot([df.r_absolute.dropna(), df.r_aligned.dropna()], tick_labels=["absolute energy", "aligned at edge"])
    ax[1].set_ylabel("Pearson r, FEFF10 vs FEFF9 (56 eV)")
    fig.suptitle("Shipped FEFF9 vs our FEFF10 spectra, same material and site")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    params = load_params()
    ap.add_argument("--shards", type=Path, default=resolve_path(params, params["data"]["simulated_dir"]) / "shards")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/feff_transfer.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks/results/feff_transfer.png")
    args = ap.parse_args(argv)
    df = pd.DataFrame([compare_row(r) for r in pairs(args.shards, raw_path(params, "site_spectra"))
                       .itertuples(index=False)])
    if df.empty:
        print("no (material, element) computed by both codes yet")
        return 1
    report = {"per_element": summarize(df), "window_eV": list(WINDOW), "grid_step_eV": STEP,
              "pairs": df.round(4).to_dict(orient="records")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(df, args.plot)
    print("| element | n | edge offset FEFF9 − FEFF10, eV (median [IQR]) | r absolute | r aligned |")
    print("|---|---|---|---|---|")
    for el, s in report["per_element"].items():
        o, a, b = s["offset_eV_q25_median_q75"], s["r_absolute_q25_median_q75"], s["r_aligned_q25_median_q75"]
        print(f"| {el} | {s['n']} | {o[1]:.2f} [{o[0]:.2f}, {o[2]:.2f}] | {a[1]:.3f} [{a[0]:.3f}, {a[2]:.3f}] "
              f"| {b[1]:.3f} [{b[0]:.3f}, {b[2]:.3f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
