"""DVC stage `assemble`: validated sites → (material, element) records with labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xastopo.config import get, load_params, raw_path
from xastopo.data.assemble import assemble
from xastopo.data.ingest import EXPERIMENTAL_SOURCES
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
    )
    report["structures_used_for_multiplicity"] = len(eq)
    out = Path("data/interim")
    labeled.to_parquet(out / "materials.parquet", index=False)
    unlabeled.to_parquet(out / "unlabeled.parquet", index=False)
    experimental.to_parquet(out / "experimental.parquet", index=False)
    write_json("reports/assemble_quality.json", report)
    m = report["materials"]
    print(f"assemble: {m['labeled']} labeled materials ({m['labeled_records']} element records), "
          f"{m['unlabeled_for_screening']} unlabeled kept for screening")


if __name__ == "__main__":
    run_stage(main)
