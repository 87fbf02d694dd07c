"""Pick what to simulate next: most whole materials (all edges) per CPU-hour, class-balanced,
covering elements, skipping what the shards and the cache already hold.

Ranking: estimated CPU seconds of the sites left, divided by (1 + 0.5 × elements not yet covered)
and by (1 + ``prefer_weight``) when the material has one of ``prefer_elements`` (the elements the
shipped spectra train and test on, so simulations also feed the elements the model is judged on).

With a ``value`` per material (the uncertainty mode: the served model's uncertainty, computed by the
caller, which may import the model; this layer does not), the plan instead takes the materials with the
most value per CPU-second of their sites left, greedily within the budget, classes unbalanced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .cache import SiteCache
from .inputs import computable_elements, formula_elements
from .pipeline import Material, prepare_materials, site_key
from .shards import load_manifest, read_shards

CLASSES = ("topological", "trivial")


@dataclass
class Plan:
    materials: list[Material]
    labels: dict[str, str]
    est_seconds: dict[str, float]
    counts_before: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.est_seconds.values()))

    def describe(self) -> str:
        n = {c: sum(1 for m in self.materials if self.labels.get(m.mp_id) == c) for c in CLASSES}
        els = sorted({j.element for m in self.materials for j in m.jobs})
        return (
            f"plan: {len(self.materials)} materials ({n['topological']} topological, {n['trivial']} trivial; "
            f"already complete {self.counts_before}), "
            f"{sum(len(m.jobs) for m in self.materials)} unique sites, {len(els)} elements, "
            f"estimated {self.total_seconds / 3600:.2f} CPU-h"
        )


def completed_materials(out: str | Path, cfg: dict[str, Any], meta: pd.DataFrame) -> set[str]:
    """Materials whose every computable element has all its unique sites in the shards."""
    df = read_shards(out, columns=["mp_id", "absorbing_element", "n_equivalent_classes_element"])
    return complete_in(df, cfg, meta)


def complete_in(df: pd.DataFrame, cfg: dict[str, Any], meta: pd.DataFrame) -> set[str]:
    """Materials whose every computable element has all its unique sites among the rows ``df``."""
    if df.empty:
        return set()
    got = df.groupby(["mp_id", "absorbing_element"]).agg(
        n=("absorbing_element", "size"), need=("n_equivalent_classes_element", "max")
    )
    ok_el = got[got.n >= got.need].reset_index().groupby("mp_id")["absorbing_element"].apply(set)
    formulas = meta.set_index("mp_id")["formula_sum"]
    done = set()
    for mp_id, els in ok_el.items():
        need = computable_elements(formulas.get(mp_id, ""), cfg)
        if need and need <= els:
            done.add(mp_id)
    return done


def cost_model(out: str | Path, cfg: dict[str, Any], meta: pd.DataFrame) -> tuple[float, float]:
    """(c0, c1) of seconds/site = c0 + c1 * n_sites(cell); fitted on shard timings when there are enough."""
    c0, c1 = float(cfg["cost_c0_s"]), float(cfg["cost_c1_s"])
    df = read_shards(out, columns=["mp_id", "seconds"])
    if len(df) >= 20:
        d = df.merge(meta[["mp_id", "n_sites"]], on="mp_id")
        if len(d) >= 20 and d.n_sites.nunique() > 2:
            a = np.vstack([np.ones(len(d)), d.n_sites.to_numpy(float)]).T
            (f0, f1), *_ = np.linalg.lstsq(a, d.seconds.to_numpy(float), rcond=None)
            if f0 > 0 and f1 >= 0:
                c0, c1 = float(f0), float(f1)
    return c0, c1


def _candidates(
    cfg: dict[str, Any], raw_dir: Path, out: str | Path, elements: list[str] | None,
    value: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(labeled structures, plannable candidates, complete materials per class before this plan)."""
    labels = pd.read_csv(raw_dir / cfg["labels_csv"], usecols=["mp_id", "label"])
    labels = labels[labels.label.isin(CLASSES)]
    meta = pd.read_parquet(raw_dir / cfg["structures"], columns=["mp_id", "n_sites", "formula_sum"])
    meta = meta.merge(labels, on="mp_id")
    # element mode: completeness is per site (a material with all its sites of ``elements`` is skipped
    # later, when its jobs are matched against the shards and the cache)
    done = set() if elements else completed_materials(out, cfg, meta)
    counts_before = {c: int(meta[meta.mp_id.isin(done)].label.eq(c).sum()) for c in CLASSES}
    failed = {f["mp_id"] for f in load_manifest(out).get("failures", [])}
    excl = set(cfg["exclude_elements"])
    els = meta.formula_sum.map(formula_elements)
    ok = ~meta.mp_id.isin(done | failed) & (meta.n_sites <= int(cfg["max_sites"]))
    ok &= ~els.map(excl.intersection).astype(bool)
    if elements:
        ok &= els.map(set(elements).intersection).astype(bool)
    if value is not None:
        ok &= meta.mp_id.isin(set(value))
    return meta, meta[ok].copy(), counts_before


