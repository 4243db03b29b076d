"""``outbox.db``: the durable queue of sends (daemon-spec §4.5.2, §4.5.3, §4.8, §4.11).

The SQL side of :mod:`.outbox_rules`. Every method runs inside :func:`.db.immediate`, so
called alone it is one ``BEGIN IMMEDIATE`` transaction and called from the worker's
group commit it is one savepoint. Every status change comes from the transition table:
set-wise updates use a :class:`.outbox_rules.Move` (``WHERE status IN (?, ...)`` from its
sources, ``SET status = ?`` to its target, both as parameters), and :meth:`apply` asks
:func:`.outbox_rules.next_status` row by row; so a stale caller changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.daemon.store.outbox_rules import (
    Decision,
    IllegalTransition,
    Move,
    OutboxEvent,
    OutboxStatus,
    Reply,
    decide,
    move,
    next_status,
)
from claudemesh.errors import (
    AbortNotAllowed,
    ClientMessageIdInUse,
    OutboxRowNotFound,
    RequeueNotAllowed,
)
from claudemesh.protocol.ids import new_ulid
from claudemesh.sqlitedb.db import immediate, store_errors

__all__ = [
    "OUTBOX_COLUMNS",
    "AbortOutcome",
    "AcceptOutcome",
    "NewSend",
    "OutboxRow",
    "OutboxStore",
    "RequeueOutcome",
]

# The set-wise moves, read from the table once. Expiry scans pending and scheduled rows
# only: an inflight row expires when its answer comes back (the drain's EXPIRED
# transition). A row's age counts from its ``deliver_at`` when it has one (issue 15).
_CLAIM: Final = move(OutboxEvent.CLAIM)
_RESTART: Final = move(OutboxEvent.RESTART)
_EXPIRE: Final = move(OutboxEvent.EXPIRED, only=(OutboxStatus.PENDING, OutboxStatus.SCHEDULED))
_REQUEUE: Final = move(OutboxEvent.REQUEUE)
_ABORT: Final = move(OutboxEvent.ABORT)


def _new_status(deliver_at: int | None, now_ms: int) -> OutboxStatus:
    """What an accepted or requeued row starts as: scheduled while its time is ahead."""
    return OutboxStatus.SCHEDULED if deliver_at is not None and deliver_at > now_ms else (
        OutboxStatus.PENDING)


def _guard(m: Move) -> tuple[str, tuple[str, ...]]:
    """``status IN (?, ...)`` and its parameters: the statuses ``m`` moves from."""
    return f"status IN ({','.join('?' * len(m.sources))})", tuple(map(str, m.sources))


_COLUMNS: Final = (
    "id, client_message_id, request_fingerprint, enqueued_at, attempts, next_attempt_at, "
    "status, last_error, delivered_at, broker_message_id, aborted_at, aborted_by, "
    "superseded_by, mesh, destination_kind, destination_ref, priority, history_id, "
    "purpose, deliver_at, reply_to_id, length(payload)"
)
OUTBOX_COLUMNS: Final = _COLUMNS  # an OutboxRow, for queries in other modules


@dataclass(frozen=True, slots=True)
class NewSend:
    """A send that passed Phase A, ready for the lookup table."""

    client_message_id: str
    fingerprint: bytes
    payload: bytes
    mesh: str
    destination_kind: str
    destination_ref: str
    priority: str
    purpose: str = "message"  # or "receipt": a receipt this daemon sends
    deliver_at: int | None = None  # epoch ms; later than the accept's now makes it scheduled
    reply_to_id: str | None = None  # the envelope's reply_to, for threads
    text: str | None = None  # the caller's plaintext, for search (None: not indexed)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: str
    client_message_id: str
    request_fingerprint: bytes
    enqueued_at: int
    attempts: int
    next_attempt_at: int
    status: OutboxStatus
    last_error: str | None
    delivered_at: int | None
    broker_message_id: str | None
    aborted_at: int | None
    aborted_by: str | None
    superseded_by: str | None
    mesh: str
    destination_kind: str
    destination_ref: str
    priority: str
    history_id: str | None
    purpose: str
    deliver_at: int | None
    reply_to_id: str | None
    payload_bytes: int

    @property
    def age_from(self) -> int:
        """Where max age counts from: a scheduled send is not old before its time."""
        return self.enqueued_at if self.deliver_at is None else self.deliver_at

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> OutboxRow:
        values = list(row)
        values[6] = OutboxStatus(values[6])
        return cls(*values)


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    decision: Decision
    row_id: str
    client_message_id: str
    stored_fingerprint: bytes
    broker_message_id: str | None
    history_id: str | None
    last_error: str | None
    deliver_at: int | None = None  # the stored row's, which a retry does not change


@dataclass(frozen=True, slots=True)
class AbortOutcome:
    row_id: str
    previous_status: OutboxStatus
    previous_attempts: int
    mesh: str


@dataclass(frozen=True, slots=True)
class RequeueOutcome:
    aborted_row_id: str
    new_row_id: str
    new_client_message_id: str
    previous_status: OutboxStatus
    previous_attempts: int
    mesh: str
    new_status: OutboxStatus = OutboxStatus.PENDING
    deliver_at: int | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """One drain answer for one row: the table's event and the columns it sets."""

    row_id: str
    event: OutboxEvent
    assignments: str  # SQL "col = ?, ..." for the values in ``args``
    args: tuple[Any, ...]

    @classmethod
    def done(cls, row_id: str, *, broker_message_id: str, history_id: str | None,
             now_ms: int) -> Transition:
        return cls(row_id, OutboxEvent.ACKED,
                   "delivered_at = coalesce(delivered_at, ?), broker_message_id = ?,"
                   " history_id = ?, last_error = NULL",
                   (now_ms, broker_message_id, history_id))

    @classmethod
    def retry(cls, row_id: str, *, error: str, next_attempt_at: int) -> Transition:
        return cls(row_id, OutboxEvent.TRANSIENT_FAILURE, "last_error = ?, next_attempt_at = ?",
                   (error, next_attempt_at))

    @classmethod
    def resealed(cls, row_id: str, *, payload: bytes, error: str,
                 next_attempt_at: int) -> Transition:
        """Back to pending with a new envelope (a topic post under the current epoch)."""
        return cls(row_id, OutboxEvent.TRANSIENT_FAILURE,
                   "payload = ?, last_error = ?, next_attempt_at = ?",
                   (payload, error, next_attempt_at))

    @classmethod
    def dead(cls, row_id: str, *, error: str,
             event: OutboxEvent = OutboxEvent.PERMANENT_FAILURE) -> Transition:
        return cls(row_id, event, "last_error = ?", (error,))


