"""strictjson: strict reading of untrusted JSON, and compact writing with a fallback."""

from __future__ import annotations

import json

import pytest

from claudemesh.protocol.strictjson import JsonError, dumps, loads_object


def test_dumps_is_compact_utf8_that_reads_back() -> None:
    value = {"text": "é ✓ \u2028", "n": [1, 2.5, None, True], "nested": {"k": "v"}}
    raw = dumps(value)
    assert b" " not in raw.replace("é ✓ \u2028".encode(), b"")
    assert "é".encode() in raw  # not \u-escaped
    assert json.loads(raw) == value


@pytest.mark.parametrize("value", [
    {"big": 2**70},  # past 64 bits: orjson refuses, the fallback writes it
    {"lone": "\ud800x"},  # a lone surrogate: escaped, still valid UTF-8
])
def test_dumps_falls_back_for_what_orjson_refuses(value: dict[str, object]) -> None:
    raw = dumps(value)
    raw.decode("utf-8")
    assert json.loads(raw) == value


def test_dumps_still_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"a": 1, "a": 2}', "duplicate key"),
    (b'{"a": NaN}', "NaN"),
    (b"[1]", "must be a JSON object"),
    (b"\xff", "not UTF-8"),
    (b"  ", "empty"),
    (b'{"a": ', "not valid JSON"),
])
def test_loads_object_refuses_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonError, match=reason):
        loads_object(raw)


def test_loads_object_reuses_one_decoder_safely() -> None:
    assert loads_object('{"a": {"b": 1}}') == {"a": {"b": 1}}
    with pytest.raises(JsonError):
        loads_object('{"x": 1, "x": 1}')
    assert loads_object(b'{"x": 1}') == {"x": 1}