def _shortlist(
    cand: pd.DataFrame, cfg: dict[str, Any], k: int, elements: list[str] | None,
    value: dict[str, float] | None = None, cost: tuple[float, float] = (1.0, 0.0),
) -> pd.DataFrame:
    """The cheapest ``k`` cells per class, plus per preferred element group, so those are not crowded out;
    with ``value``, the ``2k`` cells of most value per estimated second (every atom a unique site: the
    sites are only known once the structure is read)."""
    rng = np.random.default_rng(int(cfg["seed"]))
    cand["tie"] = rng.random(len(cand))
    if value is not None:
        n = cand.n_sites.to_numpy(float)
        cand["per_s"] = cand.mp_id.map(value).to_numpy(float) / (n * (cost[0] + cost[1] * n))
        return cand.sort_values(["per_s", "tie"], ascending=[False, True]).head(2 * k).reset_index(drop=True)
    prefer = set(cfg.get("prefer_elements") or [])
    prefer_weight = float(cfg.get("prefer_weight", 0.0))
    by_size = cand.sort_values(["n_sites", "tie"])
    parts = [by_size.groupby("label", group_keys=False).head(k)]
    if prefer_weight > 0:
        preferred = by_size.formula_sum.map(lambda f: bool(formula_elements(f) & prefer))
        parts.append(by_size[preferred].groupby("label", group_keys=False).head(k))
    for el in elements or []:
        has = by_size.formula_sum.map(lambda f, el=el: el in formula_elements(f))
        parts.append(by_size[has].groupby("label", group_keys=False).head(k))
    return pd.concat(parts).drop_duplicates("mp_id").reset_index(drop=True)


def _sites_left(m: Material, cfg: dict[str, Any], have: set[str], cache: SiteCache) -> list | None:
    """The jobs of ``m`` not yet in the shards or the cache; None when one of them failed before."""
    left = []
    for j in m.jobs:
        key = site_key(m, j, cfg)
        if key in have:
            continue
        hit = cache.get(key)
        if hit is not None and hit.get("ok"):
            continue
        if hit is not None:  # a recorded failure: the material cannot be completed
            return None
        left.append(j)
    return left


def _pool(
    mats: list[Material], cfg: dict[str, Any], out: str | Path, meta: pd.DataFrame,
    cost: tuple[float, float], have: set[str],
) -> tuple[dict[str, list[tuple[float, Material]]], dict[str, float]]:
    """Per class, (estimated CPU seconds of the sites left, material), cheapest first; and the estimates."""
    cache = SiteCache(Path(out) / "cache")
    n_sites = meta.set_index("mp_id")["n_sites"]
    lab = meta.set_index("mp_id")["label"]
    pool: dict[str, list[tuple[float, Material]]] = {c: [] for c in CLASSES}
    est: dict[str, float] = {}
    for m in mats:
        left = _sites_left(m, cfg, have, cache) if m.jobs else None
        if not left:  # nothing to do, or a recorded failure
            continue
        est[m.mp_id] = len(left) * (cost[0] + cost[1] * float(n_sites[m.mp_id]))
        pool[lab[m.mp_id]].append((est[m.mp_id], m))
    for c in CLASSES:
        pool[c].sort(key=lambda t: t[0])
    return pool, est


def _choose(
    pool: dict[str, list[tuple[float, Material]]],
    counts: dict[str, int],
    target: int,
    budget_s: float | None,
    rank: Any,
) -> list[Material]:
    """Greedy, class-balanced pick: the class that is behind takes its best-ranked material next."""
    chosen: list[Material] = []
    covered: set[str] = set()
    spent = 0.0
    while len(chosen) < target and (pool["topological"] or pool["trivial"]):
        c = min((c for c in CLASSES if pool[c]), key=lambda c: counts[c])
        best_i = min(range(min(len(pool[c]), 200)), key=lambda i: rank(*pool[c][i], covered))
        cost, m = pool[c].pop(best_i)
        if budget_s is not None and spent + cost > budget_s:
            if not chosen:
                chosen.append(m)
            break
        chosen.append(m)
        spent += cost
        counts[c] += 1
        covered |= {j.element for j in m.jobs}
    return chosen


