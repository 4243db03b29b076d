"""OutboxStore on a real SQLite file: every lookup-table row, requeue, drain transitions."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from claudemesh.daemon.store.outbox import NewSend, OutboxStore
from claudemesh.daemon.store.outbox_rules import TRANSITIONS, OutboxEvent, OutboxStatus, Reply
from claudemesh.daemon.store.outbox_schema import OUTBOX_MIGRATIONS
from claudemesh.errors import (
    ClientMessageIdInUse,
    OutboxRowNotFound,
    RequeueNotAllowed,
    StoreCorrupt,
)
from claudemesh.sqlitedb.db import integrity_check, open_database

NOW = 1_730_000_000_000
FP = bytes(range(32))
OTHER_FP = bytes(range(1, 33))
HOUR = 3_600_000
DUE = NOW + HOUR  # when put()'s scheduled row falls due


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_database(tmp_path / "outbox.db", OUTBOX_MIGRATIONS)
    with contextlib.closing(c):
        yield c


def send(cmid: str = "key-A", fp: bytes = FP, payload: bytes = b'{"body":"x"}',
         deliver_at: int | None = None) -> NewSend:
    return NewSend(client_message_id=cmid, fingerprint=fp, payload=payload, mesh="demo",
                   destination_kind="topic", destination_ref="general", priority="next",
                   deliver_at=deliver_at)


def put(store: OutboxStore, status: OutboxStatus, cmid: str = "key-A") -> str:
    """Bring a row to ``status`` through the store's own transitions."""
    if status is OutboxStatus.SCHEDULED:
        return store.accept(send(cmid, deliver_at=DUE), NOW).row_id
    row_id = store.accept(send(cmid), NOW).row_id
    if status is OutboxStatus.PENDING:
        return row_id
    if status is OutboxStatus.ABORTED:
        store.requeue(row_id, new_client_message_id=None, now_ms=NOW)
        return row_id
    [(claimed, _)] = store.claim_due(NOW, limit=10)
    assert claimed.id == row_id
    if status is OutboxStatus.DONE:
        assert store.mark_done(row_id, broker_message_id="bm-1", history_id="h-1", now_ms=NOW)
    elif status is OutboxStatus.DEAD:
        assert store.mark_dead(row_id, error="payload_too_large")
    return row_id


@pytest.mark.parametrize("status", list(OutboxStatus))
@pytest.mark.parametrize("matches", [True, False])
def test_accept_against_each_existing_state(conn: sqlite3.Connection, status: OutboxStatus,
                                            matches: bool) -> None:
    store = OutboxStore(conn)
    row_id = put(store, status)
    before = conn.execute("SELECT * FROM outbox ORDER BY rowid").fetchall()
    outcome = store.accept(send(fp=FP if matches else OTHER_FP), NOW + 5)
    after = conn.execute("SELECT * FROM outbox ORDER BY rowid").fetchall()
    assert after == before, "no existing row is ever modified by an accept"
    assert outcome.row_id == row_id
    assert outcome.stored_fingerprint == FP
    expected_reply = {
        (OutboxStatus.PENDING, True): Reply.QUEUED,
        (OutboxStatus.SCHEDULED, True): Reply.SCHEDULED,
        (OutboxStatus.INFLIGHT, True): Reply.INFLIGHT,
        (OutboxStatus.DONE, True): Reply.DUPLICATE,
    }.get((status, matches), Reply.CONFLICT)
    assert outcome.decision.reply is expected_reply
    if expected_reply is Reply.DUPLICATE:
        assert (outcome.broker_message_id, outcome.history_id) == ("bm-1", "h-1")
    if status is OutboxStatus.DEAD and matches:
        assert outcome.decision.conflict == "outbox_dead_fingerprint_match"
        assert outcome.last_error == "payload_too_large"
    if status is OutboxStatus.DONE and not matches:
        assert outcome.broker_message_id == "bm-1"
    if status is OutboxStatus.SCHEDULED:
        assert outcome.deliver_at == DUE
        assert outcome.decision.conflict == (None if matches else
                                             "outbox_scheduled_fingerprint_mismatch")


