from __future__ import annotations

import json
from typing import Any

import pytest

from claudemesh.protocol.features import build_feature_map
from claudemesh.protocol.frames import (
    FrameError,
    Hello,
    Send,
    SessionEntry,
    SetProfile,
    parse_client_frame,
    parse_history_item,
    parse_push,
    validate_client_frame,
)

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


PROFILE = {"type": "set_profile", "req_id": "p1"}
FULL_ENTRY = {"name": "build", "summary": "fixing CI", "status": "working",
              "harness": "claude-code"}


def test_set_profile_takes_a_list_of_sessions() -> None:
    frame = parse_client_frame(json.dumps({**PROFILE, "sessions": [
        FULL_ENTRY, {"name": "Review.2_x-y"}, {"name": "a" * 64, "summary": "s" * 512,
                                                "harness": "h" * 64}]}))
    assert isinstance(frame, SetProfile) and frame.sessions is not None
    assert frame.sessions[0] == SessionEntry(name="build", summary="fixing CI",
                                             status="working", harness="claude-code")
    assert frame.sessions[1] == SessionEntry(name="Review.2_x-y")
    assert (frame.sessions[1].summary, frame.sessions[1].status,
            frame.sessions[1].harness) == (None, None, None)
    assert len(frame.sessions) == 3
    cleared = parse_client_frame(json.dumps({**PROFILE, "sessions": []}))
    assert isinstance(cleared, SetProfile) and cleared.sessions == []
    absent = parse_client_frame(json.dumps({**PROFILE, "summary": "x"}))
    assert isinstance(absent, SetProfile) and absent.sessions is None


def test_thirty_two_sessions_fit() -> None:
    frame = parse_client_frame(json.dumps({**PROFILE, "sessions": [
        {"name": f"s{i}"} for i in range(32)]}))
    assert isinstance(frame, SetProfile) and frame.sessions is not None
    assert len(frame.sessions) == 32


@pytest.mark.parametrize(("sessions", "detail"), [
    ([{"name": f"s{i}"} for i in range(33)], "field 'sessions': Value should have at most 32"),
    ([{"name": "build"}, {"name": "other"}, {"name": "build"}],
     "field 'sessions': Value error, session name 'build' appears more than once"),
    ([{"name": "-build"}], "field 'sessions.0.name'"),
    ([{"name": "build"}, {"name": "bo/b"}], "field 'sessions.1.name'"),
    ([{"name": ""}], "field 'sessions.0.name'"),
    ([{"name": "a" * 65}], "field 'sessions.0.name'"),
    ([{"name": "build\n"}], "field 'sessions.0.name'"),
    ([{"name": "é"}], "field 'sessions.0.name'"),
    ([{"summary": "x"}], "missing field 'sessions.0.name'"),
    ([{"name": 7}], "field 'sessions.0.name'"),
    ([{**FULL_ENTRY, "summary": "s" * 513}], "field 'sessions.0.summary'"),
    ([{**FULL_ENTRY, "status": "asleep"}], "field 'sessions.0.status'"),
    ([{**FULL_ENTRY, "harness": ""}], "field 'sessions.0.harness'"),
    ([{**FULL_ENTRY, "harness": "h" * 65}], "field 'sessions.0.harness'"),
    ([{**FULL_ENTRY, "pid": 1}], "unknown field 'sessions.0.pid'"),
    (["build"], "field 'sessions.0'"),
    ({"name": "build"}, "field 'sessions'"),
])
def test_bad_sessions_are_invalid_frames_naming_the_field(sessions: Any, detail: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(json.dumps({**PROFILE, "sessions": sessions}))
    assert (info.value.code, info.value.req_id) == ("invalid_frame", "p1")
    assert detail in info.value.detail, info.value.detail


def test_sessions_are_an_unknown_field_without_the_feature() -> None:
    doc = {**PROFILE, "sessions": [FULL_ENTRY]}
    without = build_feature_map(omit=frozenset({"member_sessions"}))
    with pytest.raises(FrameError) as info:
        validate_client_frame(doc, features=without)
    assert (info.value.code, info.value.detail, info.value.req_id) == (
        "invalid_frame", "unknown field 'sessions'", "p1")
    with pytest.raises(FrameError, match="unknown field 'sessions'"):  # even an empty list
        validate_client_frame({**PROFILE, "sessions": []}, features=without)
    # The rest of set_profile is untouched, and a broker with the feature takes sessions.
    assert isinstance(validate_client_frame({**PROFILE, "summary": "x"}, features=without),
                      SetProfile)
    assert isinstance(validate_client_frame(doc, features=build_feature_map()), SetProfile)
    assert isinstance(validate_client_frame(doc), SetProfile)  # no feature map: every field


# issue 15: topic history, group roles, anycast pushes

def _frame(doc: dict[str, Any]) -> Any:
    return validate_client_frame({"req_id": "r1", **doc})


def test_topic_history_limits_and_cursor() -> None:
    page = _frame({"type": "topic_history", "topic": "news"})
    assert (page.limit, page.before) == (50, None)
    assert _frame({"type": "topic_history", "topic": "news", "before": "42",
                   "limit": 1000}).before == "42"
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "5"}, {"before": "4x"},
                {"before": 4}, {"topic": "#news"}, {"topic": "@ops"}):
        with pytest.raises(FrameError):
            _frame({"type": "topic_history", "topic": "news", **bad})


def test_join_group_takes_an_optional_role_and_list_groups_nothing() -> None:
    assert _frame({"type": "join_group", "group": "ops"}).role is None
    assert _frame({"type": "join_group", "group": "ops", "role": "lead.1"}).role == "lead.1"
    for role in ("", "x" * 33, "has space", "-lead", 5):
        with pytest.raises(FrameError):
            _frame({"type": "join_group", "group": "ops", "role": role})
    _frame({"type": "list_groups"})
    with pytest.raises(FrameError, match="unknown field 'roster'"):
        _frame({"type": "list_groups", "roster": True})


PUSH = {"type": "push", "delivery_id": "7", "mesh_id": "m1", "client_message_id": "c1",
        "broker_message_id": "b1", "history_id": "3", "sender_pubkey": "ab" * 32,
        "sender_name": "alice", "destination_kind": "queue", "destination_ref": "@ops",
        "priority": "next", "reply_to": None, "meta": None, "body_hash": "00" * 32,
        "body": {"kind": "plain", "text": "hi"}, "created_at": "2026-12-03T00:00:00.000Z"}


def test_a_history_item_is_a_push_without_its_delivery() -> None:
    assert parse_push(PUSH).destination_kind == "queue"  # anycast pushes parse
    item = {k: v for k, v in PUSH.items() if k not in ("type", "delivery_id")}
    assert parse_history_item(item).client_message_id == "c1"
    with pytest.raises(FrameError, match="delivery_id"):
        parse_push({**item, "type": "push"})
    with pytest.raises(FrameError, match="unknown field 'delivery_id'"):
        parse_history_item({**item, "delivery_id": "7"})


def test_blob_begin_names_recipients_or_a_topic_exactly_once() -> None:
    base = {"type": "blob_begin", "file_id": "F" * 20, "size": 10}
    assert _frame({**base, "topic": "news"}).topic == "news"
    assert _frame({**base, "recipients": ["ab" * 32]}).recipients == ["ab" * 32]
    for bad in ({}, {"recipients": ["ab" * 32], "topic": "news"}, {"topic": "#news"},
                {"recipients": []}, {"topic": None, "recipients": None}):
        with pytest.raises(FrameError) as caught:
            _frame({**base, **bad})
        assert caught.value.code == "invalid_frame"
