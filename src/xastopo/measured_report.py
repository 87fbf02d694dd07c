"""Measured spectra, for people: the normalization figure (the paper's Figure S10) and the report
over a folder of measured files with a manifest (counts read / refused by reason, predictions of the
labeled materials grouped by material).

Both go through the one prediction path: files are read by :mod:`xastopo.data.measured`, normalized
and aligned by the exported model's ``Preprocessor`` and predicted by the ``Predictor``
(:mod:`xastopo.inference`), exactly as ``xastopo predict`` and the service do.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from xastopo.data.measured import MeasuredError, MeasuredSpectrum, read_measured
from xastopo.data.validation import SpectrumError
from xastopo.elements import atomic_number, parse_formula
from xastopo.inference import MaterialSites, Predictor
from xastopo.preprocessing.preprocessor import Preprocessor

__all__ = ["classify_file", "computed_average", "measured_report", "plot_measured"]


def computed_average(pre: Preprocessor, element: str, features: Path) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(mean, std, n) of the element's training spectra on its window grid, window-normalized (the
    standardization undone), from a featurized training split (``data/features/train.npz``); None
    when the file or the element is absent."""
    if not features.is_file() or element not in pre.elements:
        return None
    with np.load(features) as f:
        x, z, mask = f["X"], f["Z"], f["mask"]
    sel = (z == atomic_number(element)) & (mask > 0)
    if not sel.any():
        return None
    w = pre.elements[element]
    rows = x[sel] * w.std + w.mean
    return rows.mean(axis=0), rows.std(axis=0), int(sel.sum())


def plot_measured(spec: MeasuredSpectrum, pre: Preprocessor, out: Path, features: Path | None = None) -> dict:
    """Draw the normalization steps of one measured spectrum and, for an element the model has
    statistics for, the aligned spectrum on the model's window beside the computed training average.
    Returns the numbers drawn (e0, edge step, shift). Raises SpectrumError when it cannot be normalized."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = pre.normalize_measured(spec.element, spec.energy, spec.mu, spec.edge)
    el = spec.element
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(n.energy, n.mu, "k", lw=1, label="mu (" + spec.mode + ")")
    ax.plot(n.energy, n.pre_edge, "C0--", lw=1, label="pre-edge line")
    ax.plot(n.energy, n.post_edge, "C1--", lw=1, label=f"post-edge polynomial (degree {n.nnorm})")
    ax.axvline(n.e0, color="C3", lw=0.8, label=f"e0 = {n.e0:.1f} eV")
    ax.axvspan(*n.pre_range, color="C0", alpha=0.08)
    ax.axvspan(*n.norm_range, color="C1", alpha=0.08)
    ax.set(xlabel="energy (eV)", ylabel="mu (file units)", title=f"1. raw {el} K edge: {Path(spec.source).name}")
    ax.legend(fontsize=7)
    ax = axes[1]
    lo, hi = n.e0 - 40, n.e0 + 120
    win = (n.energy >= lo) & (n.energy <= hi)
    ax.plot(n.energy[win], n.norm[win], "k", lw=1, label=f"normalized (edge step {n.edge_step:.3g})")
    ax.plot(n.energy[win], n.flat[win], "C2", lw=0.8, label="flattened")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(1, color="grey", lw=0.5)
    ax.axvline(n.half_step_ev, color="C3", lw=0.8, ls=":", label=f"half-step {n.half_step_ev:.1f} eV")
    ax.set(xlabel="energy (eV)", ylabel="normalized mu", title="2. pre-edge 0, edge step 1")
    ax.legend(fontsize=7)
    ax = axes[2]
    info = {"element": el, "e0": n.e0, "edge_step": n.edge_step, "half_step_ev": n.half_step_ev}
    if el in pre.elements and pre.elements[el].edge_ev is not None:
        e_al, norm = pre.measured_site(el, spec.energy, spec.mu, spec.edge)
        grid = pre.grid(el)
        x = pre.element_spectrum(el, [(e_al, norm, 1.0)], align=False)
        info["shift_ev"] = float(pre.elements[el].edge_ev - n.half_step_ev)
        avg = computed_average(pre, el, features) if features is not None else None
        if avg is not None:
            mean, std, k = avg
            ax.fill_between(grid, mean - std, mean + std, color="C0", alpha=0.2)
            ax.plot(grid, mean, "C0", lw=1.2, label=f"computed {el} average (train, n={k}) ± 1 s.d.")
        ax.plot(grid, x, "k", lw=1.2, label=f"measured, shifted {info['shift_ev']:+.1f} eV")
        ax.set(xlabel="energy (eV, training scale)", ylabel="window-normalized mu",
               title="3. model input (before standardization)")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, f"no training spectra for {el}:\nthe model reads {el} by its type only",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return info


def classify_file(pre: Preprocessor, spec: MeasuredSpectrum) -> tuple[str, str]:
    """(status, reason) of one read file: ``spectrum`` (normalized, aligned and on the window: read
    with its spectrum), ``by_type`` (normalized; no training spectra for the element) or
    ``refused`` with the SpectrumError's reason code and message."""
    try:
        if spec.element in pre.elements:
            e, norm = pre.measured_site(spec.element, spec.energy, spec.mu, spec.edge)
            pre.transform(spec.element, [(e, norm, 1.0)], align=False)
            return "spectrum", ""
        pre.normalize_measured(spec.element, spec.energy, spec.mu, spec.edge)
        return "by_type", f"no training spectra for {spec.element}"
    except SpectrumError as exc:
        return "refused", f"{exc.reason}: {exc}"


