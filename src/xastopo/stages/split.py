"""DVC stage `split`: 70/15/15 per element × 3-class, seeded; writes the split and its count table.

Materials made only of ``split.train_only_sources`` spectra (our FEFF10 simulations) always train:
validation and test stay the shipped materials, split exactly as without them, so a model trained
with and without the simulations is judged on the same test materials.
"""

from __future__ import annotations

import pandas as pd

from xastopo.config import get, load_params
from xastopo.data.split import split_materials, split_table
from xastopo.stages.common import run_stage


def main() -> None:
    params = load_params()
    records = pd.read_parquet("data/interim/materials.parquet",
                              columns=["mp_id", "absorbing_element", "label3", "sources"])
    s = params["split"]
    split = split_materials(records, (float(s["train"]), float(s["val"]), float(s["test"])),
                            int(get(params, "base.seed")), train_only_sources=list(s["train_only_sources"]))
    split.to_csv("data/interim/split.csv", index=False)
    table = split_table(records, split)
    table.to_csv("reports/split_counts.csv", index=False)
    print(split["split"].value_counts().to_string())


if __name__ == "__main__":
    run_stage(main)
