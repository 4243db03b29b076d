"""The SDK on a real mesh: a broker and alice's and bob's daemons, both clients.

Messages go alice -> broker -> bob; events() must hand every message to its reader
exactly once even while bob's daemon restarts or the stream is cut.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from claudemesh.sdk import Client, Event, InboxItem, PeerList
from helpers import DaemonHandle
from meshkit import Mesh2, inbox, wait_for
from sdkkit import Collector, make


def client(kind: str, daemon: DaemonHandle, **kwargs: Any) -> Any:
    return make(kind, daemon.paths, timeout=10.0, **kwargs)


def last_seq(daemon: DaemonHandle) -> str:
    items = inbox(daemon)
    return str(items[-1]["seq"]) if items else "0"


def test_send_arrives_in_the_other_inbox(kind: str, shared_pair: Mesh2) -> None:
    alice, bob = client(kind, shared_pair.alice), client(kind, shared_pair.bob)
    sent = alice.send("bob", f"over the mesh ({kind})", meta={"k": kind})
    page = wait_for(lambda: [i for i in bob.inbox(limit=1000).items
                             if i.client_message_id == sent.client_message_id])
    [item] = page
    assert isinstance(item, InboxItem)
    assert (item.body, item.sender_name, item.meta, item.is_dm) == (
        f"over the mesh ({kind})", "alice", {"k": kind}, True)
    done = wait_for(lambda: [r for r in alice.outbox(client_message_id=sent.client_message_id)
                             if r.status == "done"])
    assert done[0].broker_message_id == item.broker_message_id
    oldest = bob.inbox(order="asc", limit=1)
    assert oldest.next_cursor is not None or len(oldest.items) == 1


def test_peers_profile_and_session_lines(kind: str, shared_pair: Mesh2) -> None:
    alice, bob = client(kind, shared_pair.alice), client(kind, shared_pair.bob)
    applied = alice.set_profile(summary=f"sdk {kind}", status="working")
    assert sorted(applied["applied"]) == ["status", "summary"]
    listed = bob.peers()
    assert isinstance(listed, PeerList) and listed.unavailable == []
    me = next(p for p in listed.peers if p.display_name == "alice")
    assert (me.summary, me.status, me.online) == (f"sdk {kind}", "working", True)
    session = alice.register_session(f"lines-{kind}", harness="sdk", pid=os.getpid())
    try:
        line = alice.set_profile(session=session.session_id, summary="reviewing")
        assert line["session"] in (session.session_id, session.name)

        def published() -> Any:
            peer = next(p for p in bob.peers().peers if p.display_name == "alice")
            return [s for s in peer.sessions if s.name == session.name]
        [seen] = wait_for(published)
        assert (seen.summary, seen.harness, seen.address) == (
            "reviewing", "sdk", f"alice/{session.name}")
    finally:
        alice.end_session(session.session_id)


def test_a_session_address_unread_seen_and_the_receipts(kind: str, shared_pair: Mesh2) -> None:
    """1. bob registers a session; alice sends to bob/<session>.
    2. bob's session lists it as unread, marks it seen (path hook); nothing is unread.
    3. alice's message status reaches surfaced, with the stored and surfaced receipts."""
    alice, bob = client(kind, shared_pair.alice), client(kind, shared_pair.bob)
    name = f"build-{kind}"
    session = bob.register_session(name, harness="sdk", pid=os.getpid())
    try:
        sent = alice.send(f"bob/{name}", "for your session")
        [item] = wait_for(lambda: bob.inbox(session=session.session_id, unread=True).items)
        assert (item.client_message_id, item.session) == (sent.client_message_id, name)
        assert item.reply_to_address == "alice"
        assert bob.session(session.session_id).unread == 1
        assert bob.mark_seen(session.session_id, ids=[item.id], path="hook") == [item.seq]
        assert bob.inbox(session=session.session_id, unread=True).items == []
        status = wait_for(lambda: (s := alice.message_status(sent.client_message_id)).state
                          == "surfaced" and s)
        assert (status.surfaced_path, status.surfaced_session) == ("hook", name)
        assert sorted(r.state for r in status.receipts) == ["stored", "surfaced"]
        assert {r.recipient_pubkey for r in status.receipts} == {shared_pair.bob_key}
        receipts = bob.outbox(purpose="receipt", limit=500)
        assert receipts and {r.purpose for r in receipts} == {"receipt"}
        assert all(r.purpose == "message" for r in bob.outbox(limit=500))
    finally:
        bob.end_session(session.session_id)


