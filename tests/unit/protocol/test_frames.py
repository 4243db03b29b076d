from __future__ import annotations

import json

import pytest

from claudemesh.protocol.frames import FrameError, Hello, Send, parse_client_frame

HELLO = {"type": "hello", "mesh_id": "m1", "member_id": "u1", "pubkey": "ab" * 32,
         "timestamp_ms": 1, "nonce": "0" * 32, "signature": "cd" * 64}


def test_a_valid_hello_parses() -> None:
    assert isinstance(parse_client_frame(json.dumps(HELLO)), Hello)


@pytest.mark.parametrize(("frame", "code", "detail"), [
    ("{", "malformed_frame", "not valid JSON"),
    ("7", "malformed_frame", "JSON object"),
    ('{"type": null}', "malformed_frame", "no string 'type'"),
    ('{"type": "teleport"}', "unknown_type", "teleport"),
    (json.dumps({**HELLO, "pubkey": "AB" * 32}), "invalid_frame", "'pubkey'"),
    (json.dumps({**HELLO, "timestamp_ms": "1"}), "invalid_frame", "'timestamp_ms'"),
    (json.dumps({**HELLO, "timestamp_ms": -1}), "invalid_frame", "'timestamp_ms'"),
    (json.dumps({**HELLO, "nonce": "short"}), "invalid_frame", "'nonce'"),
    (json.dumps({**HELLO, "extra": 1}), "invalid_frame", "unknown field 'extra'"),
    (json.dumps({k: v for k, v in HELLO.items() if k != "signature"}), "invalid_frame",
     "missing field 'signature'"),
])
def test_bad_frames_name_the_problem(frame: str, code: str, detail: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(frame)
    assert info.value.code == code
    assert detail in info.value.detail


def test_a_bad_send_keeps_its_ids_for_the_answer() -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(json.dumps({"type": "send", "req_id": "r9",
                                       "client_message_id": "c9", "priority": "soon"}))
    assert (info.value.frame_type, info.value.req_id, info.value.client_message_id) == (
        "send", "r9", "c9")


def test_send_body_kinds() -> None:
    base = {"type": "send", "req_id": "r", "client_message_id": "c", "envelope_version": "1",
            "destination_kind": "topic", "destination_ref": "t", "priority": "next",
            "body_hash": "00" * 32}
    plain = parse_client_frame(json.dumps({**base, "body": {"kind": "plain", "text": "x"}}))
    assert isinstance(plain, Send)
    with pytest.raises(FrameError):
        parse_client_frame(json.dumps({**base, "body": {"kind": "crypto_box", "nonce": "x",
                                                        "ciphertext": "AA=="}}))
    with pytest.raises(FrameError):
        parse_client_frame(json.dumps({**base, "body": {"kind": "plain", "text": ""}}))
