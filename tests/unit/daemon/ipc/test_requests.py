from __future__ import annotations

import pytest

from claudemesh.daemon.ipc.requests import SendRequest, parse_json_object, validate
from claudemesh.errors import InvalidRequest


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty"),
    (b"   ", "empty"),
    (b"{", "not valid JSON"),
    (b"[1]", "must be a JSON object"),
    (b'"x"', "must be a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"a":1,"a":2}', "duplicate key 'a'"),
    (b'{"a":{"b":1,"b":1}}', "duplicate key 'b'"),
    (b'{"a":NaN}', "NaN"),
    (b'{"a":-Infinity}', "Infinity"),
])
def test_malformed_bodies_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_json_object(raw)
    assert reason in info.value.detail


@pytest.mark.parametrize(("doc", "reason"), [
    ({"message": "m"}, "missing field 'to'"),
    ({"to": "#t"}, "missing field 'message'"),
    ({"to": "#t", "message": ""}, "'message'"),
    ({"to": 5, "message": "m"}, "'to'"),
    ({"to": "#t", "message": ["m"]}, "'message'"),
    ({"to": "#t", "message": "m", "priority": "urgent"}, "'priority'"),
    ({"to": "#t", "message": "m", "priority": None}, "'priority'"),
    ({"to": "#t", "message": "m", "meta": [1]}, "'meta'"),
    ({"to": "#t", "message": "m", "client_message_id": "has space"}, "client_message_id"),
    ({"to": "#t", "message": "m", "client_message_id": 7}, "client_message_id"),
    ({"to": "#t", "message": "m", "client_message_id": "x" * 129}, "client_message_id"),
    ({"to": "#t", "message": "m", "bogus": 1}, "unknown field 'bogus'"),
    ({"to": "#t", "message": "\ud800"}, "'message'"),
    ({"to": "#t", "message": "m", "mesh": 1}, "'mesh'"),
])
def test_schema_violations_name_the_field(doc: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(SendRequest, doc)
    assert reason in info.value.detail


def test_a_valid_send_gets_defaults() -> None:
    req = validate(SendRequest, {"to": "#t", "message": "m"})
    assert (req.priority, req.meta, req.mesh, req.reply_to) == ("next", None, None, None)
