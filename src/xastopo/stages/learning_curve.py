"""DVC stage `learning_curve`: per-element learning curves, shipped then simulated spectra (issue 12).

For each element of ``learning_curve.elements`` (the shipped test materials' elements), an SVM on
that element's standardized spectrum is trained on growing subsets (:mod:`xastopo.training.learning_curve`)
and scored on the shipped validation and test materials of the element. The simulated (FEFF10) spectra
are assembled here from the ingested shards as the assemble stage would (same unphysical-spectrum rule,
multiplicity weights from the shards) but without requiring every edge of a material: a Cu-only
simulation is a training example of the Cu curve. Only materials of the training split train.
Writes ``reports/learning_curve.json`` (metrics), ``plots/learning_curve/<element>.json`` (DVC plots) and
``plots/learning_curve/learning_curve.png``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xastopo.config import get, load_params
from xastopo.data.assemble import assemble
from xastopo.data.quality import WhiteLineRule
from xastopo.data.validation import SpectrumError
from xastopo.preprocessing.dataset import record_sites
from xastopo.preprocessing.preprocessor import Preprocessor
from xastopo.simulate.shards import SOURCE as SIMULATED
from xastopo.stages.common import run_stage, write_json
from xastopo.training.learning_curve import ElementData, plan, step, transfer_checks

PLOTS = "plots/learning_curve"


def simulated_records(params: dict, elements: list[str]) -> pd.DataFrame:
    """Labeled (material, element) records of the simulated sites of ``elements``."""
    sites = pd.read_parquet("data/interim/sites.parquet")
    sites = sites[(sites["source"] == SIMULATED) & sites["absorbing_element"].isin(elements)]
    labels = pd.read_parquet("data/interim/labels.parquet")
    a = params["assemble"]
    labeled, _, _, _ = assemble(sites, labels, {}, exclude_elements=list(a["exclude_elements"]),
                                max_negative_jump_threshold=float(a["max_negative_jump"]),
                                train_sources=[SIMULATED], source_priority=[SIMULATED],
                                post_edge_ev=float(get(params, "featurize.post_edge_ev")),
                                flat_run_tol=float(get(params, "ingest.flat_run_tol")),
                                white_line=WhiteLineRule.from_params(params))
    return labeled


def vectors(pre: Preprocessor, records: pd.DataFrame, with_ids: bool = False):
    """(X, y, rejected[, ids]) of one element's records through the fitted preprocessing."""
    xs, ys, ids, bad = [], [], [], 0
    for r in records.itertuples(index=False):
        try:
            xs.append(pre.transform(r.absorbing_element, record_sites(r)))
            ys.append(int(r.y))
            ids.append(r.mp_id)
        except SpectrumError:
            bad += 1
    out = (np.asarray(xs, np.float32).reshape(-1, pre.n_points), np.asarray(ys, np.int64), bad)
    return (*out, ids) if with_ids else out


def transfer(pre: Preprocessor, el: str, shipped: pd.DataFrame, sim_all: pd.DataFrame, train: tuple,
             cfg: dict, seed: int) -> dict:
    """:func:`transfer_checks` for one element: simulated = every simulated material of the element that is
    not a shipped training material (evaluation only), paired = materials with both codes' spectra."""
    sim = sim_all[(sim_all["absorbing_element"] == el)]
    xm, ym, _, mid = vectors(pre, sim[~sim["mp_id"].isin(shipped.loc[shipped["split"] == "train", "mp_id"])],
                             with_ids=True)
    xs, _, _, sid = vectors(pre, shipped[shipped["absorbing_element"] == el], with_ids=True)
    xa, _, _, aid = vectors(pre, sim, with_ids=True)
    both = sorted(set(sid) & set(aid))
    fs, fa = dict(zip(sid, xs, strict=True)), dict(zip(aid, xa, strict=True))
    paired = (np.asarray([fs[m] for m in both]), np.asarray([fa[m] for m in both]))
    return transfer_checks(train, (xm, ym), paired, cfg, seed)


