"""The model comparison table (markdown), generated from the metrics files, paper figures beside."""

from __future__ import annotations

from xastopo.families import ORDER

__all__ = ["ORDER", "PAPER", "comparison_markdown"]

# Andrejevic et al., Adv. Mater. 2022 (13,151 materials, all absorbing elements): test F1 of the NN.
PAPER = {"nn": {"topological_f1": 0.89, "trivial_f1": 0.93}}


def comparison_markdown(results: dict[str, dict], split: str = "test") -> str:
    """One row per model: both classes' precision/recall/F1, macro-F1 and AUC on ``split``."""
    head = ("| model | topo P | topo R | topo F1 | triv P | triv R | triv F1 | macro F1 | AUC | "
            "paper topo F1 | paper triv F1 |")
    lines = [f"Scores on the {split} split ({next(iter(results.values()))[split]['n']} materials; "
             "threshold chosen on validation).", "", head, "|" + "---|" * 11]
    for name in [n for n in ORDER if n in results] + [n for n in results if n not in ORDER]:
        ev = results[name][split]
        t, v = ev["topological"], ev["trivial"]
        paper = PAPER.get(name, {})
        lines.append(
            f"| {name} | {t['precision']:.2f} | {t['recall']:.2f} | {t['f1']:.2f} | {v['precision']:.2f} | "
            f"{v['recall']:.2f} | {v['f1']:.2f} | {ev['macro_f1']:.2f} | {ev['auc']:.2f} | "
            f"{paper.get('topological_f1', '–')} | {paper.get('trivial_f1', '–')} |")
    return "\n".join(lines) + "\n"
