"""params.yaml → settings, in one place, with one path rule.

Everything that reads parameters (the DVC stages, the CLI, ``xastopo simulate`` and the service) goes
through :func:`load_params`, so the file is found the same way everywhere and a missing file or key
is one :class:`ConfigError` that names it.

Which file: an explicit path, else ``$XASTOPO_PARAMS``, else ``./params.yaml`` when it exists, else
the project's ``params.yaml`` (:data:`PROJECT_ROOT`).

Relative paths *inside* the file (``data.raw_dir``, ``serving.model_dir``, ``simulate.out_dir`` ...)
are relative to the folder of the file, through :func:`resolve_path`; a dict built in code (not read
from a file) resolves them against the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARAMS_ENV = "XASTOPO_PARAMS"
MODEL_DIR_ENV = "XASTOPO_MODEL_DIR"


class ConfigError(ValueError):
    """A parameter or a file it points to is missing or invalid."""


class Params(dict):
    """The parsed params.yaml (a plain nested dict) that remembers the file it was read from."""

    def __init__(self, data: Mapping[str, Any], path: Path | None = None) -> None:
        super().__init__(data)
        self.path = path


# ------------------------------------------------------------------------------- the file
def params_path(path: str | os.PathLike | None = None) -> Path:
    """The params file by the one rule: ``path``, else $XASTOPO_PARAMS, else ./params.yaml if it
    exists, else the project's params.yaml. Raises ConfigError when the chosen file does not exist."""
    if path is not None:
        p, how = Path(path), "given"
    elif os.environ.get(PARAMS_ENV):
        p, how = Path(os.environ[PARAMS_ENV]), f"from {PARAMS_ENV}"
    elif (Path.cwd() / "params.yaml").is_file():
        p, how = Path.cwd() / "params.yaml", ""
    else:
        p, how = PROJECT_ROOT / "params.yaml", f"none in the working directory either; give one or set {PARAMS_ENV}"
    if not p.is_file():
        raise ConfigError(f"parameter file not found: {p} ({how})")
    return p.resolve()


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Read params.yaml (found by :func:`params_path`) as a nested dict that remembers its file."""
    p = params_path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return Params(data, p)


def params_dir(params: Mapping[str, Any]) -> Path:
    """The folder relative paths in ``params`` are taken from (the file's; cwd for a plain dict)."""
    path = getattr(params, "path", None)
    return path.parent if path is not None else Path.cwd()


def resolve_path(params: Mapping[str, Any], value: str | os.PathLike) -> Path:
    """An absolute path for a path given in params: absolute as is, else under :func:`params_dir`."""
    p = Path(value)
    return p if p.is_absolute() else (params_dir(params) / p).resolve()


# ------------------------------------------------------------------------------- the keys
def get(params: Mapping[str, Any], dotted: str) -> Any:
    """Look up ``a.b.c`` in nested params with an error that names the key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"params.yaml: missing key '{dotted}'")
        node = node[part]
    return node


def raw_dir(params: Mapping[str, Any]) -> Path:
    """``data.raw_dir`` as an absolute path."""
    return resolve_path(params, str(get(params, "data.raw_dir")))


def raw_path(params: Mapping[str, Any], key: str) -> Path:
    """Absolute path of a raw data file ``data.<key>`` under ``data.raw_dir``.

    A missing file is one clear error naming the path and the parameter to change.
    """
    p = (raw_dir(params) / str(get(params, f"data.{key}"))).resolve()
    if not p.exists():
        raise ConfigError(
            f"raw data file not found: {p} (set data.raw_dir or data.{key} in params.yaml)"
        )
    return p


# ---------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class PredictOptions:
    """How in-process batch prediction uses the CPU (``predict:`` in params.yaml; `xastopo predict` without
    Dask, the screen stage). None of it changes an answer. The defaults are what a params file without the
    block or a key (one written before it) gets: how batch prediction ran before each key existed.

    ``ort_spinning``: ONNX Runtime's idle intra-op threads spin between operators instead of sleeping.
    ``concurrent_runs``: ONNX runs kept going at once, each on one core (0 = one per core this process
    may use); 1 = one run at a time, its operators split over ONNX Runtime's threads.
    ``block_materials``: materials preprocessed together and ordered by their number of absorbers before
    they are cut into runs (0 = one run's worth, ``--batch-size``): larger blocks pad less, at the memory
    of their arrays."""

    ort_spinning: bool = False
    concurrent_runs: int = 1
    block_materials: int = 0


def predict_options(params: Mapping[str, Any]) -> PredictOptions:
    """``predict:`` → :class:`PredictOptions`; a wrong type is one ConfigError naming the key."""
    block = params.get("predict")
    if block is None:
        return PredictOptions()
    if not isinstance(block, Mapping):
        raise ConfigError(f"params.yaml: 'predict' must be a mapping, got {block!r}")
    default = PredictOptions()
    spinning = block.get("ort_spinning", default.ort_spinning)
    if not isinstance(spinning, bool):
        raise ConfigError(f"params.yaml: 'predict.ort_spinning' must be true or false, got {spinning!r}")
    counts = {}
    for key in ("concurrent_runs", "block_materials"):
        v = block.get(key, getattr(default, key))
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"params.yaml: 'predict.{key}' must be a whole number >= 0, got {v!r}")
        counts[key] = v
    return PredictOptions(spinning, **counts)


# ---------------------------------------------------------------------------- serving
def model_dir(params: Mapping[str, Any]) -> Path:
    """The exported model directory: $XASTOPO_MODEL_DIR, else ``serving.model_dir`` (relative to
    the params file). The CLI and the service both resolve it here."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).resolve()
    return resolve_path(params, str(get(params, "serving.model_dir")))


@dataclass(frozen=True)
class ServingSettings:
    """``serving:`` of params.yaml, with the model directory resolved (see :func:`model_dir`)."""

    model_dir: Path
    max_materials: int  # per request
    max_points: int  # per spectrum
    max_body_bytes: int
    max_batch_size: int  # adaptive batching (materials)
    max_latency_ms: int
    workers: int
    max_json_depth: int  # nesting of the request body, checked before it is parsed (deep bodies hang parsers)
    body_timeout_s: int  # a request body not received in full within this many seconds: 408 (slow senders)
    shutdown_grace_s: int  # SIGTERM: in-flight requests get this long, then are cancelled and the worker exits
    warmup_requests: int  # model calls run at start-up before /readyz says ready (the batcher's latency model)
    explain_concurrency: int  # explanations the model worker runs at once (each ~100 ONNX runs an edge), beside infer
    page_max_files: int  # the web page: files per upload
    page_batch_step: int  # the web page's batch form: materials per model call and progress event
    adaptive_batching: bool = True  # false: each request's materials run alone (measured in benchmarks/)

    @property
    def limits(self) -> dict[str, int]:
        """The request-size limits, as the schema's validation context (``xastopo.schema``)."""
        return {"max_materials": self.max_materials, "max_points": self.max_points}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the service's metadata)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def serving_settings(params: Mapping[str, Any] | None = None) -> ServingSettings:
    """The serving settings of ``params`` (default: :func:`load_params`); each number must be a
    positive integer, and a missing one is an error naming ``serving.<key>``."""
    if params is None:
        params = load_params()
    values: dict[str, Any] = {}
    for name in ServingSettings.__dataclass_fields__:
        if name == "model_dir":
            continue
        key = f"serving.{name}"
        v = get(params, key)
        if name == "adaptive_batching":
            if not isinstance(v, bool):
                raise ConfigError(f"params.yaml: '{key}' must be true or false, got {v!r}")
            values[name] = v
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"params.yaml: '{key}' must be a positive integer, got {v!r}")
        values[name] = v
    return ServingSettings(model_dir=model_dir(params), **values)
