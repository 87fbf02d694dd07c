"""Training of ``nn_any``: every element of a material is an absorber, spectra where present.

The network (:class:`xastopo.models.nn.AnyEdgeNet`) learns from every usable labeled material: the
composition always, the spectra wherever the assembled records have them. Two things keep it using
the spectra although only a few hundred of ~20,000 training materials carry one:

- **spectrum weight**: a material with at least one spectrum counts ``spectrum_weight`` times in the
  loss, so the spectral materials are not drowned by the composition-only ones;
- **spectrum dropout**: each present spectrum is hidden (``has_spectrum`` set to 0) with probability
  ``spectrum_dropout`` per batch, so the network learns to answer with any subset of edges and cannot
  lean on a spectrum being there.

Members of a small deep ensemble differ by seed; their logits are calibrated by one temperature and
one bias fitted on validation (Platt scaling), and their spread is the uncertainty (see :class:`CalibratedEnsemble`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from xastopo.models.nn import AnyEdgeNet

KEYS = ("X", "Z", "mask", "has_spectrum")


def tensors(a: dict, device: torch.device) -> list[torch.Tensor]:
    return [torch.as_tensor(a["X"], dtype=torch.float32, device=device),
            torch.as_tensor(a["Z"], dtype=torch.int64, device=device),
            torch.as_tensor(a["mask"], dtype=torch.float32, device=device),
            torch.as_tensor(a["has_spectrum"], dtype=torch.float32, device=device)]


@torch.no_grad()
def logits(net: AnyEdgeNet, a: dict, batch_size: int = 2048) -> np.ndarray:
    """Logits of a whole split (eval mode), float64 [N]."""
    net.eval()
    x, z, m, h = tensors(a, next(net.parameters()).device)
    out = [net(x[i:i + batch_size], z[i:i + batch_size], m[i:i + batch_size], h[i:i + batch_size])
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)


def sample_weights(a: dict, spectrum_weight: float) -> np.ndarray:
    """1 per material, ``spectrum_weight`` for a material with at least one spectrum."""
    has_any = (a["has_spectrum"] * a["mask"]).sum(axis=1) > 0
    return np.where(has_any, float(spectrum_weight), 1.0).astype(np.float32)


def _epoch(net, opt, loss_fn, t: list[torch.Tensor], y, w, batch_size: int, p_drop: float,
           gen: torch.Generator) -> float:
    """One pass over the training materials with spectrum dropout; the mean weighted loss."""
    net.train()
    x, z, m, h = t
    perm = torch.randperm(len(x), generator=gen)
    total = 0.0
    for i in range(0, len(perm), batch_size):
        idx = perm[i:i + batch_size]
        hb = h[idx]
        if p_drop > 0:
            hb = hb * (torch.rand(hb.shape, generator=gen) >= p_drop).float()
        opt.zero_grad()
        loss = (loss_fn(net(x[idx], z[idx], m[idx], hb), y[idx]) * w[idx]).sum() / w[idx].sum()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(x)


def train_member(net: AnyEdgeNet, train: dict, val: dict, cfg: dict, seed: int,
                 on_epoch: Callable[[dict], None] | None = None) -> tuple[AnyEdgeNet, list[dict], int]:
    """Train one member; early stopping on the weighted validation loss; best epoch's weights kept."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t = tensors(train, torch.device("cpu"))
    y, yv = (torch.as_tensor(a["y"], dtype=torch.float32) for a in (train, val))
    w = torch.as_tensor(sample_weights(train, cfg["spectrum_weight"]))
    wv = torch.as_tensor(sample_weights(val, cfg["spectrum_weight"]))
    n_pos = float(train["y"].sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(train["y"]) - n_pos) / max(n_pos, 1.0)),
                                   reduction="none")
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    best = (float("inf"), 0, copy.deepcopy(net.state_dict()))
    history: list[dict] = []
    for epoch in range(1, int(cfg["max_epochs"]) + 1):
        t0 = time.perf_counter()
        train_loss = _epoch(net, opt, loss_fn, t, y, w, int(cfg["batch_size"]), float(cfg["spectrum_dropout"]), gen)
        lv = torch.as_tensor(logits(net, val))
        val_loss = float((loss_fn(lv, yv) * wv).sum() / wv.sum())
        rec = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "seconds": time.perf_counter() - t0}
        history.append(rec)
        if on_epoch:
            on_epoch(rec)
        if val_loss < best[0] - 1e-6:
            best = (val_loss, epoch, copy.deepcopy(net.state_dict()))
        elif epoch - best[1] >= int(cfg["patience"]):
            break
    net.load_state_dict(best[2])
    net.eval()
    return net, history, best[1]


