"""The one params reader (`xastopo.config`): which file, relative paths, errors naming the key, the
model directory the CLI and the service resolve, and the simulate settings built on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xastopo import config
from xastopo.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (config.PARAMS_ENV, config.MODEL_DIR_ENV):
        monkeypatch.delenv(key, raising=False)


def write(folder: Path, doc: dict, name: str = "params.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(doc))
    return folder / name


def project() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


# ------------------------------------------------------------------------------ path rule
def test_path_rule_explicit_then_env_then_cwd_then_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path / "a", {"x": "explicit"})
    env = write(tmp_path / "b", {"x": "env"}, "other.yaml")
    cwd = write(tmp_path / "c", {"x": "cwd"})
    empty = tmp_path / "d"
    empty.mkdir()

    monkeypatch.chdir(empty)
    assert config.load_params().path == REPO_ROOT / "params.yaml"  # the project's
    monkeypatch.chdir(cwd.parent)
    assert config.load_params()["x"] == "cwd"
    monkeypatch.setenv(config.PARAMS_ENV, str(env))
    assert config.load_params()["x"] == "env"
    p = config.load_params(explicit)
    assert p["x"] == "explicit" and p.path == explicit and isinstance(p, dict)


def test_missing_or_bad_file_is_one_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="parameter file not found: .*nope.yaml"):
        config.load_params(tmp_path / "nope.yaml")
    monkeypatch.setenv(config.PARAMS_ENV, str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match=f"gone.yaml \\(from {config.PARAMS_ENV}\\)"):
        config.load_params()
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config.load_params(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_params(tmp_path / "broken.yaml")


def test_get_names_the_missing_key() -> None:
    params = config.load_params(REPO_ROOT / "params.yaml")
    assert config.get(params, "serving.max_batch_size") == params["serving"]["max_batch_size"]
    with pytest.raises(ConfigError, match="missing key 'serving.nope'"):
        config.get(params, "serving.nope")
    with pytest.raises(ConfigError, match="missing key 'featurize.n_points.deeper'"):
        config.get(params, "featurize.n_points.deeper")


def test_relative_paths_are_relative_to_the_params_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "raw"
    (raw / "spectra").mkdir(parents=True)
    (raw / "spectra" / "s.parquet").write_bytes(b"")
    p = config.load_params(write(tmp_path / "conf", {"data": {"raw_dir": "../raw", "site_spectra": "spectra/s.parquet",
                                                              "labels_csv": "labels/l.csv"}}))
    monkeypatch.chdir(REPO_ROOT)  # the working directory does not matter
    assert config.params_dir(p) == tmp_path / "conf"
    assert config.resolve_path(p, "x/y") == tmp_path / "conf" / "x" / "y"
    assert config.resolve_path(p, "/abs/y") == Path("/abs/y")
    assert config.raw_dir(p) == raw
    assert config.raw_path(p, "site_spectra") == raw / "spectra" / "s.parquet"
    with pytest.raises(ConfigError, match="data.labels_csv"):
        config.raw_path(p, "labels_csv")
    # a dict built in code has no file: the working directory
    monkeypatch.chdir(tmp_path)
    assert config.resolve_path({"data": {}}, "x") == tmp_path / "x"


# ----------------------------------------------------------------------------- serving
def test_model_dir_same_for_cli_and_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`xastopo predict` (batch_predict.resolve_model_dir) and the service (config.serving_settings)
    resolve serving.model_dir through config.model_dir: relative to the params file, the env wins."""
    from xastopo.batch_predict import resolve_model_dir

    doc = project()
    doc["serving"]["model_dir"] = "models/here"
    p = write(tmp_path / "conf", doc)
    monkeypatch.chdir(REPO_ROOT)
    params = config.load_params(p)
    want = tmp_path / "conf" / "models" / "here"
    assert config.model_dir(params) == config.serving_settings(params).model_dir == resolve_model_dir(None, p) == want
    monkeypatch.setenv(config.PARAMS_ENV, str(p))
    assert resolve_model_dir(None) == config.serving_settings().model_dir == want
    monkeypatch.setenv(config.MODEL_DIR_ENV, str(tmp_path / "env_model"))
    assert resolve_model_dir(None, p) == config.serving_settings(params).model_dir == tmp_path / "env_model"
    assert resolve_model_dir(tmp_path / "flag", p) == tmp_path / "flag"  # --model-dir beats both


def test_serving_settings_from_params(tmp_path: Path) -> None:
    doc = project()
    s = config.serving_settings(config.load_params(REPO_ROOT / "params.yaml"))
    assert (s.max_materials, s.max_points, s.max_batch_size) == (doc["serving"]["max_materials"],
                                                                  doc["serving"]["max_points"],
                                                                  doc["serving"]["max_batch_size"])
    assert s.limits == {"max_materials": s.max_materials, "max_points": s.max_points}
    assert s.to_dict()["model_dir"] == str(REPO_ROOT / doc["serving"]["model_dir"])
    del doc["serving"]["max_latency_ms"]
    with pytest.raises(ConfigError, match="missing key 'serving.max_latency_ms'"):
        config.serving_settings(config.load_params(write(tmp_path, doc)))
    doc = project()
    doc["serving"]["workers"] = "two"
    with pytest.raises(ConfigError, match="'serving.workers' must be a positive integer"):
        config.serving_settings(config.load_params(write(tmp_path, doc)))


