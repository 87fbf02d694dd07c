"""DVC stage `sensitivity`: F1 per class against energy sampling, misalignment and noise (issue 13).

- Sampling: the paper's network (``nn``) retrained at each ``sensitivity.n_points`` over the same
  56 eV window (:mod:`xastopo.training.sensitivity`), scored on the shipped test materials.
- Misalignment and noise: the exported champion, unchanged, through the one prediction path
  (:class:`xastopo.inference.Predictor`) on the shipped test materials' raw spectra with their formula,
  each spectrum shifted by δ eV, or with Gaussian noise of σ × its own edge step added (seeded; several
  draws averaged).
Every F1 has a 95 % bootstrap interval (65 test materials). Writes ``reports/sensitivity.json`` (metrics),
``plots/sensitivity/{sampling,shift,noise}.json`` (DVC plots) and one PNG with the three panels.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from xastopo.config import load_params, model_dir, raw_path
from xastopo.data.composition import material_formulas
from xastopo.data.quality import edge_step
from xastopo.inference import MaterialSites, Predictor
from xastopo.preprocessing.dataset import record_sites
from xastopo.stages.common import run_stage, write_json
from xastopo.training.sensitivity import f1_with_intervals, sampling_point, train_nn_at

PLOTS = Path("plots/sensitivity")


def test_materials(params: dict, records: pd.DataFrame) -> tuple[list[MaterialSites], np.ndarray]:
    """The shipped test materials (their raw sites and formula) and their labels, in id order."""
    labels = pd.read_csv(raw_path(params, "labels_csv"))
    f = material_formulas(labels, raw_path(params, "structures"), raw_path(params, "site_structures"))
    formulas = dict(zip(f["mp_id"], f["formula"], strict=True))
    test = records[(records["split"] == "test") & (records["pool"] == "spectra")]
    mats, ys = [], []
    for mp, g in test.groupby("mp_id", sort=True):
        spectra = {r.absorbing_element: record_sites(r) for r in g.itertuples(index=False)}
        mats.append(MaterialSites(str(mp), spectra, formula=formulas.get(mp)))
        ys.append(int(g["y"].iloc[0]))
    return mats, np.asarray(ys)


def perturbed(mats: list[MaterialSites], shift: float = 0.0, noise: float = 0.0,
              rng: np.random.Generator | None = None, post_edge_ev: float = 5.0) -> list[MaterialSites]:
    """Every site spectrum shifted by ``shift`` eV and/or with N(0, (noise × edge step)²) added."""
    out = []
    for m in mats:
        spectra = {}
        for el, sites in m.spectra.items():
            new = []
            for e, mu, w in sites:
                e, mu = np.asarray(e, float), np.asarray(mu, float)
                if noise > 0:
                    step = abs(edge_step(e, mu, post_edge_ev)[1])
                    mu = mu + rng.normal(0.0, noise * step, size=mu.shape)
                new.append((e + shift, mu, w))
            spectra[el] = new
        out.append(MaterialSites(m.material_id, spectra, formula=m.formula))
    return out


def champion_scores(predictor: Predictor, mats: list[MaterialSites], y: np.ndarray, n_boot: int,
                    seed: int) -> tuple[dict, np.ndarray]:
    """(F1 with intervals, probabilities) of the champion on (perturbed) materials. A material the
    perturbation made unusable (spectrum off the window) is scored with the answer the user then gets:
    the composition-only one for a champion that reads compositions; a spectra-only champion has none,
    so such a material is left out of that point's score (NaN probability; ``unusable`` counts it)."""
    inputs = predictor.build(mats)
    answers = predictor.predict_inputs(inputs)
    bad = [e.index for e in inputs.errors]
    if bad and predictor.reads_composition:
        fallback = predictor.predict_inputs(predictor.build([MaterialSites(mats[i].material_id, {},
                                                                           formula=mats[i].formula) for i in bad]))
        for i, a in zip(bad, fallback, strict=True):
            answers[i] = a
    prob = np.array([np.nan if a is None else a.probability_topological for a in answers])
    keep = np.isfinite(prob)
    out = f1_with_intervals(y[keep], prob[keep], predictor.threshold, n_boot, seed)
    out["unusable"] = len(bad)
    return out, prob


