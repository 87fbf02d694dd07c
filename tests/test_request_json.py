"""A JSON request file read by the CLI and the page (``batch_predict.read_json_request``): hostile
bodies are a BatchInputError naming the file, never a traceback; the nesting scan
(``schema.json_depth``, the one implementation the service uses too) honours strings and escapes.

The request bodies are built from a real shipped spectrum (../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from xastopo import config
from xastopo.batch_predict import BatchInputError, read_json_request
from xastopo.schema import json_depth

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good_body(spectra_path: Path) -> dict:
    row = pd.read_parquet(spectra_path, filters=[("source", "==", "omnixas_feff_raw")]).iloc[0]
    spec = {"element": row.absorbing_element, "energy": [float(v) for v in row.energy],
            "mu": [float(v) for v in row.mu]}
    return {"materials": [{"material_id": str(row.mp_id), "spectra": [spec]}]}


def test_good_request_is_read(tmp_path: Path, good_body: dict) -> None:
    p = tmp_path / "ok.json"
    p.write_text(json.dumps(good_body))
    req = read_json_request(p)
    assert req.materials[0].material_id == good_body["materials"][0]["material_id"]


@pytest.mark.parametrize(("name", "body", "fragment"), [
    ("deep_list", '{"materials":' + "[" * 5000 + "]" * 5000 + "}", "nested more than"),
    ("deep_objects", '{"a":' * 3000 + "1" + "}" * 3000, "nested more than"),
    ("huge_int", '{"materials": [{"material_id": ' + "7" * 5000 + "}]}", "not valid JSON"),
    ("bad_utf8", b'{"materials": "\xff\xfe"}', "not valid JSON"),
    ("truncated", '{"materials": [', "not valid JSON"),
])
def test_hostile_json_is_one_error_naming_the_file(tmp_path: Path, name: str, body: str | bytes,
                                                   fragment: str) -> None:
    """Deep nesting raised RecursionError and a 5,000-digit integer ValueError (the int digit limit):
    a traceback in the CLI, a 500 on the page."""
    p = tmp_path / f"{name}.json"
    if isinstance(body, bytes):
        p.write_bytes(body)
    else:
        p.write_text(body)
    with pytest.raises(BatchInputError, match=fragment) as exc:
        read_json_request(p)
    assert str(exc.value).startswith(f"{p}: ")


def test_depth_limit_is_the_serving_setting(tmp_path: Path, good_body: dict) -> None:
    """The nesting limit is ``serving.max_json_depth`` of the params file the CLI reads."""
    limit = config.serving_settings(config.load_params()).max_json_depth
    p = tmp_path / "wrapped.json"
    wrapped: object = good_body["materials"]
    for _ in range(limit):  # well-formed, but nested deeper than the limit
        wrapped = [wrapped]
    p.write_text(json.dumps({"materials": wrapped}))
    with pytest.raises(BatchInputError, match=f"nested more than {limit} levels"):
        read_json_request(p)


@pytest.mark.parametrize(("body", "depth"), [
    (b'{"a": "[[[[", "b": [1]}', 2),
    (b'{"a": "x\\"[[[", "b": {"c": [[]]}}', 4),
    (b'["\\\\", [[]]]', 3),
    (b'"[[[[[[["', 0),
    (b"[]", 1),
])
def test_json_depth_ignores_brackets_in_strings(body: bytes, depth: int) -> None:
    """``json_depth(body, limit) > limit`` exactly when the body nests deeper than ``limit``."""
    for limit in range(6):
        assert (json_depth(body, limit) > limit) == (depth > limit), (limit, json_depth(body, limit))


def test_json_depth_across_chunks() -> None:
    """A string whose escaping backslash is the last byte of a scan chunk keeps its state."""
    from xastopo.schema import DEPTH_CHUNK

    pad = b'"' + b"a" * (DEPTH_CHUNK - 3) + b"\\"  # the backslash is the first chunk's last byte
    body = b"[" + pad + b'"[[[", [[[1]]]]'
    assert body[DEPTH_CHUNK - 1:DEPTH_CHUNK] == b"\\"
    assert json_depth(body, 4) == 4 and json_depth(body, 3) > 3
    deep = b"[" * 40 + b" " * DEPTH_CHUNK + b"]" * 40
    assert json_depth(deep, 10) > 10 and json_depth(deep, 40) <= 40


@pytest.mark.parametrize(("where", "value", "fragment"), [
    ("mu", float("nan"), "mu: contains NaN or infinite values (first at index 7)"),
    ("energy", float("inf"), "energy: contains NaN or infinite values (first at index 7)"),
    ("energy", 0.0, "energy must be strictly increasing (index 7:"),
])
def test_spectrum_checks_name_the_first_bad_point(good_body: dict, where: str, value: float, fragment: str) -> None:
    """The schema's whole-list fast checks (a C-level sum, a C-level comparison) still name the first bad
    index of a real spectrum, as the per-value loops they replaced did."""
    from pydantic import ValidationError

    from xastopo.schema import parse_request_json, request_errors

    body = json.loads(json.dumps(good_body))
    spec = body["materials"][0]["spectra"][0]
    spec[where][7] = value
    with pytest.raises(ValidationError) as exc:
        parse_request_json(json.dumps(body).encode())
    line = " ".join(f"{e['loc']}: {e['message']}" for e in request_errors(exc.value))
    assert fragment in line, line


def test_finite_values_whose_sum_overflows_are_accepted(good_body: dict) -> None:
    """Finite values can overflow the fast check's sum: the list must still pass (and parse unchanged)."""
    from xastopo.schema import parse_request_json

    body = json.loads(json.dumps(good_body))
    spec = body["materials"][0]["spectra"][0]
    spec["mu"] = [1e308] * len(spec["mu"])
    req = parse_request_json(json.dumps(body).encode())
    assert req.materials[0].spectra[0].mu == spec["mu"]


def _depth(v: object) -> int:
    """Nesting of a parsed JSON value, the reference for :func:`json_depth`."""
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


def test_json_depth_is_the_parsed_nesting_with_brackets_and_quotes_inside_strings() -> None:
    """Random bodies whose strings hold brackets (and, in half of them, escaped quotes and backslashes), above
    and below the limit: the scan gives the parsed value's nesting whenever that is above the limit, and a
    bound at least that deep otherwise (both the escape-free path the service takes and the escaped one)."""
    import random

    rnd = random.Random(7)
    pieces = ["[", "]", "{", "}", "[[", "}}", "a", "1.5"]

    def value(level: int, escapes: bool) -> object:
        r = rnd.random()
        if level > 40 or r < 0.3:
            s = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 6)))
            return s + ('"x\\' if escapes and rnd.random() < 0.5 else "")  # written \" and \\ in the body
        if r < 0.65:
            return [value(level + 1, escapes) for _ in range(rnd.randint(0, 3))]
        return {f"k{i}{rnd.choice(pieces)}": value(level + 1, escapes) for i in range(rnd.randint(0, 3))}

    seen = set()
    for trial in range(400):
        escapes = trial % 2 == 1
        body = json.dumps(value(0, escapes)).encode()
        want = _depth(json.loads(body))
        for limit in (2, 6, 32):
            got = json_depth(body, limit)
            assert (got == want) if want > limit else (got >= want and (got <= limit) == (want <= limit)), (
                body[:200], limit, want, got)
        seen.add((b"\\" in body, want > 6))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
