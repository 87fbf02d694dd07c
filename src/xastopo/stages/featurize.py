"""DVC stage `featurize`: fit the Preprocessor on train, write model-ready arrays per split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from xastopo.config import load_params
from xastopo.preprocessing.dataset import featurize_split, fit_preprocessor, save_arrays
from xastopo.preprocessing.preprocessor import Preprocessor
from xastopo.stages.common import run_stage, write_json


def main() -> None:
    params = load_params()
    records = pd.read_parquet("data/interim/materials.parquet")
    split = pd.read_csv("data/interim/split.csv")
    records = records.merge(split, on="mp_id")
    pre, fit_rejects = fit_preprocessor(Preprocessor.from_params(params), records[records["split"] == "train"])
    sha = pre.save("models/preprocessor.json")
    report: dict = {"preprocessor_sha256": sha, "fit_rejected": dict(fit_rejects), "splits": {}}
    for name in ("train", "val", "test"):
        arrays, rejects = featurize_split(pre, records[records["split"] == name], desc=f"featurize {name}")
        save_arrays(arrays, Path(f"data/features/{name}.npz"))
        report["splits"][name] = {
            "materials": int(len(arrays["ids"])),
            "topological": int(arrays["y"].sum()),
            "max_absorbers": int(arrays["Z"].shape[1]),
            "rejected": dict(sorted(Counter(rejects).items())),
        }
    report["windows"] = {el: {"lo": w.lo, "hi": w.hi, "span_ev": round(w.hi - w.lo, 3), "n_train": w.n_train}
                         for el, w in pre.elements.items()}
    write_json("reports/featurize.json", report)
    print({k: v["materials"] for k, v in report["splits"].items()})


if __name__ == "__main__":
    run_stage(main)