def test_no_row_inserts_a_pending_row_with_everything_needed_to_deliver(
        conn: sqlite3.Connection) -> None:
    outcome = OutboxStore(conn, new_id=lambda: "row-1").accept(send(), NOW)
    assert outcome.decision.reply is Reply.INSERT
    row = conn.execute(
        "SELECT id, status, attempts, enqueued_at, next_attempt_at, mesh, destination_kind,"
        " destination_ref, priority, payload, request_fingerprint FROM outbox").fetchone()
    assert row == ("row-1", "pending", 0, NOW, NOW, "demo", "topic", "general", "next",
                   b'{"body":"x"}', FP)


def test_requeue_aborts_the_old_row_and_inserts_a_full_copy_in_one_step(
        conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    old_id = put(store, OutboxStatus.DEAD)
    out = store.requeue(old_id, new_client_message_id="key-B", now_ms=NOW + 100)
    old = store.get(old_id)
    new = store.get(out.new_row_id)
    assert old is not None and new is not None
    assert (old.status, old.aborted_at, old.aborted_by, old.superseded_by) == (
        OutboxStatus.ABORTED, NOW + 100, "operator", out.new_row_id)
    assert (new.status, new.client_message_id, new.attempts) == (
        OutboxStatus.PENDING, "key-B", 0)
    assert (new.mesh, new.destination_kind, new.destination_ref, new.priority) == (
        old.mesh, old.destination_kind, old.destination_ref, old.priority)
    assert new.request_fingerprint == old.request_fingerprint
    assert store.get_payload(out.new_row_id) == store.get_payload(old_id)
    assert out.previous_status is OutboxStatus.DEAD


def test_requeue_mints_a_fresh_ulid_when_no_id_is_given(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    out = store.requeue(put(store, OutboxStatus.PENDING), new_client_message_id=None,
                        now_ms=NOW)
    assert len(out.new_client_message_id) == 26
    assert out.new_client_message_id != "key-A"


@pytest.mark.parametrize("status", [OutboxStatus.INFLIGHT, OutboxStatus.DONE,
                                    OutboxStatus.ABORTED])
def test_requeue_refuses_rows_that_are_not_pending_or_dead(conn: sqlite3.Connection,
                                                           status: OutboxStatus) -> None:
    store = OutboxStore(conn)
    row_id = put(store, status)
    before = conn.execute("SELECT * FROM outbox ORDER BY rowid").fetchall()
    with pytest.raises(RequeueNotAllowed):
        store.requeue(row_id, new_client_message_id="key-B", now_ms=NOW)
    assert conn.execute("SELECT * FROM outbox ORDER BY rowid").fetchall() == before


def test_requeue_never_reuses_an_id_and_leaves_nothing_half_done(
        conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = put(store, OutboxStatus.DEAD, cmid="key-A")
    put(store, OutboxStatus.PENDING, cmid="taken")
    before = conn.execute("SELECT * FROM outbox ORDER BY rowid").fetchall()
    for reused in ("taken", "key-A"):
        with pytest.raises(ClientMessageIdInUse):
            store.requeue(row_id, new_client_message_id=reused, now_ms=NOW)
    assert conn.execute("SELECT * FROM outbox ORDER BY rowid").fetchall() == before


def test_requeue_of_an_unknown_row_is_not_found(conn: sqlite3.Connection) -> None:
    with pytest.raises(OutboxRowNotFound):
        OutboxStore(conn).requeue("nope", new_client_message_id=None, now_ms=NOW)


def test_recover_inflight_returns_rows_to_pending_due_after_the_minimum_backoff(
        conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = put(store, OutboxStatus.INFLIGHT)
    put(store, OutboxStatus.DONE, cmid="key-done")
    assert store.recover_inflight(NOW + 10, retry_after_ms=500) == 1
    row = store.get(row_id)
    assert row is not None
    assert (row.status, row.next_attempt_at, row.attempts) == (OutboxStatus.PENDING,
                                                               NOW + 510, 1)
    assert row.last_error == "daemon_restarted_while_inflight"
    assert store.counts()[OutboxStatus.DONE] == 1


def test_claim_due_takes_only_due_pending_rows_oldest_first(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    ids = [store.accept(send(f"k{i}"), NOW + i).row_id for i in range(3)]
    assert [r.id for r, _ in store.claim_due(NOW + 1, limit=10)] == ids[:2]
    assert store.claim_due(NOW + 1, limit=10) == []
    assert [r.status for r in store.list_rows(status=None, limit=10)] == [
        OutboxStatus.PENDING, OutboxStatus.INFLIGHT, OutboxStatus.INFLIGHT]


def test_transitions_from_the_wrong_state_change_nothing(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = put(store, OutboxStatus.PENDING)
    assert not store.mark_done(row_id, broker_message_id="b", history_id=None, now_ms=NOW)
    assert not store.mark_dead(row_id, error="x")
    assert not store.mark_retry(row_id, error="x", next_attempt_at=NOW)
    assert not store.mark_done("missing", broker_message_id="b", history_id=None, now_ms=NOW)
    row = store.get(row_id)
    assert row is not None and row.status is OutboxStatus.PENDING and row.last_error is None


def test_done_is_idempotent_and_keeps_the_first_delivery_time(conn: sqlite3.Connection) -> None:
    store = OutboxStore(conn)
    row_id = put(store, OutboxStatus.DONE)
    assert store.mark_done(row_id, broker_message_id="bm-1", history_id="h-1", now_ms=NOW + 9)
    row = store.get(row_id)
    assert row is not None and row.delivered_at == NOW


def test_schema_matches_the_spec_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS)) as c:
        OutboxStore(c).accept(send(), NOW)
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS)) as c:
        columns = [r[1] for r in c.execute("PRAGMA table_info(outbox)")]
        indexes = {r[1] for r in c.execute("PRAGMA index_list(outbox)")}
        assert c.execute("PRAGMA user_version").fetchone() == (len(OUTBOX_MIGRATIONS),)
        assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert c.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert c.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
    assert columns[:14] == [
        "id", "client_message_id", "request_fingerprint", "payload", "enqueued_at",
        "attempts", "next_attempt_at", "status", "last_error", "delivered_at",
        "broker_message_id", "aborted_at", "aborted_by", "superseded_by"]
    assert set(columns[14:]) == {"mesh", "destination_kind", "destination_ref", "priority",
                                 "history_id", "purpose", "deliver_at", "reply_to_id"}
    assert {"outbox_pending", "outbox_aborted", "outbox_mesh_due"} <= indexes


def test_an_outbox_of_schema_2_migrates_in_place(tmp_path: Path) -> None:
    """Issue 12 adds ``purpose`` and the receipt table; rows written before keep working."""
    path = tmp_path / "outbox.db"
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS[:2])) as c:
        c.execute(
            "INSERT INTO outbox (id, client_message_id, request_fingerprint, payload,"
            " enqueued_at, next_attempt_at, status, mesh, destination_kind, destination_ref,"
            " priority) VALUES ('r1', 'old', ?, x'00', 1, 1, 'pending', 'demo', 'dm', ?,"
            " 'next')", (b"f" * 32, "ab" * 32))
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS)) as c:
        assert c.execute("PRAGMA user_version").fetchone() == (len(OUTBOX_MIGRATIONS),)
        rows = OutboxStore(c).list_rows(status=None, limit=10)
        assert [(r.client_message_id, r.purpose, r.deliver_at) for r in rows] == [
            ("old", "message", None)]
        assert c.execute("SELECT count(*) FROM receipt").fetchone() == (0,)