def test_predict_options_from_params(tmp_path: Path) -> None:
    """``predict:`` (in-process batch prediction) is read into PredictOptions: ``ort_spinning`` a boolean,
    ``concurrent_runs`` and ``block_materials`` whole numbers >= 0; anything else is one ConfigError naming
    the key; a params file without the block or a key (written before it existed) gets the old behaviour."""
    doc = project()
    got = config.predict_options(config.load_params(REPO_ROOT / "params.yaml"))
    assert got == config.PredictOptions(doc["predict"]["ort_spinning"], doc["predict"]["concurrent_runs"],
                                        doc["predict"]["block_materials"])
    for key, bad, words in (("ort_spinning", "yes", "must be true or false, got 'yes'"),
                            ("concurrent_runs", -1, "must be a whole number >= 0, got -1"),
                            ("concurrent_runs", True, "must be a whole number >= 0, got True"),
                            ("block_materials", 2.5, "must be a whole number >= 0, got 2.5")):
        broken = project()
        broken["predict"][key] = bad
        with pytest.raises(ConfigError, match=f"'predict.{key}' {words}"):
            config.predict_options(config.load_params(write(tmp_path, broken)))
    doc["predict"] = {}
    old = config.predict_options(config.load_params(write(tmp_path, doc)))  # a file from before the keys
    assert old == config.PredictOptions(ort_spinning=False, concurrent_runs=1, block_materials=0)
    del doc["predict"]
    assert config.predict_options(config.load_params(write(tmp_path, doc))) == old
    doc["predict"] = ["ort_spinning"]
    with pytest.raises(ConfigError, match="'predict' must be a mapping"):
        config.predict_options(config.load_params(write(tmp_path, doc)))


def test_schema_limits_come_from_the_validation_context() -> None:
    from pydantic import ValidationError

    from xastopo.schema import parse_request, request_errors

    spec = {"element": "Cu", "energy": [1.0, 2.0, 3.0], "mu": [0.0, 0.5, 1.0]}
    body = {"materials": [{"material_id": f"m{i}", "spectra": [spec]} for i in range(3)]}
    assert len(parse_request(body).materials) == 3  # no context: no size limit
    with pytest.raises(ValidationError) as ei:
        parse_request(body, {"max_materials": 2, "max_points": 10})
    assert request_errors(ei.value)[0]["message"] == "too many materials (3 > 2)"
    with pytest.raises(ValidationError) as ei:
        parse_request(body, {"max_materials": 5, "max_points": 2})
    first = request_errors(ei.value)[0]
    assert first["loc"] == "materials[0].spectra[0].energy" and first["message"] == "too many points (3 > 2)"


# ---------------------------------------------------------------------------- simulate
def test_simulate_settings_come_from_params_yaml(tmp_path: Path) -> None:
    """No second set of defaults: what a params file leaves out comes from the project's params.yaml."""
    from xastopo.simulate import settings

    sim = project()["simulate"]
    cfg, raw = settings.load_params(REPO_ROOT / "params.yaml")
    for key in ("scf", "fms", "radius", "xanes", "flush_every", "exclude_elements"):
        assert cfg[key] == sim[key], key
    assert cfg["malloc_env"] == settings.OPTIONAL["malloc_env"]
    assert raw == (REPO_ROOT / project()["data"]["raw_dir"]).resolve()
    assert cfg["out_dir"] == str(REPO_ROOT / sim["out_dir"])
    assert settings.DEFAULTS["scf"] == sim["scf"]  # read when asked for

    own = write(tmp_path / "conf", {"data": {"raw_dir": "raw"}, "simulate": {"radius": 6.0, "out_dir": "sim"}})
    cfg, raw = settings.load_params(own)
    assert cfg["radius"] == 6.0 and cfg["scf"] == sim["scf"]
    assert cfg["out_dir"] == str(tmp_path / "conf" / "sim") and raw == tmp_path / "conf" / "raw"


def test_simulate_settings_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xastopo.simulate import settings

    with pytest.raises(ConfigError, match="unknown simulate keys: radiuss"):
        settings.load_params(write(tmp_path, {"data": {"raw_dir": "."}, "simulate": {"radiuss": 6.0}}))
    # no project params.yaml to fill in from: every key must be given
    lone = write(tmp_path / "lone", {"data": {"raw_dir": "."}, "simulate": {"radius": 6.0}})
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.setattr(config, "PROJECT_ROOT", empty)
    with pytest.raises(ConfigError, match="missing key 'simulate.structures'"):
        settings.load_params(lone)