def _formula(map_key: str) -> str | None:
    """The manifest's map_key as a formula ('FeS2-marcasite' → 'FeS2'); None if unreadable."""
    f = re.split(r"[-\s]", str(map_key).strip())[0]
    try:
        parse_formula(f)
    except ValueError:
        return None
    return f


def measured_report(manifest: Path, model_dir: Path, veidt: Path | None = None,
                    labels: Path | None = None) -> dict:
    """Read, normalize and predict every file of a manifest (columns file, element, map_key, label);
    the element comes from the header, else the manifest (counted). Returns counts, per-file status
    and the per-material prediction table (labeled materials: label not '-')."""
    root = manifest.parent
    man = pd.read_csv(manifest)
    predictor = Predictor(model_dir)
    pre = predictor.preprocessor
    files, counts, reasons = [], Counter(), Counter()
    usable: dict[str, list[tuple[MeasuredSpectrum, str]]] = {}
    for r in man.itertuples(index=False):
        try:
            try:
                spec = read_measured(root / r.file, r.file, min_points=pre.min_points)
                from_header = True
            except MeasuredError as exc:
                if exc.reason != "no_element":
                    raise
                spec = read_measured(root / r.file, r.file, element=r.element, min_points=pre.min_points)
                from_header = False
        except MeasuredError as exc:
            counts["refused"] += 1
            reasons[exc.reason] += 1
            files.append({"file": r.file, "status": "refused", "reason": f"{exc.reason}: {exc.detail}"})
            continue
        counts["element_from_manifest"] += 0 if from_header else 1
        status, reason = classify_file(pre, spec)
        counts[status] += 1
        if status == "refused":
            reasons[reason.split(":", 1)[0]] += 1
        else:
            usable.setdefault(str(r.map_key), []).append((spec, status))
        files.append({"file": r.file, "element": spec.element, "mode": spec.mode, "status": status,
                      "reason": reason, "element_from_header": from_header})
    table = []
    labels_of = man.drop_duplicates("map_key").set_index("map_key")["label"].to_dict()
    for key, specs in sorted(usable.items()):
        label = str(labels_of.get(key, "-"))
        formula = _formula(key)
        if label == "-" or formula is None:
            continue
        spectra: dict[str, list] = {}
        measured: dict[str, list] = {}
        for spec, _status in specs:
            spectra.setdefault(spec.element, []).append((spec.energy, spec.mu, 1.0))
            measured.setdefault(spec.element, []).append((spec.source, spec.edge))
        with_spec = MaterialSites(key, spectra, formula=formula, measured=measured)
        comp_only = MaterialSites(key, {}, formula=formula)
        inputs = predictor.build([with_spec, comp_only])
        if inputs.errors:
            table.append({"material": key, "label": label, "n_scans": len(specs), "error": str(inputs.errors[0])})
            continue
        a, b = predictor.predict_inputs(inputs)
        table.append({"material": key, "formula": formula, "label": label, "n_scans": len(specs),
                      "elements": ";".join(sorted({s.element for s, _ in specs}, key=atomic_number)),
                      "with_spectrum": ";".join(a.elements_with_spectrum), "probability": a.probability_topological,
                      "uncertainty": a.uncertainty, "predicted": a.label,
                      "probability_composition_only": b.probability_topological})
    out = {"model": {"name": predictor.name, "version": predictor.version, "dir": str(model_dir)},
           "files": len(man), "counts": dict(counts), "refused_by_reason": dict(sorted(reasons.items())),
           "materials": table, "per_file": files}
    if veidt is not None:
        out["veidt_experiment"] = _veidt(pre, veidt)
    return out


