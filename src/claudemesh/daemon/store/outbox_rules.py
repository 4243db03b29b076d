"""The outbox's rules as data: the accept lookup table and the row state machine.

Theory of operation. A ``client_message_id`` is free only while no outbox row holds it
(R-ACC-5). An accept looks the id up and answers from :data:`LOOKUP_TABLE`, keyed by
(existing status, fingerprint matches); only the "no row" case writes (R-ACC-2). After
that, rows move only along :data:`TRANSITIONS` (daemon-spec §4.8): the drain claims due
``pending`` rows, the broker's answer makes them ``done``, ``dead`` or ``pending`` again,
a restart returns ``inflight`` rows to ``pending`` (R-REC-1), and the operator's requeue
retires ``pending``/``dead`` rows as ``aborted`` (R-RQ-3). A send with a future
``deliver_at`` (issue 15) is accepted as ``scheduled``: the drain claims it straight to
``inflight`` once it falls due (its ``next_attempt_at`` is the ``deliver_at``), a restart
leaves it alone, and the operator can requeue it or abort it outright. ``done`` and ``aborted`` are
terminal and nothing is ever deleted (R-DLV-3). The store's set-wise updates (claim,
restart, expiry, requeue) take their guard and target from :func:`move`, so the table is
the only place a status change is written down. Pure: no SQL, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LOOKUP_TABLE",
    "NO_ROW",
    "TRANSITIONS",
    "Decision",
    "IllegalTransition",
    "Move",
    "OutboxEvent",
    "OutboxStatus",
    "Reply",
    "decide",
    "move",
    "next_status",
    "sources",
]


class OutboxStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # waits for its deliver_at; then claimed like a due pending row
    PENDING = "pending"
    INFLIGHT = "inflight"
    DONE = "done"
    DEAD = "dead"
    ABORTED = "aborted"


class Reply(enum.Enum):
    """What an accept answers, independent of HTTP."""

    INSERT = "insert"  # no row: write one, answer queued
    QUEUED = "queued"
    SCHEDULED = "scheduled"  # the row waits for its deliver_at (answered with it)
    INFLIGHT = "inflight"
    DUPLICATE = "duplicate"  # done + match: 200 with the broker's ids, no broker call
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Decision:
    http_status: int
    reply: Reply
    conflict: str | None = None


NO_ROW: Final = Decision(202, Reply.INSERT)

# R-ACC-2, rows 2-11, and the two ``scheduled`` rows of issue 15. Row 1 ("none") is NO_ROW
# above. The fingerprint is the wire one, which ``deliver_at`` is not part of: a retry of a
# scheduled send with another ``deliver_at`` is the same request and answers the stored row
# (and its stored ``deliver_at``); rescheduling is a requeue.
LOOKUP_TABLE: Final[dict[tuple[OutboxStatus, bool], Decision]] = {
    (OutboxStatus.SCHEDULED, True): Decision(202, Reply.SCHEDULED),
    (OutboxStatus.SCHEDULED, False): Decision(
        409, Reply.CONFLICT, "outbox_scheduled_fingerprint_mismatch"),
    (OutboxStatus.PENDING, True): Decision(202, Reply.QUEUED),
    (OutboxStatus.PENDING, False): Decision(
        409, Reply.CONFLICT, "outbox_pending_fingerprint_mismatch"),
    (OutboxStatus.INFLIGHT, True): Decision(202, Reply.INFLIGHT),
    (OutboxStatus.INFLIGHT, False): Decision(
        409, Reply.CONFLICT, "outbox_inflight_fingerprint_mismatch"),
    (OutboxStatus.DONE, True): Decision(200, Reply.DUPLICATE),
    (OutboxStatus.DONE, False): Decision(409, Reply.CONFLICT, "outbox_done_fingerprint_mismatch"),
    (OutboxStatus.DEAD, True): Decision(409, Reply.CONFLICT, "outbox_dead_fingerprint_match"),
    (OutboxStatus.DEAD, False): Decision(409, Reply.CONFLICT, "outbox_dead_fingerprint_mismatch"),
    (OutboxStatus.ABORTED, True): Decision(
        409, Reply.CONFLICT, "outbox_aborted_fingerprint_match"),
    (OutboxStatus.ABORTED, False): Decision(
        409, Reply.CONFLICT, "outbox_aborted_fingerprint_mismatch"),
}


def decide(existing: tuple[OutboxStatus, bytes] | None, fingerprint: bytes) -> Decision:
    """Answer an accept from the table: ``existing`` is (status, stored fingerprint)."""
    if existing is None:
        return NO_ROW
    status, stored = existing
    return LOOKUP_TABLE[(status, stored == fingerprint)]


class OutboxEvent(enum.StrEnum):
    CLAIM = "claim"  # drain picks a due row (pending, or scheduled whose time has come)
    ACKED = "acked"  # broker 201, or 200 duplicate
    TRANSIENT_FAILURE = "transient_failure"  # network, timeout, 429, 5xx, link drop
    PERMANENT_FAILURE = "permanent_failure"  # other 4xx, 409 (R-OBX-4, DESIGN §5.3)
    EXPIRED = "expired"  # older than max_age_hours (R-AGE-5)
    RESTART = "restart"  # daemon start finds the row inflight (R-REC-1)
    REQUEUE = "requeue"  # operator retires the row and queues a copy (R-RQ-2)
    ABORT = "abort"  # operator cancels the row, no copy (issue 15)


TRANSITIONS: Final[dict[tuple[OutboxStatus, OutboxEvent], OutboxStatus]] = {
    (OutboxStatus.PENDING, OutboxEvent.CLAIM): OutboxStatus.INFLIGHT,
    (OutboxStatus.SCHEDULED, OutboxEvent.CLAIM): OutboxStatus.INFLIGHT,
    (OutboxStatus.INFLIGHT, OutboxEvent.ACKED): OutboxStatus.DONE,
    (OutboxStatus.DONE, OutboxEvent.ACKED): OutboxStatus.DONE,  # idempotent done
    (OutboxStatus.INFLIGHT, OutboxEvent.TRANSIENT_FAILURE): OutboxStatus.PENDING,
    (OutboxStatus.INFLIGHT, OutboxEvent.PERMANENT_FAILURE): OutboxStatus.DEAD,
    (OutboxStatus.PENDING, OutboxEvent.EXPIRED): OutboxStatus.DEAD,
    (OutboxStatus.INFLIGHT, OutboxEvent.EXPIRED): OutboxStatus.DEAD,
    # A due scheduled row the link never got out (down the whole max age since deliver_at).
    (OutboxStatus.SCHEDULED, OutboxEvent.EXPIRED): OutboxStatus.DEAD,
    (OutboxStatus.INFLIGHT, OutboxEvent.RESTART): OutboxStatus.PENDING,
    (OutboxStatus.PENDING, OutboxEvent.REQUEUE): OutboxStatus.ABORTED,
    (OutboxStatus.DEAD, OutboxEvent.REQUEUE): OutboxStatus.ABORTED,
    (OutboxStatus.SCHEDULED, OutboxEvent.REQUEUE): OutboxStatus.ABORTED,
    (OutboxStatus.PENDING, OutboxEvent.ABORT): OutboxStatus.ABORTED,
    (OutboxStatus.DEAD, OutboxEvent.ABORT): OutboxStatus.ABORTED,
    (OutboxStatus.SCHEDULED, OutboxEvent.ABORT): OutboxStatus.ABORTED,
}


class IllegalTransition(ValueError):
    def __init__(self, status: OutboxStatus, event: OutboxEvent) -> None:
        self.status = status
        self.event = event
        super().__init__(f"outbox row in {status} cannot take event {event}")


def next_status(status: OutboxStatus, event: OutboxEvent) -> OutboxStatus:
    """Where ``event`` takes a row in ``status``; anything not in the table is illegal."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise IllegalTransition(status, event) from None


def sources(event: OutboxEvent) -> tuple[OutboxStatus, ...]:
    """The statuses from which ``event`` is legal, for guarded SQL updates."""
    return tuple(s for (s, e) in TRANSITIONS if e is event)


@dataclass(frozen=True, slots=True)
class Move:
    """One event applied to every row in ``sources`` at once: all of them go to ``target``."""

    event: OutboxEvent
    sources: tuple[OutboxStatus, ...]
    target: OutboxStatus


def move(event: OutboxEvent, *, only: tuple[OutboxStatus, ...] | None = None) -> Move:
    """The table's move for ``event``, from all its source statuses or just ``only``.

    ``only`` narrows a move to some of the statuses the table allows (the expiry scan
    touches ``pending`` rows; an ``inflight`` row expires when its answer comes).

    Raises:
        IllegalTransition: a status in ``only`` cannot take ``event``.
        ValueError: the event's sources lead to different targets, so one set-wise
            update cannot apply it (use :func:`next_status` row by row).
    """
    chosen = sources(event) if only is None else only
    targets = {next_status(status, event) for status in chosen}
    if len(targets) != 1:
        raise ValueError(f"event {event} has no single target from {chosen}: {targets}")
    return Move(event, chosen, targets.pop())
