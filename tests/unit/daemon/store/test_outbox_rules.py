"""The outbox rules as data: the R-ACC-2 table restated, and the §4.8 state machine."""

from __future__ import annotations

import pytest

from claudemesh.daemon.store.outbox_rules import (
    LOOKUP_TABLE,
    NO_ROW,
    TRANSITIONS,
    Decision,
    IllegalTransition,
    Move,
    OutboxEvent,
    OutboxStatus,
    Reply,
    decide,
    move,
    next_status,
    sources,
)

FP = b"\x01" * 32
OTHER = b"\x02" * 32

# The spec's 11 rows, written out again by hand (R-ACC-2), and issue 15's two.
SPEC_ROWS = [
    (None, None, 202, Reply.INSERT, None),
    ("scheduled", True, 202, Reply.SCHEDULED, None),
    ("scheduled", False, 409, Reply.CONFLICT, "outbox_scheduled_fingerprint_mismatch"),
    ("pending", True, 202, Reply.QUEUED, None),
    ("pending", False, 409, Reply.CONFLICT, "outbox_pending_fingerprint_mismatch"),
    ("inflight", True, 202, Reply.INFLIGHT, None),
    ("inflight", False, 409, Reply.CONFLICT, "outbox_inflight_fingerprint_mismatch"),
    ("done", True, 200, Reply.DUPLICATE, None),
    ("done", False, 409, Reply.CONFLICT, "outbox_done_fingerprint_mismatch"),
    ("dead", True, 409, Reply.CONFLICT, "outbox_dead_fingerprint_match"),
    ("dead", False, 409, Reply.CONFLICT, "outbox_dead_fingerprint_mismatch"),
    ("aborted", True, 409, Reply.CONFLICT, "outbox_aborted_fingerprint_match"),
    ("aborted", False, 409, Reply.CONFLICT, "outbox_aborted_fingerprint_mismatch"),
]


@pytest.mark.parametrize(("status", "matches", "http", "reply", "conflict"), SPEC_ROWS)
def test_decide_follows_the_spec_table(status: str | None, matches: bool | None, http: int,
                                       reply: Reply, conflict: str | None) -> None:
    existing = None if status is None else (OutboxStatus(status), FP if matches else OTHER)
    assert decide(existing, FP) == Decision(http, reply, conflict)


def test_every_status_and_match_pair_has_a_row() -> None:
    pairs = {(s, m) for s in OutboxStatus for m in (True, False)}
    assert set(LOOKUP_TABLE) == pairs
    assert len(LOOKUP_TABLE) + 1 == len(SPEC_ROWS) == 13
    assert decide(None, FP) is NO_ROW


def test_only_the_no_row_case_writes() -> None:
    assert [d for d in LOOKUP_TABLE.values() if d.reply is Reply.INSERT] == []


def test_every_conflict_is_a_409_with_a_reason_and_every_other_answer_has_none() -> None:
    for decision in LOOKUP_TABLE.values():
        assert (decision.http_status == 409) == (decision.reply is Reply.CONFLICT)
        assert (decision.conflict is not None) == (decision.reply is Reply.CONFLICT)


@pytest.mark.parametrize(("status", "event", "target"), [
    ("pending", "claim", "inflight"),
    ("scheduled", "claim", "inflight"),
    ("scheduled", "expired", "dead"),
    ("scheduled", "requeue", "aborted"),
    ("pending", "abort", "aborted"),
    ("scheduled", "abort", "aborted"),
    ("dead", "abort", "aborted"),
    ("inflight", "acked", "done"),
    ("done", "acked", "done"),
    ("inflight", "transient_failure", "pending"),
    ("inflight", "permanent_failure", "dead"),
    ("pending", "expired", "dead"),
    ("inflight", "expired", "dead"),
    ("inflight", "restart", "pending"),
    ("pending", "requeue", "aborted"),
    ("dead", "requeue", "aborted"),
])
def test_legal_transitions(status: str, event: str, target: str) -> None:
    assert next_status(OutboxStatus(status), OutboxEvent(event)) is OutboxStatus(target)


def test_every_other_transition_is_illegal() -> None:
    for status in OutboxStatus:
        for event in OutboxEvent:
            if (status, event) in TRANSITIONS:
                continue
            with pytest.raises(IllegalTransition) as info:
                next_status(status, event)
            assert info.value.status is status


def test_done_and_aborted_are_terminal() -> None:
    for (status, _), target in TRANSITIONS.items():
        if status in (OutboxStatus.DONE, OutboxStatus.ABORTED):
            assert target is status
    assert not any(s is OutboxStatus.ABORTED for s, _ in TRANSITIONS)


def test_sources_are_the_table_rows_of_an_event() -> None:
    for event in OutboxEvent:
        assert set(sources(event)) == {s for s, e in TRANSITIONS if e is event}
    assert sources(OutboxEvent.REQUEUE) == (OutboxStatus.PENDING, OutboxStatus.DEAD,
                                            OutboxStatus.SCHEDULED)


@pytest.mark.parametrize(("event", "from_", "to"), [
    ("claim", ("pending", "scheduled"), "inflight"),
    ("restart", ("inflight",), "pending"),
    ("expired", ("pending", "inflight", "scheduled"), "dead"),
    ("requeue", ("pending", "dead", "scheduled"), "aborted"),
    ("abort", ("pending", "dead", "scheduled"), "aborted"),
])
def test_a_set_wise_move_has_the_tables_sources_and_one_target(
        event: str, from_: tuple[str, ...], to: str) -> None:
    assert move(OutboxEvent(event)) == Move(
        OutboxEvent(event), tuple(map(OutboxStatus, from_)), OutboxStatus(to))


def test_a_move_narrowed_to_statuses_the_table_refuses_is_an_error() -> None:
    pending = (OutboxStatus.PENDING,)
    assert move(OutboxEvent.EXPIRED, only=pending).sources == pending
    with pytest.raises(IllegalTransition):
        move(OutboxEvent.RESTART, only=pending)


def test_a_scheduled_row_leaves_only_by_its_time_expiry_or_the_operator() -> None:
    """A restart never touches it (R-REC-1 is for inflight rows), and an accept never
    writes it: it stays scheduled across kill -9 until the drain claims it when due."""
    exits = {e for (s, e) in TRANSITIONS if s is OutboxStatus.SCHEDULED}
    assert exits == {OutboxEvent.CLAIM, OutboxEvent.EXPIRED, OutboxEvent.REQUEUE,
                     OutboxEvent.ABORT}
    assert not any(t is OutboxStatus.SCHEDULED for t in TRANSITIONS.values())
    with pytest.raises(IllegalTransition):
        next_status(OutboxStatus.SCHEDULED, OutboxEvent.RESTART)