def _veidt(pre: Preprocessor, path: Path) -> dict:
    """The ``veidt_experiment`` rows of the shipped spectra: status per row (they are 200-point
    min-max scaled XANES, so the pre-edge is a constant and the post-edge short)."""
    df = pd.read_parquet(path)
    df = df[df["source"] == "veidt_experiment"]
    counts, rows = Counter(), []
    for r in df.itertuples(index=False):
        spec = MeasuredSpectrum(r.absorbing_element, r.edge, np.asarray(r.energy, float), np.asarray(r.mu, float),
                                r.spectrum_id, "veidt min-max scaled")
        status, reason = classify_file(pre, spec)
        counts[status if status != "refused" else "refused:" + reason.split(":", 1)[0]] += 1
        rows.append({"spectrum_id": r.spectrum_id, "element": r.absorbing_element, "status": status, "reason": reason})
    return {"rows": len(df), "counts": dict(counts), "per_row": rows}


def report_markdown(rep: dict) -> str:
    """The counts and the prediction table as Markdown (reports/measured.md, the README's section)."""
    c = rep["counts"]
    lines = [f"Model: {rep['model']['name']} v{rep['model']['version']}.", "",
             f"Files: {rep['files']}; read with the spectrum used by the model: {c.get('spectrum', 0)}; "
             f"read and normalized, element without training spectra (read by type): {c.get('by_type', 0)}; "
             f"refused: {c.get('refused', 0)} "
             f"({', '.join(f'{k} {v}' for k, v in rep['refused_by_reason'].items()) or 'none'}). "
             f"Element taken from the manifest (no header field): {c.get('element_from_manifest', 0)}.", ""]
    if "veidt_experiment" in rep:
        v = rep["veidt_experiment"]
        lines += [f"`veidt_experiment` rows: {v['rows']} ("
                  + ", ".join(f"{k} {n}" for k, n in sorted(v["counts"].items())) + ").", ""]
    lines += ["| material | label (manifest) | scans | edges read | with spectrum | P(topological) | uncertainty "
              "| predicted | P, composition only |", "|---|---|---|---|---|---|---|---|---|"]
    for t in rep["materials"]:
        if "error" in t:
            lines.append(f"| {t['material']} | {t['label']} | {t['n_scans']} | – | – | error: {t['error']} | | | |")
            continue
        u = "" if t["uncertainty"] is None else f"{t['uncertainty']:.3f}"
        lines.append(f"| {t['material']} | {t['label']} | {t['n_scans']} | {t['elements']} "
                     f"| {t['with_spectrum'] or '–'} | {t['probability']:.3f} | {u} | {t['predicted']} "
                     f"| {t['probability_composition_only']:.3f} |")
    return "\n".join(lines) + "\n"


def write_report(rep: dict, md: Path, js: Path) -> None:
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("# Measured spectra: read, normalized, predicted\n\n" + report_markdown(rep))
    js.write_text(json.dumps(rep, indent=2, default=float) + "\n")
