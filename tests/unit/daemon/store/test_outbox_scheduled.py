"""Scheduled sends in OutboxStore on a real SQLite file (issue 15): accept, claim at the
time and only once, restart, expiry from ``deliver_at``, requeue, abort, and migration 4."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from claudemesh.daemon.store.outbox import NewSend, OutboxStore
from claudemesh.daemon.store.outbox_rules import OutboxStatus, Reply
from claudemesh.daemon.store.outbox_schema import OUTBOX_MIGRATIONS
from claudemesh.errors import AbortNotAllowed, OutboxRowNotFound
from claudemesh.sqlitedb.db import open_database

NOW = 1_730_000_000_000
HOUR = 3_600_000
WEEK = 168 * HOUR
FP = bytes(range(32))


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_database(tmp_path / "outbox.db", OUTBOX_MIGRATIONS)
    with contextlib.closing(c):
        yield c


def send(cmid: str = "s-1", deliver_at: int | None = NOW + HOUR, fp: bytes = FP) -> NewSend:
    return NewSend(client_message_id=cmid, fingerprint=fp, payload=b'{"body":"x"}',
                   mesh="demo", destination_kind="topic", destination_ref="general",
                   priority="next", deliver_at=deliver_at)


def status(store: OutboxStore, row_id: str) -> OutboxStatus:
    row = store.get(row_id)
    assert row is not None
    return row.status


def test_a_future_deliver_at_is_stored_scheduled_and_due_at_that_time(
        conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    out = store.accept(send(), NOW)
    assert (out.decision.reply, out.deliver_at) == (Reply.INSERT, NOW + HOUR)
    row = store.get(out.row_id)
    assert row is not None
    assert (row.status, row.deliver_at, row.next_attempt_at, row.enqueued_at) == (
        OutboxStatus.SCHEDULED, NOW + HOUR, NOW + HOUR, NOW)
    assert store.next_due_ms("demo") == NOW + HOUR
    assert store.counts()[OutboxStatus.SCHEDULED] == 1
    assert [r.id for r in store.list_rows(status=OutboxStatus.SCHEDULED, limit=5)] == [
        out.row_id]
    assert store.counts_by_mesh()["demo"][OutboxStatus.SCHEDULED] == 1
    assert store.oldest_pending_ms("demo") is None  # not late before its time


@pytest.mark.parametrize("when", [NOW, NOW - 1, NOW - WEEK])
def test_a_deliver_at_now_or_past_is_an_immediate_send(conn: sqlite3.Connection,
                                                       when: int) -> None:
    store = OutboxStore(conn)
    out = store.accept(send(deliver_at=when), NOW)
    row = store.get(out.row_id)
    assert row is not None and out.deliver_at is None
    assert (row.status, row.deliver_at, row.next_attempt_at) == (OutboxStatus.PENDING, None,
                                                                NOW)


def test_a_scheduled_row_is_not_claimed_before_its_time_and_is_claimed_once(
        conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = store.accept(send(), NOW).row_id
    assert store.claim_due(NOW + HOUR - 1, limit=10) == []
    assert status(store, row_id) is OutboxStatus.SCHEDULED
    [(claimed, payload)] = store.claim_due(NOW + HOUR, limit=10)
    assert (claimed.id, claimed.status, claimed.attempts, payload) == (
        row_id, OutboxStatus.INFLIGHT, 1, b'{"body":"x"}')
    assert store.claim_due(NOW + 2 * HOUR, limit=10) == []
    assert store.mark_done(row_id, broker_message_id="bm", history_id=None, now_ms=NOW + HOUR)
    assert status(store, row_id) is OutboxStatus.DONE


def test_due_rows_go_out_by_their_due_time_not_their_enqueue_order(
        conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    late = store.accept(send("late", deliver_at=NOW + 2 * HOUR), NOW).row_id
    early = store.accept(send("early", deliver_at=NOW + HOUR), NOW + 1).row_id
    now = store.accept(send("now", deliver_at=None), NOW + 2).row_id
    assert store.next_due_ms("demo") == NOW + 2
    claimed = [r.id for r, _ in store.claim_due(NOW + 3 * HOUR, limit=10)]
    assert claimed == [now, early, late]


def test_a_restart_leaves_scheduled_rows_scheduled(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = store.accept(send(), NOW).row_id
    assert store.recover_inflight(NOW + 5, retry_after_ms=500) == 0
    row = store.get(row_id)
    assert row is not None
    assert (row.status, row.next_attempt_at, row.last_error) == (
        OutboxStatus.SCHEDULED, NOW + HOUR, None)


def test_max_age_counts_from_deliver_at(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    far = store.accept(send("far", deliver_at=NOW + 2 * WEEK), NOW).row_id
    retried = store.accept(send("retried", deliver_at=NOW + 2 * WEEK), NOW).row_id
    [(row, _)] = [c for c in store.claim_due(NOW + 2 * WEEK, limit=1)]
    assert row.id == far
    assert store.mark_retry(far, error="503", next_attempt_at=NOW + 2 * WEEK + 500)
    # A week after enqueue: neither is old, although both were enqueued a week ago.
    cutoff = NOW + WEEK + HOUR
    assert store.expire_pending("demo", enqueued_before_ms=cutoff) == 0
    assert (status(store, far), status(store, retried)) == (OutboxStatus.PENDING,
                                                            OutboxStatus.SCHEDULED)
    # Max age past deliver_at: the pending retry and the never-sent scheduled row expire.
    assert store.expire_pending("demo", enqueued_before_ms=NOW + 2 * WEEK + 1) == 2
    assert (status(store, far), status(store, retried)) == (OutboxStatus.DEAD,
                                                            OutboxStatus.DEAD)


def test_a_retry_with_another_deliver_at_answers_the_stored_row(
        conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    first = store.accept(send(), NOW)
    for other in (NOW + 3 * HOUR, None):
        again = store.accept(send(deliver_at=other), NOW + 10)
        assert (again.decision.reply, again.row_id, again.deliver_at) == (
            Reply.SCHEDULED, first.row_id, NOW + HOUR)
    mismatch = store.accept(send(fp=bytes(32)), NOW + 10)
    assert mismatch.decision.conflict == "outbox_scheduled_fingerprint_mismatch"
    assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (1,)


def test_requeue_keeps_or_changes_the_time(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = store.accept(send("a"), NOW).row_id
    kept = store.requeue(row_id, new_client_message_id="b", now_ms=NOW + 1)
    assert (kept.previous_status, kept.new_status, kept.deliver_at) == (
        OutboxStatus.SCHEDULED, OutboxStatus.SCHEDULED, NOW + HOUR)
    moved = store.requeue(kept.new_row_id, new_client_message_id="c", now_ms=NOW + 2,
                          deliver_at=NOW + 5 * HOUR)
    assert (moved.new_status, moved.deliver_at) == (OutboxStatus.SCHEDULED, NOW + 5 * HOUR)
    now = store.requeue(moved.new_row_id, new_client_message_id="d", now_ms=NOW + 3,
                        deliver_at=NOW + 3)
    assert (now.new_status, now.deliver_at) == (OutboxStatus.PENDING, None)
    row = store.get(now.new_row_id)
    assert row is not None and (row.status, row.next_attempt_at) == (OutboxStatus.PENDING,
                                                                    NOW + 3)
    assert [r.client_message_id for r in store.list_rows(status=OutboxStatus.ABORTED,
                                                         limit=9)] == ["c", "b", "a"]


def test_abort_cancels_without_a_successor(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = store.accept(send(), NOW).row_id
    out = store.abort(row_id, now_ms=NOW + 7)
    row = store.get(row_id)
    assert row is not None
    assert (out.previous_status, row.status, row.aborted_at, row.aborted_by,
            row.superseded_by) == (OutboxStatus.SCHEDULED, OutboxStatus.ABORTED, NOW + 7,
                                   "operator", None)
    assert store.claim_due(NOW + 2 * HOUR, limit=10) == []
    assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
    with pytest.raises(AbortNotAllowed):
        store.abort(row_id, now_ms=NOW + 8)
    with pytest.raises(OutboxRowNotFound):
        store.abort("nope", now_ms=NOW)


def test_abort_refuses_a_row_being_sent(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = store.accept(send(deliver_at=None), NOW).row_id
    store.claim_due(NOW, limit=1)
    with pytest.raises(AbortNotAllowed) as info:
        store.abort(row_id, now_ms=NOW)
    assert info.value.fields["status"] == "inflight"
    assert status(store, row_id) is OutboxStatus.INFLIGHT


def test_the_schema_refuses_a_scheduled_row_without_a_time(conn: sqlite3.Connection) -> None:
    row_id = OutboxStore(conn).accept(send(deliver_at=None), NOW).row_id
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE outbox SET status = 'scheduled' WHERE id = ?", (row_id,))


def test_migration_4_keeps_every_row_its_order_and_the_indexes(tmp_path: Path) -> None:
    """An outbox.db of schema 3 (before scheduled sends) with rows in each status."""
    path = tmp_path / "outbox.db"
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS[:3])) as c:
        for i, st in enumerate(("pending", "inflight", "done", "dead", "aborted")):
            c.execute(
                "INSERT INTO outbox (id, client_message_id, request_fingerprint, payload,"
                " enqueued_at, attempts, next_attempt_at, status, mesh, destination_kind,"
                " destination_ref, priority, purpose, broker_message_id)"
                " VALUES (?, ?, ?, x'00', ?, ?, ?, ?, 'demo', 'topic', 'general', 'next',"
                " ?, ?)", (f"r{i}", f"k{i}", FP, NOW + i, i, NOW + i, st,
                           "receipt" if i == 4 else "message", f"bm{i}"))
        c.execute("INSERT INTO receipt VALUES ('demo', 'k2', ?, 'stored', 1, 2, NULL, NULL,"
                  " 'sig')", ("ab" * 32,))
        before = c.execute("SELECT rowid, * FROM outbox ORDER BY rowid").fetchall()
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS)) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (len(OUTBOX_MIGRATIONS),)
        after = c.execute("SELECT rowid, * FROM outbox ORDER BY rowid").fetchall()
        # migration 4 adds deliver_at, 5 (search) reply_to_id: both empty for old rows
        assert [r[:-2] for r in after] == before and {r[-2:] for r in after} == {(None, None)}
        indexes = {r[1] for r in c.execute("PRAGMA index_list(outbox)")}
        assert {"outbox_pending", "outbox_aborted", "outbox_mesh_due"} <= indexes
        assert c.execute("SELECT count(*) FROM receipt").fetchone() == (1,)
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert c.execute("SELECT name FROM sqlite_master WHERE name = 'outbox_v4'"
                         ).fetchone() is None
        store = OutboxStore(c)
        assert [r.id for r, _ in store.claim_due(NOW + 9, limit=9)] == ["r0"]
        assert store.accept(send("new"), NOW).decision.reply is Reply.INSERT
        assert store.counts()[OutboxStatus.SCHEDULED] == 1