class OutboxStore:
    """Operations on one ``outbox.db`` connection; not thread-safe (the worker owns it)."""

    def __init__(self, conn: sqlite3.Connection, *, new_id: Callable[[], str] = new_ulid):
        self._conn = conn
        self._new_id = new_id

    # -- accept (R-ACC-1) -------------------------------------------------------------

    def accept(self, send: NewSend, now_ms: int) -> AcceptOutcome:
        """Steps 3-6 of R-ACC-1: look the id up, apply the table, insert only if free."""
        with store_errors("accepting a send"), immediate(self._conn):
            found = self._conn.execute(
                "SELECT id, request_fingerprint, status, broker_message_id, last_error,"
                " history_id, deliver_at FROM outbox WHERE client_message_id = ?",
                (send.client_message_id,),
            ).fetchone()
            existing = None if found is None else (OutboxStatus(found[2]), bytes(found[1]))
            decision = decide(existing, send.fingerprint)
            if decision.reply is Reply.INSERT:
                row_id = self._new_id()
                deliver_at = self._insert(row_id, send, now_ms)
                return AcceptOutcome(decision, row_id, send.client_message_id,
                                     send.fingerprint, None, None, None, deliver_at)
        return AcceptOutcome(decision, found[0], send.client_message_id, bytes(found[1]),
                             found[3], found[5], found[4], found[6])

    def _insert(self, row_id: str, send: NewSend, now_ms: int) -> int | None:
        """Insert the row; a ``deliver_at`` not after ``now_ms`` is an immediate send (and
        not stored). Returns the stored ``deliver_at``."""
        status = _new_status(send.deliver_at, now_ms)
        deliver_at = send.deliver_at if status is OutboxStatus.SCHEDULED else None
        self._conn.execute(
            "INSERT INTO outbox (id, client_message_id, request_fingerprint, payload,"
            " enqueued_at, attempts, next_attempt_at, status, mesh, destination_kind,"
            " destination_ref, priority, purpose, deliver_at, reply_to_id)"
            " VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, send.client_message_id, send.fingerprint, send.payload, now_ms,
             deliver_at or now_ms, str(status), send.mesh, send.destination_kind,
             send.destination_ref, send.priority, send.purpose, deliver_at,
             send.reply_to_id),
        )
        if send.text is not None:
            self._conn.execute("INSERT INTO outbox_text (row_id, body) VALUES (?, ?)",
                               (row_id, send.text))
        return deliver_at

    # -- operator recovery (R-RQ-2) ---------------------------------------------------

    def requeue(
        self, row_id: str, *, new_client_message_id: str | None, now_ms: int,
        deliver_at: int | None = None,
    ) -> RequeueOutcome:
        """Abort a pending/dead/scheduled row and insert its successor, in one transaction.

        The successor copies everything needed to deliver (mesh, destination, priority,
        frozen payload, fingerprint: DESIGN §5.6) under a new id that was never used. It
        keeps the old row's ``deliver_at`` unless ``deliver_at`` is given (one not after
        ``now_ms`` sends at once); it is ``scheduled`` while that time is ahead.

        Raises:
            OutboxRowNotFound: no row has ``row_id``.
            RequeueNotAllowed: the row is inflight, done or already aborted.
            ClientMessageIdInUse: ``new_client_message_id`` already belongs to a row.
        """
        with store_errors("requeueing a row"), immediate(self._conn):
            old = self.get(row_id)
            if old is None:
                raise OutboxRowNotFound(f"no outbox row has id {row_id!r}", id=row_id)
            if old.status not in _REQUEUE.sources:
                raise RequeueNotAllowed(
                    f"row {row_id} is {old.status}; only pending, scheduled or dead rows"
                    " can be requeued", id=row_id, status=str(old.status),
                )
            when = old.deliver_at if deliver_at is None else deliver_at
            status = _new_status(when, now_ms)
            when = when if status is OutboxStatus.SCHEDULED else None
            new_cmid = new_client_message_id or new_ulid(now_ms)
            if self._conn.execute(
                "SELECT 1 FROM outbox WHERE client_message_id = ?", (new_cmid,)
            ).fetchone():
                raise ClientMessageIdInUse(
                    f"client_message_id {new_cmid!r} already belongs to an outbox row;"
                    " ids are never reused (R-DLV-3)",
                    client_message_id=new_cmid,
                )
            new_row_id = self._new_id()
            self._conn.execute(
                "INSERT INTO outbox (id, client_message_id, request_fingerprint, payload,"
                " enqueued_at, attempts, next_attempt_at, status, mesh, destination_kind,"
                " destination_ref, priority, purpose, deliver_at, reply_to_id)"
                " SELECT ?, ?, request_fingerprint, payload, ?, 0, ?, ?, mesh,"
                " destination_kind, destination_ref, priority, purpose, ?, reply_to_id"
                " FROM outbox WHERE id = ?",
                (new_row_id, new_cmid, now_ms, when or now_ms, str(status), when, row_id),
            )
            self._conn.execute(
                "INSERT INTO outbox_text (row_id, body)"
                " SELECT ?, body FROM outbox_text WHERE row_id = ?", (new_row_id, row_id))
            self._conn.execute(
                "UPDATE outbox SET status = ?, aborted_at = ?, aborted_by = 'operator',"
                " superseded_by = ? WHERE id = ? AND status = ?",
                (str(_REQUEUE.target), now_ms, new_row_id, row_id, str(old.status)),
            )
        return RequeueOutcome(row_id, new_row_id, new_cmid, old.status, old.attempts, old.mesh,
                              status, when)

    def abort(self, row_id: str, *, now_ms: int) -> AbortOutcome:
        """Cancel a pending, scheduled or dead row: ``aborted`` by the operator, no successor.

        Raises:
            OutboxRowNotFound: no row has ``row_id``.
            AbortNotAllowed: the row is inflight (being sent), done or already aborted.
        """
        guard, sources = _guard(_ABORT)
        with store_errors("aborting a row"), immediate(self._conn):
            old = self.get(row_id)
            if old is None:
                raise OutboxRowNotFound(f"no outbox row has id {row_id!r}", id=row_id)
            if old.status not in _ABORT.sources:
                raise AbortNotAllowed(
                    f"row {row_id} is {old.status}; only pending, scheduled or dead rows can"
                    " be aborted", id=row_id, status=str(old.status))
            self._conn.execute(
                "UPDATE outbox SET status = ?, aborted_at = ?, aborted_by = 'operator'"  # noqa: S608
                f" WHERE id = ? AND {guard}", (str(_ABORT.target), now_ms, row_id, *sources))
        return AbortOutcome(row_id, old.status, old.attempts, old.mesh)

    # -- reads ------------------------------------------------------------------------

    def get(self, row_id: str) -> OutboxRow | None:
        with store_errors("reading a row"):
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (row_id,)  # noqa: S608
            ).fetchone()
        return None if row is None else OutboxRow.from_sql(row)

    def get_payload(self, row_id: str) -> bytes | None:
        with store_errors("reading a payload"):
            row = self._conn.execute("SELECT payload FROM outbox WHERE id = ?",
                                     (row_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def list_rows(self, *, status: OutboxStatus | None, limit: int,
                  client_message_id: str | None = None,
                  purpose: str | None = "message") -> list[OutboxRow]:
        """Newest first (by insertion order, which is enqueue order); ``purpose`` None
        lists messages and receipts alike."""
        clauses = [c for c, v in (("status = ?", status), ("client_message_id = ?",
                                                            client_message_id),
                                  ("purpose = ?", purpose)) if v]
        args = tuple(str(v) for v in (status, client_message_id, purpose) if v)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with store_errors("listing the outbox"):
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM outbox {where} ORDER BY rowid DESC LIMIT ?",  # noqa: S608
                (*args, limit),
            ).fetchall()
        return [OutboxRow.from_sql(r) for r in rows]

    def counts(self) -> dict[OutboxStatus, int]:
        with store_errors("counting the outbox"):
            rows = self._conn.execute(
                "SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
        counts = dict.fromkeys(OutboxStatus, 0)
        counts.update({OutboxStatus(s): n for s, n in rows})
        return counts

    def counts_by_mesh(self) -> dict[str, dict[OutboxStatus, int]]:
        with store_errors("counting the outbox"):
            rows = self._conn.execute(
                "SELECT mesh, status, count(*) FROM outbox WHERE status IN"
                " ('scheduled', 'pending', 'inflight', 'dead') GROUP BY mesh, status"
            ).fetchall()
        result: dict[str, dict[OutboxStatus, int]] = {}
        for mesh, status, n in rows:
            result.setdefault(mesh, dict.fromkeys(OutboxStatus, 0))[OutboxStatus(status)] = n
        return result

    # -- transitions for the drain (§4.8) and crash recovery (R-REC-1) -----------------

    def recover_inflight(self, now_ms: int, *, retry_after_ms: int) -> int:
        """Every ``inflight`` row back to ``pending``, due after ``retry_after_ms``.

        ``attempts`` is left as it is: the claim already counted the transmission that
        may or may not have reached the broker (R-REC-1 says "incremented"; counting it
        twice would misreport). The broker's dedupe collapses a repeat.
        """
        guard, sources = _guard(_RESTART)
        with store_errors("recovering inflight rows"), immediate(self._conn):
            cur = self._conn.execute(
                "UPDATE outbox SET status = ?, next_attempt_at = ?,"  # noqa: S608
                f" last_error = 'daemon_restarted_while_inflight' WHERE {guard}",
                (str(_RESTART.target), now_ms + retry_after_ms, *sources),
            )
        return cur.rowcount

    def claim_due(self, now_ms: int, *, limit: int,
                  mesh: str | None = None) -> list[tuple[OutboxRow, bytes]]:
        """pending/scheduled -> inflight for due rows, oldest first; ``attempts`` + 1
        (R-OBX-5). A scheduled row is due at its ``deliver_at`` (its ``next_attempt_at``).
        Each row comes with its frozen envelope, read by the same UPDATE."""
        mesh_clause, args = ("AND mesh = ?", (mesh,)) if mesh else ("", ())
        guard, sources = _guard(_CLAIM)
        with store_errors("claiming due rows"), immediate(self._conn):
            ids = [r[0] for r in self._conn.execute(
                f"SELECT id FROM outbox WHERE {guard} AND next_attempt_at <= ?"  # noqa: S608
                f" {mesh_clause} ORDER BY next_attempt_at, rowid LIMIT ?",
                (*sources, now_ms, *args, limit),
            )]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            claimed = {row[0]: (OutboxRow.from_sql(row[:-1]), bytes(row[-1])) for row in (
                self._conn.execute(
                    "UPDATE outbox SET status = ?, attempts = attempts + 1"  # noqa: S608
                    f" WHERE {guard} AND id IN ({marks})"
                    f" RETURNING {_COLUMNS}, payload",
                    (str(_CLAIM.target), *sources, *ids)).fetchall())}
        return [claimed[i] for i in ids if i in claimed]

    def expire_pending(self, mesh: str, *, enqueued_before_ms: int) -> int:
        """pending/scheduled -> dead for rows older than max age (R-AGE-5), counted from
        ``deliver_at`` when there is one; returns how many."""
        guard, sources = _guard(_EXPIRE)
        with store_errors("expiring old rows"), immediate(self._conn):
            cur = self._conn.execute(
                "UPDATE outbox SET status = ?, last_error = 'max_age_exceeded'"  # noqa: S608
                f" WHERE mesh = ? AND {guard} AND coalesce(deliver_at, enqueued_at) < ?",
                (str(_EXPIRE.target), mesh, *sources, enqueued_before_ms))
        return cur.rowcount

    def next_due_ms(self, mesh: str) -> int | None:
        """When the earliest claimable row of ``mesh`` (pending, or scheduled: its
        ``next_attempt_at`` is its ``deliver_at``) falls due, or None."""
        guard, sources = _guard(_CLAIM)
        with store_errors("reading the schedule"):
            row = self._conn.execute(
                f"SELECT min(next_attempt_at) FROM outbox WHERE mesh = ? AND {guard}",  # noqa: S608
                (mesh, *sources)).fetchone()
        return None if row[0] is None else int(row[0])

    def oldest_pending_ms(self, mesh: str) -> int | None:
        """When the oldest undelivered row of ``mesh`` was due (health's lag): its
        ``deliver_at`` if it was scheduled, else ``enqueued_at``; rows still waiting for
        their time are not late."""
        with store_errors("reading the queue"):
            row = self._conn.execute(
                "SELECT min(coalesce(deliver_at, enqueued_at)) FROM outbox WHERE mesh = ?"
                " AND status IN ('pending', 'inflight')", (mesh,)).fetchone()
        return None if row[0] is None else int(row[0])

    def mark_done(self, row_id: str, *, broker_message_id: str, history_id: str | None,
                  now_ms: int) -> bool:
        return self.apply([Transition.done(row_id, broker_message_id=broker_message_id,
                                           history_id=history_id, now_ms=now_ms)]) == 1

    def mark_retry(self, row_id: str, *, error: str, next_attempt_at: int) -> bool:
        return self.apply([Transition.retry(row_id, error=error,
                                            next_attempt_at=next_attempt_at)]) == 1

    def mark_dead(self, row_id: str, *, error: str,
                  event: OutboxEvent = OutboxEvent.PERMANENT_FAILURE) -> bool:
        return self.apply([Transition.dead(row_id, error=error, event=event)]) == 1

    def apply(self, transitions: list[Transition]) -> int:
        """Apply each transition the table allows from its row's status, in one unit (the
        drain's answers come in batches); returns how many were applied."""
        if not transitions:
            return 0
        ids = list({t.row_id: None for t in transitions})
        marks = ",".join("?" * len(ids))
        applied = 0
        with store_errors("applying outbox transitions"), immediate(self._conn):
            statuses: dict[str, str] = dict(self._conn.execute(
                f"SELECT id, status FROM outbox WHERE id IN ({marks})", ids).fetchall())  # noqa: S608
            for t in transitions:
                found = statuses.get(t.row_id)
                if found is None:
                    continue
                try:
                    target = next_status(OutboxStatus(found), t.event)
                except IllegalTransition:
                    continue
                self._conn.execute(
                    f"UPDATE outbox SET status = ?, {t.assignments} WHERE id = ?",  # noqa: S608
                    (str(target), *t.args, t.row_id))
                statuses[t.row_id] = str(target)
                applied += 1
        return applied
