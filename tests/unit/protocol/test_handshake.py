"""protocol/handshake.py: the hello every client builds, and what its answer means."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claudemesh.crypto import MemberKey, verify
from claudemesh.protocol.features import build_feature_map
from claudemesh.protocol.frames import FrameError, Hello, parse_client_frame
from claudemesh.protocol.handshake import (
    Accepted,
    Incompatible,
    Refused,
    batch_request,
    hello_frame,
    hello_statement,
    read_hello_answer,
)


def _hello(key: MemberKey, **extra: Any) -> dict[str, Any]:
    return hello_frame(mesh_id="mesh1", member_id="member1", pubkey=key.pubkey,
                       sign=key.sign, timestamp_ms=1_700_000_000_000, **extra)


def test_the_hello_is_a_valid_client_frame_signed_over_the_statement() -> None:
    key = MemberKey.generate()
    frame = _hello(key, client="claudemesh-test/1")
    parsed = parse_client_frame(json.dumps(frame))
    assert isinstance(parsed, Hello) and parsed.client == "claudemesh-test/1"
    verify(key.pubkey, hello_statement("mesh1", "member1", key.pubkey, 1_700_000_000_000,
                                       frame["nonce"]), frame["signature"])


def test_each_hello_gets_a_fresh_nonce_unless_one_is_given() -> None:
    key = MemberKey.generate()
    assert _hello(key)["nonce"] != _hello(key)["nonce"]
    assert _hello(key, nonce="ab" * 16)["nonce"] == "ab" * 16
    assert "client" not in _hello(key)


def test_the_batch_request_is_a_valid_client_frame() -> None:
    parse_client_frame(json.dumps(batch_request()))


def _ack(features: Any) -> str:
    return json.dumps({"type": "hello_ack", "session_id": "s1", "features": features,
                       "server": {"name": "claudemesh-broker", "version": "9.9"}})


def test_an_ack_with_good_features_is_accepted() -> None:
    outcome = read_hello_answer(_ack(build_feature_map()))
    assert isinstance(outcome, Accepted)
    assert outcome.ack.session_id == "s1" and outcome.ack.server_version == "9.9"


def test_an_ack_without_the_required_features_is_incompatible() -> None:
    outcome = read_hello_answer(_ack({}))
    assert isinstance(outcome, Incompatible)
    assert outcome.failure.close_reason()


def test_an_error_is_a_refusal() -> None:
    outcome = read_hello_answer(json.dumps({"type": "error", "code": "bad_signature",
                                            "detail": "no"}))
    assert isinstance(outcome, Refused) and outcome.error.code == "bad_signature"


@pytest.mark.parametrize("raw", ["not json", '{"a": 1, "a": 2}', '[1]',
                                 '{"type": "result", "req_id": "1"}'])
def test_anything_else_is_a_frame_error(raw: str) -> None:
    with pytest.raises(FrameError):
        read_hello_answer(raw)
