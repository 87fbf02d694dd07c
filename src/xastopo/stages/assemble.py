"""DVC stage `assemble`: validated sites → (material, element) records with labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xastopo.config import get, load_params, raw_path
from xastopo.data.assemble import assemble, unphysical_summary, unphysical_verdicts
from xastopo.data.ingest import EXPERIMENTAL_SOURCES
from xastopo.data.quality import WhiteLineRule
from xastopo.data.structures import equivalence_table
from xastopo.simulate.shards import SOURCE as SIMULATED_SOURCE
from xastopo.stages.common import run_stage, write_json

SIMULATED = [SIMULATED_SOURCE]


def required_elements(params: dict, sites: pd.DataFrame) -> dict[str, set[str]]:
    """mp_id → elements FEFF is run for, from the formulas in the simulation's structures file
    (only for materials with simulated sites that may train; nothing is read when there are none)."""
    train = set(params["assemble"]["train_sources"])
    sim = sites.loc[sites["source"].isin(set(SIMULATED) & train), "mp_id"].unique()
    if len(sim) == 0:
        return {}
    from xastopo.simulate.inputs import computable_elements

    cfg = params["simulate"]
    path = Path(str(get(params, "data.raw_dir"))) / str(cfg["structures"])
    meta = pd.read_parquet(path, columns=["mp_id", "formula_sum"])
    meta = meta[meta["mp_id"].isin(set(sim))]
    return {mp: computable_elements(f, cfg) for mp, f in zip(meta["mp_id"], meta["formula_sum"], strict=True)}


def white_line_figure(sites: pd.DataFrame, params: dict, path: Path, per_panel: int = 8) -> None:
    """Recovered white lines beside the spectra the rule still rejects (edge-step normalized)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from xastopo.data.quality import own_range_normalized
    from xastopo.data.validation import real_range

    a, post = params["assemble"], float(get(params, "featurize.post_edge_ev"))
    tol = float(get(params, "ingest.flat_run_tol"))
    rule = WhiteLineRule.from_params(params, tuple(sorted(set(sites["source"]))))
    v = unphysical_verdicts(sites, float(a["max_negative_jump"]), post, tol, rule)
    kept = sites[v == "white_line"]
    rejected = sites[~v.isin(["ok", "white_line"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, rows, title in ((axes[0], kept, "kept: white lines"), (axes[1], rejected, "rejected: glitches")):
        rows = rows.sample(min(per_panel, len(rows)), random_state=0) if len(rows) else rows
        for r in rows.itertuples(index=False):
            e, m = np.asarray(r.energy, float), np.asarray(r.mu, float)
            lo, hi = real_range(e, m, tol)
            n = own_range_normalized(e, m, post, tol)
            ax.plot(e[lo:hi + 1] - e[lo], n, lw=0.9, label=f"{r.mp_id} {r.absorbing_element} ({r.source})")
        ax.set_title(f"{title} ({len(kept) if ax is axes[0] else len(rejected)} spectra)", fontsize=10)
        ax.set_xlabel("energy above the first point (eV)")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mu / edge step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    params = load_params()
    sites = pd.read_parquet("data/interim/sites.parquet")
    labels = pd.read_parquet("data/interim/labels.parquet")
    structures = pd.read_parquet(raw_path(params, "site_structures"))
    need = set(sites.loc[~sites["source"].isin(EXPERIMENTAL_SOURCES), "mp_id"])
    eq = equivalence_table(structures, need)
    a = params["assemble"]
    labeled, unlabeled, experimental, report = assemble(
        sites, labels, eq,
        exclude_elements=list(a["exclude_elements"]),
        max_negative_jump_threshold=float(a["max_negative_jump"]),
        train_sources=list(a["train_sources"]),
        source_priority=list(a["source_priority"]),
        post_edge_ev=float(get(params, "featurize.post_edge_ev")),
        flat_run_tol=float(get(params, "ingest.flat_run_tol")),
        simulated_sources=SIMULATED,
        simulated_required_elements=required_elements(params, sites),
        white_line=WhiteLineRule.from_params(params),
        keep_partial=True,
    )
    complete = labeled.pop("complete")
    partial, labeled = labeled[~complete], labeled[complete]
    report["materials"]["simulated_partial_for_any_edge"] = int(partial["mp_id"].nunique())
    # every source, measured ones too: they hold the real glitches (the rule applies only to its sources)
    report["unphysical_rule"] = unphysical_summary(
        sites, float(a["max_negative_jump"]), float(get(params, "featurize.post_edge_ev")),
        float(get(params, "ingest.flat_run_tol")), WhiteLineRule.from_params(params))
    white_line_figure(sites, params, Path("plots/quality/white_line.png"))
    report["structures_used_for_multiplicity"] = len(eq)
    out = Path("data/interim")
    labeled.to_parquet(out / "materials.parquet", index=False)
    partial.to_parquet(out / "partial_simulated.parquet", index=False)
    unlabeled.to_parquet(out / "unlabeled.parquet", index=False)
    experimental.to_parquet(out / "experimental.parquet", index=False)
    write_json("reports/assemble_quality.json", report)
    m = report["materials"]
    print(f"assemble: {m['labeled']} labeled materials ({m['labeled_records']} element records), "
          f"{m['unlabeled_for_screening']} unlabeled kept for screening")


if __name__ == "__main__":
    run_stage(main)
