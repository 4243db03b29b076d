"""Sessions, read state and the receipt queue in inbox.db, on a real SQLite file."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from claudemesh.daemon.store.inbox import INBOX_MIGRATIONS, InboxFilter, InboxStore, NewInboxItem
from claudemesh.daemon.store.readstate import ReadState
from claudemesh.daemon.store.sessions import NewSession, SessionStore
from claudemesh.sqlitedb.db import open_database

ME = "cd" * 32
PEER = "ab" * 32


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(open_database(tmp_path / "inbox.db", INBOX_MIGRATIONS)) as c:
        yield c


def item(cmid: str, *, topic: str | None = None, session: str | None = None,
         sender: str = PEER) -> NewInboxItem:
    return NewInboxItem(f"id-{cmid}", cmid, f"b-{cmid}", "m", ME, topic, sender, "alice", "hi",
                        None, None, "next", None, None, "2026-01-01T00:00:00Z", session=session)


def register(conn: sqlite3.Connection, name: str, *, default: bool = False) -> None:
    SessionStore(conn).insert(NewSession(f"s-{name}", name, "test", None, None, None, default,
                                         60), 1)


def unread(conn: sqlite3.Connection, session: str) -> list[str]:
    return [i.client_message_id for i in InboxStore(conn).query(
        InboxFilter(session=session, unread=True, ascending=True))]


def queue(conn: sqlite3.Connection) -> list[tuple[str, str, str | None, str | None]]:
    return [(q.client_message_id, q.state, q.session, q.path)
            for q in ReadState(conn).queued_receipts(limit=100)]


def test_new_dms_from_others_queue_a_stored_receipt_in_the_same_transaction(
        conn: sqlite3.Connection) -> None:
    InboxStore(conn).insert_new([item("dm"), item("t", topic="news"),
                                 item("self", sender=ME)], 5)
    InboxStore(conn).insert_new([item("dm")], 6)  # a repeat delivery queues nothing
    assert queue(conn) == [("dm", "stored", None, None)]
    assert ReadState(conn).queued_receipts(limit=10)[0].at == 5


def test_a_bare_dm_is_filed_for_the_default_session(conn: sqlite3.Connection) -> None:
    register(conn, "a")
    register(conn, "b", default=True)
    created = InboxStore(conn).insert_new([item("bare"), item("to-a", session="a"),
                                           item("topic", topic="news")], 2)
    assert [(i.client_message_id, i.session) for i in created] == [
        ("bare", "b"), ("to-a", "a"), ("topic", None)]
    assert unread(conn, "a") == ["to-a", "topic"]
    assert unread(conn, "b") == ["bare", "topic"]


def test_marking_seen_is_per_session_and_only_the_first_mark_queues_surfaced(
        conn: sqlite3.Connection) -> None:
    register(conn, "a")
    register(conn, "b")
    InboxStore(conn).insert_new([item("1"), item("2", session="b"), item("t", topic="x")], 2)
    ReadState(conn).mark_receipts_sent([(q.seq, q.state) for q in
                                        ReadState(conn).queued_receipts(limit=10)], 3)
    marked = ReadState(conn).mark_seen("a", ids=None, up_to_seq=10**9, path="hook", now_ms=4)
    assert len(marked) == 2  # "2" is for b only; the topic message counts, but no receipt
    assert queue(conn) == [("1", "surfaced", "a", "hook")]
    assert ReadState(conn).mark_seen("a", ids=["id-1"], up_to_seq=None, path="poll",
                                     now_ms=5) == []
    assert ReadState(conn).mark_seen("b", ids=["id-1", "id-2"], up_to_seq=None,
                                     path="poll", now_ms=6) != []
    # b's marks queue a surfaced receipt for "2" only: "1" was surfaced by a already
    assert queue(conn) == [("1", "surfaced", "a", "hook"), ("2", "surfaced", "b", "poll")]
    assert unread(conn, "a") == [] and unread(conn, "b") == ["t"]
    assert ReadState(conn).unread_counts() == {"a": 0, "b": 1}


def test_a_new_name_does_not_inherit_older_traffic_except_its_own(
        conn: sqlite3.Connection) -> None:
    InboxStore(conn).insert_new([item("old"), item("old-for-late", session="late")], 1)
    register(conn, "late")
    InboxStore(conn).insert_new([item("new")], 2)
    assert unread(conn, "late") == ["old-for-late", "new"]
    # the whole history is still listed for it (read or not)
    listed = InboxStore(conn).query(InboxFilter(session="late", ascending=True))
    assert [i.client_message_id for i in listed] == ["old", "old-for-late", "new"]


def test_an_inbox_of_schema_1_migrates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    with contextlib.closing(open_database(path, INBOX_MIGRATIONS[:1])) as c:
        c.execute("INSERT INTO inbox (id, client_message_id, mesh, recipient_pubkey,"
                  " sender_pubkey, sender_name, body, priority, received_at)"
                  " VALUES ('i1', 'c1', 'm', ?, ?, 'alice', 'old', 'next', 1)", (ME, PEER))
    with contextlib.closing(open_database(path, INBOX_MIGRATIONS)) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (len(INBOX_MIGRATIONS),)
        rows = InboxStore(c).query(InboxFilter())
        assert [(r.body, r.session, r.from_session) for r in rows] == [("old", None, None)]


def test_older_traffic_stays_read_even_after_an_early_message_for_the_name(
        conn: sqlite3.Connection) -> None:
    InboxStore(conn).insert_new([item("for-late", session="late"), item("old")], 1)
    register(conn, "late")
    assert unread(conn, "late") == ["for-late"]


def test_the_horizons_follow_marks_made_out_of_order(conn: sqlite3.Connection) -> None:
    register(conn, "a")
    InboxStore(conn).insert_new([item(str(n), session="a" if n % 2 else None)
                                 for n in range(1, 9)], 1)
    store = ReadState(conn)
    store.mark_seen("a", ids=["id-5", "id-6"], up_to_seq=None, path="poll", now_ms=2)
    assert unread(conn, "a") == ["1", "2", "3", "4", "7", "8"]
    store.mark_seen("a", ids=["id-1", "id-2"], up_to_seq=None, path="poll", now_ms=3)
    assert unread(conn, "a") == ["3", "4", "7", "8"]
    store.mark_seen("a", ids=None, up_to_seq=10**9, path="poll", now_ms=4)
    assert unread(conn, "a") == []
    InboxStore(conn).insert_new([item("9"), item("10", session="a")], 5)
    assert unread(conn, "a") == ["9", "10"]
    assert store.unread_counts() == {"a": 2}
    horizons = conn.execute("SELECT filed_seq, since_seq FROM session_name").fetchone()
    assert horizons[0] >= 7 and horizons[1] >= 8  # the scans start above what was read
