"""DVC stage `split`: one 70/15/15 split of every usable labeled material, per element × 3-class.

Materials with shipped spectra are split among themselves exactly as before (the shipped validation
and test materials never move); every other labeled material, including those with only our FEFF10
simulations (``split.train_only_sources``), is split by the elements of its formula. Writes
``data/interim/split.csv`` (mp_id, split, pool), the shipped pool's count table and the pools' counts.
"""

from __future__ import annotations

import pandas as pd

from xastopo.config import get, load_params, raw_path
from xastopo.data.composition import labeled_compositions
from xastopo.data.split import split_all, split_table
from xastopo.stages.common import run_stage, write_json


def main() -> None:
    params = load_params()
    records = pd.read_parquet("data/interim/materials.parquet",
                              columns=["mp_id", "absorbing_element", "label3", "sources"])
    s = params["split"]
    comp = labeled_compositions(pd.read_csv(raw_path(params, "labels_csv")), raw_path(params, "structures"),
                                raw_path(params, "site_structures"))
    split = split_all(records, comp, (float(s["train"]), float(s["val"]), float(s["test"])),
                      int(get(params, "base.seed")), train_only_sources=list(s["train_only_sources"]))
    split.to_csv("data/interim/split.csv", index=False)
    shipped = split[split["pool"] == "spectra"]
    table = split_table(records[records["mp_id"].isin(shipped["mp_id"])], shipped)
    table.to_csv("reports/split_counts.csv", index=False)
    labels = comp.set_index("mp_id")["label"]
    counts = {pool: {sp: {c: int(n) for c, n in g["mp_id"].map(labels).value_counts().sort_index().items()}
                     for sp, g in gp.groupby("split")} for pool, gp in split.groupby("pool")}
    write_json("reports/split_pools.json", counts)
    print(split.groupby(["pool", "split"]).size().to_string())


if __name__ == "__main__":
    run_stage(main)
