"""The SDK's search, thread and scheduled send on a real mesh (a broker, alice's and
bob's daemons), both clients: what the daemon decrypted is found, threads come in
order across what was sent and received, a ``deliver_at`` send waits, then lands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from claudemesh.sdk import (
    InboxItem,
    InvalidRequest,
    MessageNotFound,
    OutboxItem,
    SearchHit,
    SearchPage,
    SentMessage,
    Thread,
    UnknownMesh,
)
from helpers import DaemonHandle
from meshkit import Mesh2, wait_for
from sdkkit import make


def client(kind: str, daemon: DaemonHandle) -> Any:
    return make(kind, daemon.paths, timeout=10.0)


def arrived(api: Any, cmid: str) -> InboxItem:
    items = wait_for(lambda: [i for i in api.inbox(limit=1000).items
                              if i.client_message_id == cmid])
    return items[0]  # type: ignore[no-any-return]


def delivered(api: Any, cmid: str) -> OutboxItem:
    rows = wait_for(lambda: [r for r in api.outbox(client_message_id=cmid)
                             if r.status == "done"])
    return rows[0]  # type: ignore[no-any-return]


def test_search_finds_a_word_of_a_decrypted_dm_and_your_own_sent_copy(
        kind: str, shared_pair: Mesh2) -> None:
    alice, bob = client(kind, shared_pair.alice), client(kind, shared_pair.bob)
    word = f"zebra{kind}"
    sent = alice.send("bob", f"the {word} rollout went fine, see the dashboard")
    other = alice.send("bob", f"another {word} note")
    arrived(bob, sent.client_message_id)
    arrived(bob, other.client_message_id)
    page = bob.search(word)
    assert isinstance(page, SearchPage) and page.sent is False
    hits = {h.item.client_message_id: h for h in page.items}
    assert set(hits) == {sent.client_message_id, other.client_message_id}
    hit = hits[sent.client_message_id]
    assert isinstance(hit, SearchHit) and isinstance(hit.item, InboxItem) and not hit.sent
    assert hit.body == f"the {word} rollout went fine, see the dashboard"
    assert f"[{word}]" in hit.highlight
    assert (hit.item.sender_name, hit.item.is_dm) == ("alice", True)
    # paging: the cursor is an offset; two pages of one hold both hits, once each
    first = bob.search(word, limit=1)
    assert len(first.items) == 1 and first.next_cursor == "1"
    second = bob.search(word, limit=1, cursor=first.next_cursor)
    assert {first.items[0].item.client_message_id, second.items[0].item.client_message_id} == (
        set(hits))
    assert bob.search(word, sender="carol").items == []
    assert len(bob.search(word, sender="alice").items) == 2
    assert alice.search(word).items == []  # alice received none of it
    mine = alice.search(f"{word} rollout", sent=True)
    [own] = mine.items
    assert mine.sent and own.sent and isinstance(own.item, OutboxItem)
    assert own.item.client_message_id == sent.client_message_id
    assert own.body == f"the {word} rollout went fine, see the dashboard"
    assert f"[{word}]" in own.highlight and "[rollout]" in own.highlight


def test_search_refusals_are_typed(kind: str, shared_pair: Mesh2) -> None:
    bob = client(kind, shared_pair.bob)
    with pytest.raises(InvalidRequest) as bad:
        bob.search('"unbalanced')
    assert bad.value.detail.startswith("q:")
    with pytest.raises(InvalidRequest, match="q:"):
        bob.search("(", sent=True)
    with pytest.raises(UnknownMesh):
        bob.search("x", mesh="elsewhere")
    with pytest.raises(InvalidRequest, match="sender describes received messages"):
        bob.search("x", sent=True, sender="alice")


def test_thread_returns_a_reply_chain_in_order(kind: str, shared_pair: Mesh2) -> None:
    alice, bob = client(kind, shared_pair.alice), client(kind, shared_pair.bob)
    root = alice.send("bob", f"question ({kind}): ship it?")
    asked = arrived(bob, root.client_message_id)
    answer = bob.send("alice", "yes, after the tests", reply_to=asked.broker_message_id)
    answered = arrived(alice, answer.client_message_id)
    again = alice.send("bob", "tests are green", reply_to=answered.broker_message_id)
    arrived(bob, again.client_message_id)
    for cmid in (root.client_message_id, answer.client_message_id, again.client_message_id):
        delivered(alice if cmid != answer.client_message_id else bob, cmid)
    unrelated = alice.send("bob", "unrelated")
    arrived(bob, unrelated.client_message_id)

    seen_by_alice = alice.thread(answered.id)  # by an inbox id, from the middle
    assert isinstance(seen_by_alice, Thread) and seen_by_alice.truncated is False
    assert [(type(i), i.body) for i in seen_by_alice.items] == [
        (SentMessage, f"question ({kind}): ship it?"),
        (InboxItem, "yes, after the tests"),
        (SentMessage, "tests are green")]
    assert seen_by_alice.thread == asked.broker_message_id
    first = seen_by_alice.items[0]
    assert isinstance(first, SentMessage) and first.direction == "sent"
    assert first.client_message_id == root.client_message_id

    seen_by_bob = bob.thread(again.client_message_id)  # by the sender's id, from the end
    assert [(type(i), i.body) for i in seen_by_bob.items] == [
        (InboxItem, f"question ({kind}): ship it?"),
        (SentMessage, "yes, after the tests"),
        (InboxItem, "tests are green")]
    assert len(bob.thread(asked.id, limit=2).items) == 2
    with pytest.raises(MessageNotFound):
        bob.thread("no-such-message")
    with pytest.raises(UnknownMesh):
        bob.thread(asked.id, mesh="elsewhere")


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_send_with_deliver_at_is_scheduled_and_lands_later(kind: str, shared_pair: Mesh2) -> None:
    alice, bob = client(kind, shared_pair.alice), client(kind, shared_pair.bob)
    when = datetime.now(UTC) + timedelta(seconds=1.5)
    later = alice.send("bob", f"later ({kind})", deliver_at=when)
    assert later.status == "scheduled"
    assert later.deliver_at is not None
    assert abs(_ms(later.deliver_at) - int(when.timestamp() * 1000)) <= 1
    [row] = alice.outbox(client_message_id=later.client_message_id)
    assert (row.status, row.deliver_at) == ("scheduled", later.deliver_at)
    if datetime.now(UTC) < when - timedelta(seconds=0.3):  # a slow machine may be late
        assert not [i for i in bob.inbox(limit=1000).items
                    if i.client_message_id == later.client_message_id]
    landed = arrived(bob, later.client_message_id)
    assert landed.body == f"later ({kind})"
    assert landed.received_at is not None
    assert _ms(landed.received_at) >= _ms(later.deliver_at)
    # an ISO string in another zone is the same instant
    text = (datetime.now(UTC) + timedelta(seconds=1)).astimezone(
        timezone(timedelta(hours=2))).isoformat()
    iso = alice.send("bob", f"iso ({kind})", deliver_at=text)
    assert iso.status == "scheduled"
    assert iso.deliver_at is not None
    assert _ms(iso.deliver_at) == int(datetime.fromisoformat(text).timestamp() * 1000)
    arrived(bob, iso.client_message_id)


def test_a_bad_deliver_at_is_refused_before_anything_is_queued(kind: str,
                                                               shared_pair: Mesh2) -> None:
    alice = client(kind, shared_pair.alice)
    with pytest.raises(InvalidRequest, match="time zone"):
        alice.send("bob", "naive", deliver_at=datetime(2030, 1, 1, 12, 0),
                   client_message_id=f"naive-{kind}")
    assert alice.outbox(client_message_id=f"naive-{kind}") == []
    with pytest.raises(InvalidRequest, match="deliver_at"):
        alice.send("bob", "nonsense", deliver_at="tomorrow-ish")
    with pytest.raises(InvalidRequest, match="366 days"):
        alice.send("bob", "too far", deliver_at=datetime.now(UTC) + timedelta(days=400))
