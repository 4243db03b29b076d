"""sdk.search and deliver_at: the requests they build and how answers are read, no I/O."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime, timedelta, timezone

import pytest

from claudemesh.errors import InvalidRequest, RemoteError
from claudemesh.sdk import InboxItem, OutboxItem, SentMessage, messages, search


def query(path: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))


def test_a_received_search_goes_to_the_inbox_and_a_sent_one_to_the_outbox() -> None:
    call = search.search("deploy NOT staging", session="build", sender="bob", topic="#ops")
    assert call.path.startswith("/v1/inbox?")
    assert query(call.path) == {"q": "deploy NOT staging", "limit": "20", "session": "build",
                                "from": "bob", "topic": "#ops"}
    sent = search.search("deploy", sent=True, mesh="demo", limit=5, cursor="10")
    assert sent.path.startswith("/v1/outbox?")
    assert query(sent.path) == {"q": "deploy", "mesh": "demo", "limit": "5", "cursor": "10"}
    with pytest.raises(InvalidRequest, match="topic describes received messages"):
        search.search("x", sent=True, topic="#ops")


def test_thread_path() -> None:
    assert query(search.thread("m/1?", limit=3).path) == {"thread": "m/1?", "limit": "3"}
    assert search.thread("m1").path == "/v1/inbox?thread=m1"


INBOX_ITEM = {"seq": 1, "id": "i1", "client_message_id": "c1", "broker_message_id": "b1",
              "mesh": "demo", "sender_pubkey": "ab" * 32, "sender_name": "alice",
              "destination": "cd" * 32, "topic": None, "recipient_pubkey": "cd" * 32,
              "body": "the zebra", "undecryptable": None, "meta": None, "priority": "next",
              "reply_to": None, "history_id": None, "created_at": None, "received_at": None}
OUTBOX_ITEM = {"id": "o1", "client_message_id": "c2", "status": "done", "attempts": 1,
               "enqueued_at": "2026-12-03T18:00:00.000Z", "next_attempt_at": None,
               "delivered_at": None, "broker_message_id": "b2", "history_id": None,
               "last_error": None, "aborted_at": None, "aborted_by": None,
               "superseded_by": None, "mesh": "demo", "destination": "#ops",
               "priority": "next", "fingerprint_prefix": None, "payload_bytes": 10}


def test_pages_read_hits_as_the_right_model() -> None:
    read = search.SearchPage.reader(sent=False)
    page = read({"items": [{**INBOX_ITEM, "highlight": "the [zebra]"}], "next_cursor": "1"})
    [hit] = page.items
    assert isinstance(hit.item, InboxItem) and not hit.sent
    assert (hit.body, hit.highlight, page.next_cursor) == ("the zebra", "the [zebra]", "1")
    sent = search.SearchPage.reader(sent=True)(
        {"items": [{**OUTBOX_ITEM, "body": "ops zebra", "highlight": "ops [zebra]"}],
         "next_cursor": None})
    assert isinstance(sent.items[0].item, OutboxItem) and sent.items[0].sent
    with pytest.raises(RemoteError, match="highlight"):
        read({"items": [INBOX_ITEM], "next_cursor": None})


def test_a_thread_reads_each_item_by_its_direction() -> None:
    sent_view = {"direction": "sent", "id": "o1", "client_message_id": "c2",
                 "broker_message_id": "b2", "mesh": "demo", "destination": "#ops",
                 "topic": "ops", "body": "hi", "priority": "next", "reply_to": "b1",
                 "status": "done", "created_at": None, "delivered_at": None}
    got = search.Thread.from_wire({"thread": "b1", "truncated": False, "next_cursor": None,
                                   "items": [{"direction": "received", **INBOX_ITEM},
                                             sent_view]})
    assert [type(i) for i in got.items] == [InboxItem, SentMessage]
    assert got.items[1].reply_to == "b1"
    with pytest.raises(RemoteError, match="direction"):
        search.Thread.from_wire({"thread": "b", "items": [{**sent_view, "direction": "up"}]})


def test_deliver_at_takes_an_aware_datetime_or_a_string() -> None:
    when = datetime(2026, 12, 3, 20, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert messages.deliver_at_text(when) == "2026-12-03T18:00:00.123Z"
    assert messages.deliver_at_text("2026-12-03T18:00:00Z") == "2026-12-03T18:00:00Z"
    assert messages.deliver_at_text(None) is None
    body = messages.send_body("bob", "hi", client_message_id="c",
                              deliver_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert body["deliver_at"] == "2026-01-01T00:00:00.000Z"
    assert messages.requeue("r", deliver_at=datetime(2026, 1, 1, tzinfo=UTC)).body == {
        "id": "r", "deliver_at": "2026-01-01T00:00:00.000Z"}
    with pytest.raises(InvalidRequest, match="time zone"):
        messages.send_body("bob", "hi", client_message_id="c",
                           deliver_at=datetime(2026, 1, 1))  # naive: the point
