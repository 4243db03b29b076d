"""protocol/replies.py: every broker answer read into its model, ``code`` meaning one thing."""

from __future__ import annotations

from typing import Any

import pytest

from claudemesh.errors import RateLimited, RemoteError, UnknownMember, error_from_frame
from claudemesh.protocol.frames import FrameError
from claudemesh.protocol.replies import (
    ErrorReply,
    EventReply,
    FeatureNegotiationResponse,
    HelloAck,
    JoinResult,
    Result,
    SendResult,
    parse_reply,
)


def test_a_send_result_maps_the_wire_names_once() -> None:
    accepted = parse_reply({"type": "send_result", "req_id": "1", "client_message_id": "c",
                            "code": 201, "broker_message_id": "b", "history_id": "h",
                            "duplicate": False})
    assert isinstance(accepted, SendResult)
    assert (accepted.status, accepted.code, accepted.accepted) == (201, None, True)
    refused = parse_reply({"type": "send_result", "req_id": "2", "code": 413,
                           "error": "payload_too_large", "detail": "big", "limit": 65536})
    assert isinstance(refused, SendResult)
    assert (refused.status, refused.code, refused.detail) == (413, "payload_too_large", "big")
    assert refused.fields == {"limit": 65536} and not refused.accepted


def test_a_success_without_a_broker_message_id_is_not_accepted() -> None:
    reply = parse_reply({"type": "send_result", "code": 201})
    assert isinstance(reply, SendResult) and not reply.accepted


def test_an_error_frame_keeps_its_extras_as_fields() -> None:
    reply = parse_reply({"type": "error", "code": "rate_limited", "detail": "slow down",
                         "req_id": "9", "retry_after_ms": 250})
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.req_id, reply.fields) == ("rate_limited", "9",
                                                        {"retry_after_ms": 250})


@pytest.mark.parametrize(("doc", "model"), [
    ({"type": "hello_ack", "session_id": "s", "features": {}, "server": {"version": "1"}},
     HelloAck),
    ({"type": "result", "req_id": "3", "peers": []}, Result),
    ({"type": "event", "event": "peer_joined", "mesh_id": "m", "peer": {"pubkey": "p"}},
     EventReply),
    ({"type": "join_result", "mesh_id": "m", "mesh_name": "n", "member_id": "u",
      "display_name": "d", "pubkey": "p"}, JoinResult),
    ({"type": "feature_negotiation_response", "supported": {}, "missing_required": []},
     FeatureNegotiationResponse),
])
def test_each_answer_type_has_its_model(doc: dict[str, Any], model: type) -> None:
    assert isinstance(parse_reply(doc), model)


def test_a_result_payload_is_its_data_and_unknown_fields_are_kept_not_refused() -> None:
    reply = parse_reply({"type": "result", "req_id": "3", "applied": ["bio"], "peer": {}})
    assert isinstance(reply, Result) and reply.data == {"applied": ["bio"], "peer": {}}
    ack = parse_reply({"type": "hello_ack", "features": {}, "from_the_future": 1})
    assert isinstance(ack, HelloAck) and ack.server_version is None


@pytest.mark.parametrize("doc", [
    {"type": "no_such_answer"},
    {"req_id": "1"},
    {"type": "send_result", "code": "201"},  # the status is a number, strictly
    {"type": "result"},  # a result answers a request: it has a req_id
    {"type": "hello_ack", "server": "v1"},
    {"type": "join_result", "mesh_id": "m"},
])
def test_an_unreadable_answer_is_an_invalid_frame(doc: dict[str, Any]) -> None:
    with pytest.raises(FrameError) as caught:
        parse_reply(doc)
    assert caught.value.code == "invalid_frame"


def test_error_from_frame_rebuilds_the_typed_error_with_its_fields() -> None:
    refused = parse_reply({"type": "send_result", "code": 429, "error": "rate_limited",
                           "detail": "slow", "retry_after_ms": 5})
    assert isinstance(refused, SendResult)
    error = error_from_frame(refused)
    assert isinstance(error, RateLimited) and error.fields == {"retry_after_ms": 5}
    hello = parse_reply({"type": "error", "code": "unknown_member", "detail": "who?"})
    assert isinstance(hello, ErrorReply)
    said = error_from_frame(hello, "the broker refused the hello")
    assert isinstance(said, UnknownMember)
    assert said.detail == "the broker refused the hello: who?"


def test_error_from_frame_keeps_a_code_this_build_does_not_know() -> None:
    reply = parse_reply({"type": "error", "code": "from_the_future", "detail": "d"})
    assert isinstance(reply, ErrorReply)
    error = error_from_frame(reply)
    assert isinstance(error, RemoteError)
    assert error.fields == {"error": "from_the_future"} and "from_the_future" in error.detail