def fit_calibration(member_logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(temperature T, bias b) minimizing the log loss of mean_m sigmoid(logit_m / T + b) on validation."""
    from scipy.optimize import minimize

    def nll(theta: np.ndarray) -> float:
        p = ensemble_probs(member_logits, float(np.exp(theta[0])), float(theta[1]))[0]
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    res = minimize(nll, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-8})
    return float(np.exp(res.x[0])), float(res.x[1])


def ensemble_probs(member_logits: np.ndarray, temperature: float, bias: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over members of sigmoid(logit / T + b): the exported graph's two outputs."""
    p = 1.0 / (1.0 + np.exp(-(member_logits / temperature + bias)))
    return p.mean(axis=0), p.std(axis=0)


def calibration_stats(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict:
    """Expected calibration error (equal-width bins), Brier score and the reliability curve."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    curve, ece = [], 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            conf, acc = float(p[sel].mean()), float(y[sel].mean())
            ece += sel.mean() * abs(conf - acc)
            curve.append({"bin": b, "predicted": conf, "observed": acc, "n": int(sel.sum())})
    return {"ece": float(ece), "brier": float(np.mean((p - y) ** 2)), "curve": curve}


def view(a: dict, rows: np.ndarray | None = None, mode: str = "both") -> dict:
    """The arrays of ``rows`` as one ablation sees them: ``both`` (as is), ``composition`` (every
    element by type), ``spectra`` (only the elements with a spectrum, as the paper's network)."""
    out = {k: (v if rows is None else v[rows]) for k, v in a.items()}
    if mode == "composition":
        out["has_spectrum"] = np.zeros_like(out["has_spectrum"])
    elif mode == "spectra":
        out["mask"] = out["mask"] * out["has_spectrum"]
    elif mode != "both":
        raise ValueError(f"unknown ablation {mode!r}")
    return out


def test_sets(a: dict, shipped_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of the any-edge test arrays for the three reports: the shipped test materials (the
    paper's families' test split), the materials with every element's spectrum, and all of them
    (the large composition test set)."""
    present = a["mask"] > 0
    every = present.any(axis=1) & ((a["has_spectrum"] > 0) | ~present).all(axis=1)
    return {"shipped": np.flatnonzero(np.isin(a["ids"], shipped_ids)),
            "every_edge": np.flatnonzero(every),
            "all": np.arange(len(a["ids"]))}


def ablations(a: dict, rows: dict[str, np.ndarray], predict: Callable[[dict], np.ndarray],
              threshold: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per test set: scores of composition only, spectra only and both on the same materials, and the
    paired-bootstrap 95 % intervals of both − composition and both − spectra (materials with a spectrum)."""
    from xastopo.training.compare import RunPredictions, paired_bootstrap

    out: dict = {}
    for name, r in rows.items():
        if len(r) < 10:  # too few for an interval (e.g. every-edge test materials before they are simulated)
            out[name] = {"n": int(len(r)), "ids": a["ids"][r].tolist()}
            continue
        probs = {m: predict(view(a, r, m)) for m in ("composition", "both", "spectra")}
        runs = {m: RunPredictions(m, a["ids"][r], a["y"][r], p, threshold, None) for m, p in probs.items()}
        res = {"n": int(len(r)), "composition_vs_both": paired_bootstrap(runs["composition"], runs["both"],
                                                                          n_boot, seed)}
        with_spec = (a["has_spectrum"][r] * a["mask"][r]).sum(axis=1) > 0
        if with_spec.all():  # spectra only is defined where every material has one
            res["spectra_vs_both"] = paired_bootstrap(runs["spectra"], runs["both"], n_boot, seed)
        out[name] = res
    return out