def figure(sampling: list[dict], shift: list[dict], noise: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, rows, x, title in ((axes[0], sampling, "spacing_ev", "energy sampling (retrained nn)"),
                               (axes[1], shift, "shift_ev", "misalignment (champion)"),
                               (axes[2], noise, "noise", "noise / edge step (champion)")):
        xs = [r[x] for r in rows]
        for cls, color in (("topological", "tab:red"), ("trivial", "tab:blue")):
            f = np.array([r["test"][cls]["f1"] for r in rows])
            lo = np.array([r["test"][cls]["lo"] for r in rows])
            hi = np.array([r["test"][cls]["hi"] for r in rows])
            ax.plot(xs, f, "o-", color=color, label=cls)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel({"spacing_ev": "spacing (eV)", "shift_ev": "shift (eV)", "noise": "σ / edge step"}[x])
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test F1 (95 % bootstrap)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rows(rows: list[dict], x: str) -> list[dict]:
    return [{x: r[x], "class": cls, "f1": r["test"][cls]["f1"], "lo": r["test"][cls]["lo"], "hi": r["test"][cls]["hi"]}
            for r in rows for cls in ("topological", "trivial")]


def main() -> None:
    params = load_params()
    cfg, seed = params["sensitivity"], int(params["base"]["seed"])
    n_boot = int(cfg["n_boot"])
    split = pd.read_csv("data/interim/split.csv")
    records = pd.read_parquet("data/interim/materials.parquet").merge(split, on="mp_id")
    # the featurize stage's selection for the paper's families: shipped pool, plus simulated-only train
    records = records[(records["pool"] == "spectra") | (records["split"] == "train")]

    t0 = time.perf_counter()
    fit = train_nn_at(dict(params[cfg["family"]]), seed)
    sampling = [sampling_point(params, records, int(n), seed, n_boot, fit) for n in cfg["n_points"]]
    t_sampling = time.perf_counter() - t0

    predictor = Predictor(model_dir(params), prefer_gpu=False)
    mats, y = test_materials(params, records)
    post = float(params["featurize"]["post_edge_ev"])
    shift, noise = [], []
    for d in sorted(set(float(v) for v in cfg["shifts_ev"]) | {0.0}):
        res, _ = champion_scores(predictor, perturbed(mats, shift=d), y, n_boot, seed)
        shift.append({"shift_ev": d, "test": res})
    rng = np.random.default_rng(seed)
    for s in sorted(set(float(v) for v in cfg["noise"]) | {0.0}):
        draws = [champion_scores(predictor, perturbed(mats, noise=s, rng=rng, post_edge_ev=post), y, n_boot, seed)
                 for _ in range(1 if s == 0 else int(cfg["noise_draws"]))]
        prob = np.mean([p for _, p in draws], axis=0)  # the draws' mean answer per material
        keep = np.isfinite(prob)
        res = f1_with_intervals(y[keep], prob[keep], predictor.threshold, n_boot, seed)
        res["unusable"] = int(np.mean([r["unusable"] for r, _ in draws]))
        noise.append({"noise": s, "test": res})

    PLOTS.mkdir(parents=True, exist_ok=True)
    panels = (("sampling", sampling, "spacing_ev"), ("shift", shift, "shift_ev"), ("noise", noise, "noise"))
    for name, rows, x in panels:
        write_json(PLOTS / f"{name}.json", plot_rows(rows, x))
    figure(sampling, shift, noise, PLOTS / "sensitivity.png")
    write_json("reports/sensitivity.json", {
        "sampling": {f"{r['n_points']}pts": {"spacing_ev": round(r["spacing_ev"], 3), **r["test"],
                                             "val_macro_f1": r["val_macro_f1"]} for r in sampling},
        "shift": {f"{r['shift_ev']:+g}eV": r["test"] for r in shift},
        "noise": {f"{r['noise']:g}": r["test"] for r in noise},
        "n_test_materials": int(len(y)), "sampling_seconds": round(t_sampling, 1)})
    print({f"{r['n_points']}": round(r["test"]["macro_f1"]["f1"], 3) for r in sampling},
          {r["shift_ev"]: round(r["test"]["macro_f1"]["f1"], 3) for r in shift},
          {r["noise"]: round(r["test"]["macro_f1"]["f1"], 3) for r in noise})


if __name__ == "__main__":
    run_stage(main)
