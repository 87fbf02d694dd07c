"""Figures people would rather look at: ROC curves and per-element F1 periodic tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xastopo.elements import Z_OF  # noqa: E402


def _position(z: int) -> tuple[int, int]:
    """(row, column) of an element in the standard 18-column periodic table (f-block below)."""
    starts = [(1, 1), (3, 2), (11, 3), (19, 4), (37, 5), (55, 6), (87, 7)]
    period = max(p for s, p in starts if z >= s)
    if 57 <= z <= 71:
        return 9, z - 57 + 3
    if 89 <= z <= 103:
        return 10, z - 89 + 3
    first = dict((p, s) for s, p in starts)[period]
    i = z - first
    if period == 1:
        return 1, 1 if z == 1 else 18
    if period in (2, 3):
        return period, i + 1 if i < 2 else i + 11
    if period in (6, 7):
        return period, i + 1 if i < 2 else (3 if i < 17 else i - 14 + 1)
    return period, i + 1


def periodic_table_heatmap(values: dict[str, float], title: str, path: Path,
                           counts: dict[str, int] | None = None) -> None:
    """Draw per-element values (0–1) on a periodic table; elements without a value stay grey."""
    fig, ax = plt.subplots(figsize=(11, 6))
    cmap = plt.get_cmap("viridis")
    for sym, z in Z_OF.items():
        r, c = _position(z)
        v = values.get(sym)
        color = cmap(v) if v is not None and np.isfinite(v) else (0.93, 0.93, 0.93, 1)
        ax.add_patch(plt.Rectangle((c - 0.5, -r - 0.5), 0.95, 0.95, color=color))
        ax.text(c, -r + 0.12, sym, ha="center", va="center", fontsize=8,
                color="white" if v is not None and v < 0.6 else "black")
        if v is not None:
            label = f"{v:.2f}" + (f"\nn={counts[sym]}" if counts and sym in counts else "")
            ax.text(c, -r - 0.2, label, ha="center", va="center", fontsize=5.5,
                    color="white" if v < 0.6 else "black")
    ax.set_xlim(0, 19)
    ax.set_ylim(-11, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, label="F1")
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def roc_figure(curves: dict[str, list[dict]], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, pts in curves.items():
        if pts:
            ax.plot([p["fpr"] for p in pts], [p["tpr"] for p in pts], label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def loss_figure(history: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], label="train loss")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted BCE")
    ax.set_title(title)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def reliability_figure(stats: dict, title: str, path: Path) -> None:
    """Reliability diagram before and after calibration (``stats``: {"before"|"after": calibration_stats})."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect")
    for key, style in (("before", "o--"), ("after", "s-")):
        s = stats[key]
        c = s["curve"]
        ax.plot([b["predicted"] for b in c], [b["observed"] for b in c], style,
                label=f"{key}: ECE {s['ece']:.3f}, Brier {s['brier']:.3f}")
    ax.set_xlabel("predicted P(topological)")
    ax.set_ylabel("observed fraction topological")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