def test_a_reply_from_a_session_carries_from_session(kind: str, shared_pair: Mesh2) -> None:
    alice, bob = client(kind, shared_pair.alice), client(kind, shared_pair.bob)
    mine = alice.register_session(f"asker-{kind}", pid=os.getpid())
    try:
        sent = alice.send("bob", "who asks?", session=mine.session_id)
        [item] = wait_for(lambda: [i for i in bob.inbox(limit=1000).items
                                   if i.client_message_id == sent.client_message_id])
        assert (item.from_session, item.reply_to_address) == (mine.name, f"alice/{mine.name}")
    finally:
        alice.end_session(mine.session_id)


def send_many(daemon: DaemonHandle, count: int, tag: str) -> list[str]:
    api = Client(daemon.paths, timeout=10.0)
    return [api.send("bob", f"{tag} {i}", client_message_id=f"{tag}-{i}").client_message_id
            for i in range(count)]


def check_exactly_once(events: list[Event], expected: list[str]) -> None:
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), f"a seq repeated or went backwards: {seqs}"
    assert [e.data["client_message_id"] for e in events] == expected


@pytest.mark.parametrize("how", ["stop", "kill9"])
def test_events_resume_across_a_daemon_restart(kind: str, how: str, shared_pair: Mesh2) -> None:
    """1. bob reads events() from his last seq; alice sends 5, bob reads them.
    2. bob's daemon stops (cleanly, or kill -9) and alice sends 5 more meanwhile.
    3. bob's daemon starts again; alice sends 5 more.
    4. The reader saw all 15 once each, in seq order, and reconnected in between."""
    bob = shared_pair.bob
    reader = Collector(client(kind, bob), last_event_id=last_seq(bob)).start()
    tag = f"restart-{kind}-{how}"
    try:
        before = send_many(shared_pair.alice, 5, f"{tag}-a")
        got = reader.messages(5)
        bob.stop() if how == "stop" else bob.kill9()
        during = send_many(shared_pair.alice, 5, f"{tag}-b")
        bob.start()
        after = send_many(shared_pair.alice, 5, f"{tag}-c")
        got += reader.messages(10)
        check_exactly_once(got, before + during + after)
        assert reader.quiet(1.0) == []
        assert reader.reconnects, "the reader never reconnected"
    finally:
        reader.stop()
        bob.stop()
        bob.start()
        reader.join()


def test_events_resume_after_the_reader_drops_the_stream(kind: str, shared_pair: Mesh2) -> None:
    """Cut the stream mid-way (the iterator is closed), send more, and resume from the
    last id seen: the rest arrive, nothing twice."""
    bob = client(kind, shared_pair.bob)
    start = last_seq(shared_pair.bob)
    tag = f"cut-{kind}"
    first = send_many(shared_pair.alice, 6, f"{tag}-a")
    wait_for(lambda: len([i for i in inbox(shared_pair.bob)
                          if i["client_message_id"].startswith(tag)]) == 6)
    stream = bob.events(last_event_id=start)
    seen: list[Event] = []
    for event in stream:
        if event.kind == "message":
            seen.append(event)
        if len(seen) == 3:
            break
    stream.close()
    rest = send_many(shared_pair.alice, 2, f"{tag}-b")
    reader = Collector(bob, last_event_id=seen[-1].id).start()
    try:
        seen += reader.messages(5)
        check_exactly_once(seen, first + rest)
        assert reader.quiet(1.0) == []
    finally:
        reader.stop()
        shared_pair.bob.stop()
        shared_pair.bob.start()
        reader.join()


def test_events_without_reconnect_end_with_the_stream(kind: str, shared_pair: Mesh2) -> None:
    bob = shared_pair.bob
    reader = Collector(client(kind, bob), last_event_id=last_seq(bob), reconnect=False).start()
    sent = send_many(shared_pair.alice, 1, f"once-{kind}")
    [event] = reader.messages(1)
    assert event.data["client_message_id"] == sent[0]
    bob.stop()
    reader.join()
    assert reader.error is None and reader.reconnects == []
    bob.start()
