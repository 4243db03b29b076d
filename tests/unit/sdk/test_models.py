"""Models read from answers shaped as docs/api.md lists them: typed, tolerant, strict on types."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claudemesh.errors import RemoteError
from claudemesh.sdk import (
    Event,
    InboxItem,
    InboxPage,
    MessageStatus,
    OutboxItem,
    Peer,
    PeerList,
    Receipt,
    SendResult,
    Session,
    VersionInfo,
)
from claudemesh.sdk.sse import SseEvent

PUB = "ab" * 32
ITEM: dict[str, Any] = {
    "seq": 7, "id": "01J0ITEM", "client_message_id": "c-1", "broker_message_id": "b-1",
    "mesh": "demo", "sender_pubkey": PUB, "sender_name": "alice", "destination": "cd" * 32,
    "topic": None, "recipient_pubkey": "cd" * 32, "body": "hi", "undecryptable": None,
    "meta": {"k": 1}, "priority": "next", "reply_to": None, "history_id": "h-1",
    "created_at": "2026-11-26T15:00:00.000Z", "received_at": "2026-11-26T15:00:00.100Z",
    "session": "build", "from_session": "review", "reply_to_address": "alice/review",
    "seen_at": None,
}
SESSION: dict[str, Any] = {
    "session_id": "01J0SESSION", "name": "build", "address": "bob/build",
    "addresses": [{"mesh": "demo", "address": "bob/build", "pubkey_address": f"{PUB}/build"}],
    "harness": "claude-code", "pid": 4242, "cwd": "/src", "default": True, "summary": None,
    "status": "working", "lease_expires_at": None, "created_at": "2026-11-26T15:00:00.000Z",
    "last_seen_at": "2026-11-26T15:00:01.000Z", "unread": 3,
}
OUTBOX: dict[str, Any] = {
    "id": "01J0ROW", "client_message_id": "c-1", "status": "done", "attempts": 1,
    "enqueued_at": "2026-11-26T15:00:00.000Z", "next_attempt_at": "2026-11-26T15:00:00.000Z",
    "delivered_at": "2026-11-26T15:00:00.050Z", "broker_message_id": "b-1",
    "history_id": "h-1", "last_error": None, "aborted_at": None, "aborted_by": None,
    "superseded_by": None, "mesh": "demo", "destination": "bob", "priority": "next",
    "fingerprint_prefix": "0011223344556677", "payload_bytes": 120,
    "stored_at": "2026-11-26T15:00:00.070Z", "surfaced_at": None, "surfaced_path": None,
    "purpose": "message",
}


def test_an_inbox_item_keeps_every_documented_field_and_the_raw_dict() -> None:
    item = InboxItem.from_wire({**ITEM, "added_later": [1]})
    assert (item.seq, item.body, item.meta, item.session, item.reply_to_address) == (
        7, "hi", {"k": 1}, "build", "alice/review")
    assert item.is_dm
    assert item.raw["added_later"] == [1]  # an unknown field is kept, never refused
    assert item == InboxItem.from_wire(ITEM)  # raw takes no part in equality


def test_an_older_daemon_without_the_session_fields_still_reads() -> None:
    old = {k: v for k, v in ITEM.items()
           if k not in ("session", "from_session", "reply_to_address", "seen_at")}
    item = InboxItem.from_wire(old)
    assert (item.session, item.from_session, item.reply_to_address, item.seen_at) == (
        None, None, None, None)


@pytest.mark.parametrize(("change", "field"), [
    ({"seq": "7"}, "seq"), ({"seq": True}, "seq"), ({"body": 5}, "body"),
    ({"meta": []}, "meta"), ({"mesh": None}, "mesh"),
])
def test_a_wrong_type_or_a_missing_required_field_names_the_field(change: dict[str, Any],
                                                                  field: str) -> None:
    with pytest.raises(RemoteError, match=repr(field)) as caught:
        InboxItem.from_wire({**ITEM, **change})
    assert caught.value.fields["field"] == field


def test_a_missing_field_is_refused_and_a_non_object_answer_too() -> None:
    with pytest.raises(RemoteError, match="lacks 'seq'"):
        InboxItem.from_wire({k: v for k, v in ITEM.items() if k != "seq"})
    with pytest.raises(RemoteError, match="list where inbox item"):
        InboxItem.from_wire([ITEM])


def test_an_inbox_page() -> None:
    page = InboxPage.from_wire({"items": [ITEM, {**ITEM, "seq": 8}], "next_cursor": "8"})
    assert [i.seq for i in page.items] == [7, 8]
    assert page.next_cursor == "8"
    assert InboxPage.from_wire({"items": [], "next_cursor": None}).next_cursor is None


def test_send_results_for_202_and_for_the_200_duplicate() -> None:
    queued = SendResult.from_wire({"client_message_id": "c", "outbox_id": "r",
                                   "status": "queued"})
    assert (queued.status, queued.duplicate, queued.broker_message_id) == ("queued", False, None)
    dup = SendResult.from_wire({"client_message_id": "c", "outbox_id": "r", "duplicate": True,
                                "broker_message_id": "b", "history_id": "h"})
    assert (dup.status, dup.duplicate, dup.broker_message_id, dup.history_id) == (
        "done", True, "b", "h")
    with pytest.raises(RemoteError, match="status 'lost'"):
        SendResult.from_wire({"client_message_id": "c", "status": "lost"})


def test_an_outbox_item_with_the_receipt_fields() -> None:
    row = OutboxItem.from_wire(OUTBOX)
    assert (row.status, row.attempts, row.stored_at, row.purpose) == (
        "done", 1, "2026-11-26T15:00:00.070Z", "message")
    older = OutboxItem.from_wire({k: v for k, v in OUTBOX.items()
                                  if k not in ("stored_at", "surfaced_at", "surfaced_path",
                                               "purpose")})
    assert (older.stored_at, older.purpose) == (None, None)


def test_a_message_status_with_its_receipts() -> None:
    receipt = {"state": "surfaced", "recipient_pubkey": PUB, "at": "2026-11-26T15:00:01.000Z",
               "received_at": "2026-11-26T15:00:01.020Z", "session": "build", "path": "hook"}
    status = MessageStatus.from_wire({
        "client_message_id": "c-1", "mesh": "demo", "destination": PUB, "outbox_id": "r",
        "status": "done", "state": "surfaced", "broker_message_id": "b-1",
        "enqueued_at": "2026-11-26T15:00:00.000Z", "accepted_at": "2026-11-26T15:00:00.050Z",
        "stored_at": "2026-11-26T15:00:00.070Z", "surfaced_at": "2026-11-26T15:00:01.000Z",
        "surfaced_path": "hook", "surfaced_session": "build", "receipts": [receipt]})
    assert status.state == "surfaced"
    assert status.receipts == [Receipt.from_wire(receipt)]
    assert status.receipts[0].path == "hook"


def test_a_session_and_its_addresses() -> None:
    session = Session.from_wire(SESSION)
    assert (session.name, session.default, session.pid, session.unread) == (
        "build", True, 4242, 3)
    assert session.addresses[0].pubkey_address == f"{PUB}/build"


def test_peers_with_sessions_and_the_unavailable_meshes() -> None:
    peer = {"mesh": "demo", "pubkey": PUB, "member_id": "m", "display_name": "bob",
            "online": True, "status": "idle", "summary": None, "visible": True, "avatar": None,
            "title": None, "bio": None, "capabilities": ["deploy"], "groups": ["ops"],
            "sessions": [{"name": "build", "address": "bob/build", "summary": "tests",
                          "status": "working", "harness": "claude-code"}]}
    listed = PeerList.from_wire({"peers": [peer], "unavailable": ["other"]})
    assert listed.unavailable == ["other"]
    assert listed.peers[0].sessions[0].address == "bob/build"
    no_sessions = Peer.from_wire({k: v for k, v in peer.items() if k != "sessions"})
    assert no_sessions.sessions == []
    with pytest.raises(RemoteError, match="'capabilities' with a non-string"):
        Peer.from_wire({**peer, "capabilities": [1]})


def test_version_info() -> None:
    info = VersionInfo.from_wire({
        "daemon_version": "0.1.0", "ipc_api": "v1", "ipc_features": ["send"],
        "schema_version": 3, "pid": 10, "meshes": [
            {"slug": "demo", "mesh_id": "m", "member_pubkey": PUB, "display_name": "a",
             "broker_features_negotiated": ["frame_batch"]}]})
    assert info.meshes[0].broker_features_negotiated == ["frame_batch"]


def test_events_from_sse_with_their_message_and_seq() -> None:
    message = Event.from_sse(SseEvent("message", "7", json.dumps(ITEM)))
    assert (message.kind, message.id, message.seq) == ("message", "7", 7)
    assert message.message == InboxItem.from_wire(ITEM)
    peer = Event.from_sse(SseEvent("peer_join", None, '{"pubkey": "p"}'))
    assert (peer.message, peer.seq) == (None, None)
    assert Event.from_wire({"event": "peer_join", "id": None, "data": {"pubkey": "p"}}) == peer
    with pytest.raises(RemoteError, match="not JSON"):
        Event.from_sse(SseEvent("message", "1", "{oops"))
    with pytest.raises(RemoteError, match="not an object"):
        Event.from_sse(SseEvent("message", "1", "[]"))
