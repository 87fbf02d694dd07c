"""Training loop of the network: weighted BCE, Adam, early stopping on validation loss.

Seeded and deterministic on CPU (fixed threads, deterministic algorithms); runs on CUDA when a GPU
is visible. The weights kept are those of the best validation epoch.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from xastopo.models.nn import XasTopoNet


def set_determinism(seed: int, threads: int | None = None) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pos_weight(y: np.ndarray) -> float:
    """Weight of the topological class in BCE: n_trivial / n_topological from train counts."""
    n_pos = float(np.sum(y == 1))
    n_neg = float(np.sum(y == 0))
    return n_neg / n_pos if n_pos > 0 else 1.0


def to_tensors(arrays: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    return (torch.as_tensor(arrays["X"], dtype=torch.float32, device=device),
            torch.as_tensor(arrays["Z"], dtype=torch.int64, device=device),
            torch.as_tensor(arrays["mask"], dtype=torch.float32, device=device),
            torch.as_tensor(arrays["y"], dtype=torch.float32, device=device))


@torch.no_grad()
def predict_proba(net: XasTopoNet, arrays: dict, device: torch.device | None = None,
                  batch_size: int = 512) -> np.ndarray:
    device = device or next(net.parameters()).device
    net.eval()
    x, z, m, _ = to_tensors(arrays, device)
    out = [torch.sigmoid(net(x[i:i + batch_size], z[i:i + batch_size], m[i:i + batch_size]))
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)


def train_nn(
    net: XasTopoNet, train: dict, val: dict, lr: float, weight_decay: float, batch_size: int,
    max_epochs: int, patience: int, seed: int, device: torch.device | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[XasTopoNet, list[dict], int]:
    """Train; return (net with best-validation weights, per-epoch history, best epoch)."""
    device = device or default_device()
    net = net.to(device)
    xt, zt, mt, yt = to_tensors(train, device)
    xv, zv, mv, yv = to_tensors(val, device)
    w = torch.tensor(pos_weight(train["y"]), device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=w)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(net.state_dict())
    history: list[dict] = []
    for epoch in range(1, max_epochs + 1):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(xt), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(xt[idx], zt[idx], mt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        net.eval()
        with torch.no_grad():
            val_logits = net(xv, zv, mv)
            val_loss = float(loss_fn(val_logits, yv))
        rec = {"epoch": epoch, "train_loss": total / len(xt), "val_loss": val_loss,
               "seconds": time.perf_counter() - t0,
               "val_prob": torch.sigmoid(val_logits).cpu().numpy()}
        history.append(rec)
        if on_epoch:
            on_epoch(rec)
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    for h in history:
        h.pop("val_prob", None)
    return net, history, best_epoch
