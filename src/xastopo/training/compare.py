"""Compare one model between two pipeline runs on the same test materials (paired bootstrap).

Used to judge a change of training data (e.g. adding the FEFF10 simulations): each run is a
workspace after `dvc repro` (its ``metrics/<model>.json`` and ``plots/<model>/predictions_<split>.csv``).
With 65 test materials one F1 moves by several points from a single flipped material, so the
difference comes with a paired bootstrap interval over the materials rather than as a bare number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xastopo.training.metrics import evaluate

SCORES = ("topological_f1", "trivial_f1", "macro_f1", "auc")


class CompareError(ValueError):
    """The two runs cannot be compared (missing files, different materials)."""


@dataclass
class RunPredictions:
    """One model's predictions on one split of one run, with its validation-chosen threshold."""

    name: str
    ids: np.ndarray
    y: np.ndarray
    prob: np.ndarray
    threshold: float
    n_train: int | None


def load_run(run_dir: str | Path, model: str, split: str = "test", name: str | None = None) -> RunPredictions:
    d = Path(run_dir)
    mfile, pfile = d / "metrics" / f"{model}.json", d / "plots" / model / f"predictions_{split}.csv"
    for f in (mfile, pfile):
        if not f.is_file():
            raise CompareError(f"{f}: not found (run `dvc repro` in {d} first)")
    metrics = json.loads(mfile.read_text())
    pred = pd.read_csv(pfile).sort_values("mp_id").reset_index(drop=True)
    feat = d / "reports" / "featurize.json"
    n_train = json.loads(feat.read_text())["splits"]["train"]["materials"] if feat.is_file() else None
    return RunPredictions(name or str(d), pred["mp_id"].to_numpy(), pred["y"].to_numpy(int),
                          pred["prob"].to_numpy(float), float(metrics["threshold"]), n_train)


def scores(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    """The headline scores, computed by the same evaluation as the train stage's metrics."""
    ev = evaluate(y, prob, threshold)
    return {"topological_f1": ev["topological"]["f1"], "trivial_f1": ev["trivial"]["f1"],
            "macro_f1": ev["macro_f1"], "auc": ev["auc"]}


def paired_bootstrap(a: RunPredictions, b: RunPredictions, n_boot: int = 2000, seed: int = 0) -> dict:
    """Scores of a and b on the same materials, and the b − a difference with a 95 % interval."""
    if len(a.ids) != len(b.ids) or not np.array_equal(a.ids, b.ids):
        only_a = sorted(set(a.ids) - set(b.ids))
        only_b = sorted(set(b.ids) - set(a.ids))
        raise CompareError(f"not the same test materials: {len(only_a)} only in {a.name} {only_a[:3]}, "
                           f"{len(only_b)} only in {b.name} {only_b[:3]}")
    if not np.array_equal(a.y, b.y):
        raise CompareError("same materials but different labels: the runs used different label files")
    rng = np.random.default_rng(seed)
    n = len(a.y)
    diffs = {k: [] for k in SCORES}
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        sa, sb = scores(a.y[i], a.prob[i], a.threshold), scores(b.y[i], b.prob[i], b.threshold)
        for k in SCORES:
            diffs[k].append(sb[k] - sa[k])
    sa, sb = scores(a.y, a.prob, a.threshold), scores(b.y, b.prob, b.threshold)
    out = {"n_materials": n, "n_boot": n_boot, "a": a.name, "b": b.name,
           "n_train": {"a": a.n_train, "b": b.n_train}, "scores": {}}
    for k in SCORES:
        d = np.asarray(diffs[k])
        d = d[np.isfinite(d)]
        lo, hi = np.quantile(d, [0.025, 0.975])
        out["scores"][k] = {"a": sa[k], "b": sb[k], "diff": sb[k] - sa[k], "ci95": [float(lo), float(hi)],
                            "p_b_better": float((d > 0).mean())}
    return out


def comparison_markdown(res: dict, label_a: str, label_b: str, split: str = "test") -> str:
    n_tr = res["n_train"]
    lines = [f"Same {res['n_materials']} {split} materials; difference {label_b} − {label_a} with a paired "
             f"bootstrap 95 % interval ({res['n_boot']} resamples of the materials).", "",
             f"| score | {label_a} (train {n_tr['a']}) | {label_b} (train {n_tr['b']}) | difference | 95 % interval |",
             "|---|---|---|---|---|"]
    for k in SCORES:
        s = res["scores"][k]
        lines.append(f"| {k.replace('_', ' ')} | {s['a']:.2f} | {s['b']:.2f} | {s['diff']:+.2f} | "
                     f"[{s['ci95'][0]:+.2f}, {s['ci95'][1]:+.2f}] |")
    return "\n".join(lines) + "\n"
