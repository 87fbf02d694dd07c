"""Predict many materials, in process or fanned out over a Dask cluster, with identical answers.

A facility's candidate list can outgrow one machine. :func:`predict_materials` cuts the materials into
chunks of whole prediction batches and sends each chunk to a Dask worker, which opens the exported
model once (:class:`~xastopo.inference.Predictor`, cached per worker process) and answers it through
the one prediction path. A material's answer does not depend on the batch it runs in (its run-mates,
their padding, the thread: :meth:`~xastopo.inference.Predictor.outputs`), so the answers are the same
to the last bit however the materials are cut (tested). The cluster is the one ``xastopo simulate`` uses
(:func:`xastopo.simulate.cluster.dask_client`): an embedded LocalCluster, or an existing scheduler by
address or scheduler file (the model directory must then be readable by the workers at the same path).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd
from pathlib import Path

from xastopo.config import PredictOptions
from xastopo.inference import InputError, MaterialSites, Predictor
from xastopo.schema import Prediction

Answer = Prediction | InputError

_PREDICTORS: dict[tuple[str, bool, int], Predictor] = {}


def cached_predictor(model_dir: str | Path, spinning: bool = False, concurrent_runs: int = 1) -> Predictor:
    """One Predictor per process, model directory and CPU use (a worker answers many chunks)."""
    key = (str(Path(model_dir).resolve()), spinning, concurrent_runs)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = Predictor(key[0], spinning=spinning, concurrent_runs=concurrent_runs)
    return _PREDICTORS[key]


def predict_chunk(model_dir: str, materials: Sequence[MaterialSites], batch_size: int,
                  progress: bool = False, options: PredictOptions | None = None) -> list[Answer]:
    """Answers of ``materials`` in order: a Prediction, or the InputError that made it unusable
    (its ``index`` counted within this chunk).

    The materials are preprocessed a block at a time (``options.block_materials``, a whole number of
    batches; one batch when 0) and each block runs in ONNX runs of at most ``batch_size`` materials ordered
    by their number of absorbers (:meth:`Predictor.outputs`): a block of mixed widths pads less than its
    batches would one by one (~1.2x the materials/s at 4,096 materials of the composition test split)."""
    options = options or PredictOptions()
    predictor = cached_predictor(model_dir, options.ort_spinning, options.concurrent_runs)
    block = max(1, -(-options.block_materials // batch_size)) * batch_size
    answers: list[Answer] = []
    starts = range(0, len(materials), block)
    bar = None
    if progress and len(starts) > 1:  # one bar over the materials; a single block shows its own two
        from tqdm import tqdm

        bar = tqdm(total=len(materials), desc="predict", unit="material", mininterval=1.0)
    inner = progress and bar is None
    for s in starts:
        inputs = predictor.build(materials[s:s + block], progress=inner)
        part: list[Answer | None] = list(predictor.predict_inputs(inputs, batch_size, progress=inner))
        for exc in inputs.errors:
            part[exc.index] = InputError(exc.index + s, exc.field, exc.message)
        answers.extend(part)  # type: ignore[arg-type]
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return answers


def chunk_size(n: int, batch_size: int, parts: int) -> int:
    """Materials per chunk: a whole number of batches, about ``parts`` chunks in all."""
    batches = -(-n // batch_size)
    return max(1, -(-batches // max(1, parts))) * batch_size


def predict_materials(model_dir: str | Path, materials: Sequence[MaterialSites], batch_size: int = 256,
                      distributed: bool = False, scheduler: str | None = None, workers: int = 0,
                      chunks_per_worker: int = 4, options: PredictOptions | None = None) -> list[Answer]:
    """Answers of every material, in order (a Prediction or an InputError with its global index).

    ``distributed`` False: this process, using its cores as ``options`` say (``predict:`` in params.yaml).
    True: a Dask cluster (``scheduler`` address or file, else a LocalCluster of ``workers`` processes, 0 =
    one per core), chunks of whole batches; the workers share the cores, so their sessions run one run at
    a time and never spin (only ``options.block_materials`` travels).
    """
    model_dir = str(Path(model_dir).resolve())
    options = options or PredictOptions()
    if not distributed:
        return predict_chunk(model_dir, materials, batch_size, progress=len(materials) >= 200, options=options)
    from xastopo.simulate.cluster import dask_client

    with dask_client(scheduler, workers) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = chunk_size(len(materials), batch_size, n_workers * chunks_per_worker)
        starts = list(range(0, len(materials), size))
        shared = PredictOptions(block_materials=options.block_materials)
        futures = [client.submit(predict_chunk, model_dir, list(materials[s:s + size]), batch_size, options=shared,
                                 pure=False) for s in starts]
        out: list[Answer] = []
        for s, fut in zip(starts, futures, strict=True):
            for a in fut.result():
                if isinstance(a, InputError):
                    a = InputError(a.index + s, a.field, a.message)
                out.append(a)
    return out


def composition_uncertainty(model_dir: str | Path, formulas: dict[str, str], batch_size: int = 256) -> dict[str, float]:
    """The served model's uncertainty (its ensemble's spread) of each material from its formula alone, by
    material id: what the simulation planner's uncertainty mode spends CPU-hours on. Materials whose formula
    the model cannot read are left out; a model without an uncertainty output is a ValueError."""
    if not cached_predictor(model_dir).has_uncertainty:
        raise ValueError(f"the model in {model_dir} has no uncertainty output (needs an ensemble, e.g. nn_any)")
    materials = [MaterialSites(i, {}, formula=f) for i, f in formulas.items()]
    return {a.material_id: float(a.uncertainty) for a in predict_materials(model_dir, materials, batch_size)
            if isinstance(a, Prediction) and a.uncertainty is not None}


def reduced_composition(formula: str) -> tuple[tuple[str, int], ...] | None:
    """A formula's element counts divided by their greatest common divisor ('Ta2As2' → (('As',1),('Ta',1))),
    None when it cannot be read or has fractional amounts: the key that matches a literature formula to
    a labeled material."""
    from xastopo.elements import parse_formula

    try:
        amounts = parse_formula(str(formula))
    except ValueError:
        return None
    if any(abs(v - round(v)) > 1e-6 for v in amounts.values()):
        return None
    counts = {el: int(round(v)) for el, v in amounts.items()}
    g = 0
    for v in counts.values():
        g = gcd(g, v)
    return tuple(sorted((el, v // max(g, 1)) for el, v in counts.items()))