def figure(rows: list[dict], path: str, elements: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    els = [el for el in elements if any(r["element"] == el for r in rows)]
    if not els:
        return
    fig, axes = plt.subplots(1, len(els), figsize=(5.5 * len(els), 4.0), squeeze=False)
    for ax, el in zip(axes[0], els, strict=True):
        for setting, marker in (("shipped", "o-"), ("shipped+simulated", "s-"), ("simulated only", "^")):
            rr = [r for r in rows if r["element"] == el and r["setting"] == setting and r.get("test", {}).get("auc")]
            if setting == "shipped+simulated":  # the curve continues from the last shipped point
                rr = [r for r in rows if r["element"] == el and r["setting"] == "shipped"
                      and r["n_simulated"] == 0 and r.get("test", {}).get("auc")][-1:] + rr
            if not rr:
                continue
            x = [r["n_train"] for r in rr]
            for split, alpha in (("val", 0.5), ("test", 1.0)):
                ax.plot(x, [r[split]["auc"]["value"] for r in rr], marker, alpha=alpha,
                        label=f"{setting} ({split})", ms=4)
            ax.fill_between(x, [r["test"]["auc"]["lo"] for r in rr], [r["test"]["auc"]["hi"] for r in rr], alpha=0.1)
        n_val, n_test = (next(r[s]["n"] for r in rows if r["element"] == el and s in r) for s in ("val", "test"))
        ax.set_title(f"{el} K edge ({n_val} val / {n_test} test materials)", fontsize=10)
        ax.set_xlabel("training materials (shipped, then + simulated)")
        ax.set_ylim(0.3, 1.0)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("AUC (shipped val / test)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    params = load_params()
    cfg, seed = params["learning_curve"], int(params["base"]["seed"])
    elements = list(cfg["elements"])
    pre = Preprocessor.load("models/preprocessor.json")
    split = pd.read_csv("data/interim/split.csv")
    shipped = pd.read_parquet("data/interim/materials.parquet").merge(split, on="mp_id")
    shipped = shipped[shipped["pool"] == "spectra"]
    sim_all = simulated_records(params, elements).merge(split, on="mp_id")
    sim = sim_all[(sim_all["split"] == "train") & ~sim_all["mp_id"].isin(shipped["mp_id"])]
    rows, summary = [], {}
    for el in elements:
        if el not in pre.elements:
            continue
        parts = {s: vectors(pre, shipped[(shipped["absorbing_element"] == el) & (shipped["split"] == s)])
                 for s in ("train", "val", "test")}
        simv = vectors(pre, sim[sim["absorbing_element"] == el])
        d = ElementData(el, {s: (x, y) for s, (x, y, _) in parts.items()}, (simv[0], simv[1]))
        el_rows = []
        for n_s, n_m, setting in plan(len(parts["train"][1]), len(simv[1]), list(cfg["fractions"]),
                                      list(cfg["simulated_steps"])):
            r = step(d, n_s, n_m, params[cfg["family"]], int(cfg["repeats"]), seed, int(cfg["n_boot"]))
            r["setting"] = setting
            el_rows.append(r)
        rows += el_rows
        summary[el] = {"transfer": transfer(pre, el, shipped, sim_all, (parts["train"][0], parts["train"][1]),
                                            params[cfg["family"]], seed),
                       "shipped_train": int(len(parts["train"][1])), "simulated_train": int(len(simv[1])),
                       "val": int(len(parts["val"][1])), "test": int(len(parts["test"][1])),
                       "simulated_rejected": int(simv[2]),
                       "steps": {f"{r['setting']}:{r['n_shipped']}+{r['n_simulated']}":
                                 {s: r[s]["auc"]["value"] for s in ("val", "test") if r.get(s, {}).get("auc")}
                                 for r in el_rows}}
        write_json(f"{PLOTS}/{el}.json", [
            {"n_train": r["n_train"], "setting": r["setting"], "split": s, "auc": r[s]["auc"]["value"],
             "lo": r[s]["auc"]["lo"], "hi": r[s]["auc"]["hi"],
             "macro_f1": r[s]["macro_f1"]["value"] if r[s]["macro_f1"] else None}
            for r in el_rows for s in ("val", "test") if r.get(s, {}).get("auc")])
    # the figure shows the elements with enough validation and test materials to read a curve
    shown = [el for el, v in summary.items() if min(v["val"], v["test"]) >= int(cfg["min_eval_materials"])]
    figure(rows, f"{PLOTS}/learning_curve.png", shown)
    write_json("reports/learning_curve.json", {"elements": summary, "rows": rows})
    for el, v in summary.items():
        print(el, {k: v[k] for k in ("shipped_train", "simulated_train", "val", "test")})


if __name__ == "__main__":
    run_stage(main)
