"""Real request bodies for the serving benchmarks and the soak script: the shipped spectra of the
assembled labeled records (``data/interim/materials.parquet``, written by ``dvc repro assemble``), first
site of each absorbing element, one material per record group, kept only where the served model can
use every spectrum (``InputBuilder.build`` has no error for it), so every request is answerable.

Load-test results do not depend on the spectra's values, but the soak script compares every answer
with the in-process prediction, so real spectra make that comparison mean something.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_model_dir() -> Path:
    """The model directory the CLI and the service use (config.model_dir: env, else params.yaml)."""
    from xastopo.config import load_params, model_dir

    return model_dir(load_params(ROOT / "params.yaml"))


def real_materials(model_dir: Path, limit: int | None = None,
                   records: Path = ROOT / "data" / "interim" / "materials.parquet") -> list[dict]:
    """Request materials (service schema) of real spectra that ``model_dir``'s model accepts, sorted by id."""
    import pandas as pd

    from xastopo.inference import InputBuilder
    from xastopo.schema import MaterialIn

    rec = pd.read_parquet(records, columns=["mp_id", "absorbing_element", "energy", "mu"])
    materials = []
    for mp, g in rec.groupby("mp_id", sort=True):
        spectra = [{"element": r.absorbing_element, "energy": [float(v) for v in r.energy[0]],
                    "mu": [float(v) for v in r.mu[0]], "kind": "computed"} for r in g.itertuples(index=False)]
        materials.append({"material_id": str(mp), "spectra": spectra})
    builder = InputBuilder(model_dir)
    inputs = builder.build([MaterialIn.model_validate(m) for m in materials])
    ok = [materials[i] for i in inputs.valid]
    return ok[:limit] if limit else ok