def test_a_corrupt_database_fails_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with contextlib.closing(open_database(path, OUTBOX_MIGRATIONS)) as c:
        store = OutboxStore(c)
        for i in range(300):
            store.accept(send(f"k{i}", payload=b"x" * 500), NOW)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    for offset in range(4096 + 100, len(data), 4096):  # scribble over every b-tree page
        data[offset:offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt):
        c = open_database(path, OUTBOX_MIGRATIONS)
        with contextlib.closing(c):
            integrity_check(c, "outbox.db")


# Every store operation that changes statuses, checked against the transition table on a
# real file: each row it touches makes a legal move for the operation's event, and a row
# it creates starts pending.

def one_of_each(store: OutboxStore) -> dict[OutboxStatus, str]:
    order = (OutboxStatus.DONE, OutboxStatus.DEAD, OutboxStatus.INFLIGHT,
             OutboxStatus.ABORTED, OutboxStatus.PENDING,  # put claims whatever is pending
             OutboxStatus.SCHEDULED)
    return {status: put(store, status, cmid=f"key-{status}") for status in order}


def statuses(conn: sqlite3.Connection) -> dict[str, OutboxStatus]:
    return {i: OutboxStatus(s) for i, s in conn.execute("SELECT id, status FROM outbox")}


Op = Callable[[OutboxStore, dict[OutboxStatus, str]], object]
STORE_OPS: list[tuple[str, OutboxEvent, Op]] = [
    ("claim_due", OutboxEvent.CLAIM, lambda s, _: s.claim_due(NOW + 1, limit=10)),
    ("claim_due at deliver_at", OutboxEvent.CLAIM, lambda s, _: s.claim_due(DUE, limit=10)),
    ("requeue scheduled", OutboxEvent.REQUEUE, lambda s, ids: s.requeue(
        ids[OutboxStatus.SCHEDULED], new_client_message_id=None, now_ms=NOW)),
    ("abort pending", OutboxEvent.ABORT, lambda s, ids: s.abort(
        ids[OutboxStatus.PENDING], now_ms=NOW)),
    ("abort scheduled", OutboxEvent.ABORT, lambda s, ids: s.abort(
        ids[OutboxStatus.SCHEDULED], now_ms=NOW)),
    ("abort dead", OutboxEvent.ABORT, lambda s, ids: s.abort(
        ids[OutboxStatus.DEAD], now_ms=NOW)),
    ("recover_inflight", OutboxEvent.RESTART,
     lambda s, _: s.recover_inflight(NOW, retry_after_ms=500)),
    ("expire_pending", OutboxEvent.EXPIRED,
     lambda s, _: s.expire_pending("demo", enqueued_before_ms=NOW + 1)),
    ("requeue pending", OutboxEvent.REQUEUE, lambda s, ids: s.requeue(
        ids[OutboxStatus.PENDING], new_client_message_id=None, now_ms=NOW)),
    ("requeue dead", OutboxEvent.REQUEUE, lambda s, ids: s.requeue(
        ids[OutboxStatus.DEAD], new_client_message_id=None, now_ms=NOW)),
    ("mark_done", OutboxEvent.ACKED, lambda s, ids: s.mark_done(
        ids[OutboxStatus.INFLIGHT], broker_message_id="bm-2", history_id=None, now_ms=NOW)),
    ("mark_done again", OutboxEvent.ACKED, lambda s, ids: s.mark_done(
        ids[OutboxStatus.DONE], broker_message_id="bm-1", history_id=None, now_ms=NOW)),
    ("mark_retry", OutboxEvent.TRANSIENT_FAILURE, lambda s, ids: s.mark_retry(
        ids[OutboxStatus.INFLIGHT], error="503", next_attempt_at=NOW)),
    ("mark_dead", OutboxEvent.PERMANENT_FAILURE, lambda s, ids: s.mark_dead(
        ids[OutboxStatus.INFLIGHT], error="400")),
    ("mark_dead expired", OutboxEvent.EXPIRED, lambda s, ids: s.mark_dead(
        ids[OutboxStatus.INFLIGHT], error="max_age_exceeded", event=OutboxEvent.EXPIRED)),
]


@pytest.mark.parametrize(("event", "op"), [(e, op) for _, e, op in STORE_OPS],
                         ids=[name for name, _, _ in STORE_OPS])
def test_each_store_operation_moves_rows_only_along_the_table(
        conn: sqlite3.Connection, event: OutboxEvent, op: Op) -> None:
    store = OutboxStore(conn)
    ids = one_of_each(store)
    before = statuses(conn)
    assert set(before.values()) == set(OutboxStatus)
    op(store, ids)
    after = statuses(conn)
    moved = {(before[i], after[i]) for i in before if after[i] is not before[i]}
    for old, new in moved:
        assert TRANSITIONS.get((old, event)) is new, (old, event, new)
    if event is OutboxEvent.ACKED and not moved:  # done -> done: the table's one self-loop
        assert TRANSITIONS[(OutboxStatus.DONE, event)] is OutboxStatus.DONE
    else:
        assert moved, "the operation moved nothing"
    assert {after[i] for i in after.keys() - before.keys()} <= {OutboxStatus.PENDING,
                                                               OutboxStatus.SCHEDULED}