def _choose_by_value(
    pool: dict[str, list[tuple[float, Material]]], value: dict[str, float], target: int, budget_s: float | None
) -> list[Material]:
    """Most value per estimated CPU-second first, until ``target`` materials or the budget (a material
    that does not fit is passed over for cheaper ones; as in the default plan, a budget smaller than every
    material still plans the best-ranked one)."""
    ranked = sorted((t for c in CLASSES for t in pool[c]), key=lambda t: (-value[t[1].mp_id] / t[0], t[1].mp_id))
    chosen: list[Material] = []
    spent = 0.0
    for cost, m in ranked:
        if len(chosen) >= target:
            break
        if budget_s is not None and spent + cost > budget_s:
            continue
        chosen.append(m)
        spent += cost
    if not chosen and ranked and target > 0:
        chosen.append(ranked[0][1])
    return chosen


def plan(
    cfg: dict[str, Any],
    raw_dir: Path,
    out: str | Path,
    n_materials: int | None = None,
    budget_cpu_hours: float | None = None,
    shortlist_factor: int = 3,
    elements: list[str] | None = None,
    value: dict[str, float] | None = None,
) -> Plan:
    """Pick the next materials to simulate (see the module docstring for the ranking).

    With ``elements`` only those absorbing elements' sites are planned, for every labeled material
    that has one, in the order given (the first element's materials first), class-balanced.
    With ``value`` (material id → value, e.g. the model's uncertainty) only materials that have one
    are planned, most value per CPU-second first.
    """
    if n_materials is None and budget_cpu_hours is None:
        raise ValueError("give a material count or a CPU-hour budget")
    meta, cand, counts_before = _candidates(cfg, raw_dir, out, elements, value)
    target = n_materials if n_materials is not None else 10**9
    c0, c1 = cost_model(out, cfg, meta)
    if budget_cpu_hours is not None:
        per_mat_min = c0 + c1 * max(1, int(cand.n_sites.min()) if len(cand) else 1)
        target = min(target, int(budget_cpu_hours * 3600 / per_mat_min) + 1)
    short = _shortlist(cand, cfg, max(50, shortlist_factor * target), elements, value, (c0, c1))
    from .pipeline import load_structures
    from .shards import shard_keys

    texts = load_structures(raw_dir / cfg["structures"], short.mp_id.tolist()).set_index("mp_id")["cif"]
    mats, skipped = prepare_materials(texts.to_dict(), cfg, only_elements=elements)
    lab = meta.set_index("mp_id")["label"]
    pool, est = _pool(mats, cfg, out, meta, (c0, c1), shard_keys(out))
    prefer = set(cfg.get("prefer_elements") or [])
    prefer_weight = float(cfg.get("prefer_weight", 0.0))
    order = {e: i for i, e in enumerate(elements or [])}

    def rank(cost: float, m: Material, covered: set[str]) -> tuple[int, float]:
        els = {j.element for j in m.jobs}
        first = min((order[e] for e in els if e in order), default=0)
        return first, cost / (1.0 + 0.5 * len(els - covered)) / (1.0 + prefer_weight * bool(els & prefer))

    if elements:  # the first element's materials first: sort the pools by that, then by cost
        for c in CLASSES:
            pool[c].sort(key=lambda t: rank(t[0], t[1], set()))
    budget_s = None if budget_cpu_hours is None else budget_cpu_hours * 3600.0
    if value is not None:
        chosen = _choose_by_value(pool, value, target, budget_s)
    else:
        chosen = _choose(pool, dict(counts_before), target, budget_s, rank)
    # cheapest first inside the plan so whole materials complete early (element order kept first)
    chosen.sort(key=lambda m: (rank(est[m.mp_id], m, set())[0], est[m.mp_id]))
    return Plan(
        chosen,
        {m.mp_id: str(lab[m.mp_id]) for m in chosen},
        {m.mp_id: est[m.mp_id] for m in chosen},
        counts_before,
        skipped,
    )
