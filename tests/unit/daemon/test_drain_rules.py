from __future__ import annotations

import random

import pytest

from claudemesh.daemon.drain_rules import (
    VerdictKind,
    classify_result,
    max_age_hours,
    retry_delay_ms,
)
from claudemesh.protocol.features import DedupeParams
from claudemesh.protocol.replies import BrokerReply, parse_reply


def answer_of(doc: dict[str, object]) -> BrokerReply:
    """The test's answer as the link hands it over: a send_result unless it says otherwise."""
    return parse_reply({"type": "send_result", **doc})


@pytest.mark.parametrize(("answer", "kind"), [
    ({"code": 201, "broker_message_id": "b", "history_id": "1"}, VerdictKind.DONE),
    ({"code": 200, "broker_message_id": "b", "duplicate": True}, VerdictKind.DONE),
    ({"code": 409, "error": "idempotency_key_reused"}, VerdictKind.DEAD),
    ({"code": 409, "error": "stale_epoch", "membership_version": 4}, VerdictKind.RESEAL),
    ({"code": 400, "error": "invalid_envelope", "detail": "x"}, VerdictKind.DEAD),
    ({"code": 404, "error": "destination_not_found"}, VerdictKind.DEAD),
    ({"code": 413, "error": "payload_too_large"}, VerdictKind.DEAD),
    ({"code": 429, "error": "rate_limited", "retry_after_ms": 250}, VerdictKind.RETRY),
    ({"code": 500, "error": "store_error"}, VerdictKind.RETRY),
    ({"code": 503}, VerdictKind.RETRY),
    ({"code": 201}, VerdictKind.RETRY),  # no broker_message_id: not a real success
    ({"type": "error", "code": "invalid_frame"}, VerdictKind.RETRY),
])
def test_classify(answer: dict[str, object], kind: VerdictKind) -> None:
    assert classify_result(answer_of(answer)).kind is kind


def test_details_survive_classification() -> None:
    done = classify_result(answer_of({"code": 200, "broker_message_id": "b", "history_id": "7",
                            "history_available": False}))
    assert (done.broker_message_id, done.history_id, done.history_available) == ("b", "7", False)
    limited = classify_result(answer_of({"code": 429, "error": "rate_limited",
                                         "retry_after_ms": 250}))
    assert limited.retry_after_ms == 250
    conflict = classify_result(answer_of({"code": 409, "conflict": "request_fingerprint_mismatch",
                                "broker_fingerprint_prefix": "ab" * 8}))
    assert "request_fingerprint_mismatch" in str(conflict.error)
    assert "ab" * 8 in str(conflict.error)


def test_retry_delays_follow_the_reconnect_schedule() -> None:
    rng = random.Random(3)
    for attempts, base in [(1, 500), (2, 1000), (3, 2000), (7, 30_000), (60, 30_000)]:
        delay = retry_delay_ms(attempts, rng)
        assert base * 0.75 <= delay <= base * 1.25


@pytest.mark.parametrize(("days", "hours"), [(3, 72), (30, 648), (365, 7884)])
def test_max_age_reference_points(days: int, hours: int) -> None:
    assert max_age_hours(DedupeParams("retention_scoped", days, None)) == hours


def test_max_age_in_permanent_mode_and_before_negotiation() -> None:
    assert max_age_hours(DedupeParams("permanent", None, None)) == 168
    assert max_age_hours(None) == 168


def test_override_may_shorten_but_never_exceed_the_window() -> None:
    dedupe = DedupeParams("retention_scoped", 30, None)
    assert max_age_hours(dedupe, override=24) == 24
    assert max_age_hours(dedupe, override=719) == 719
    with pytest.raises(ValueError, match="outbox_max_age_above_dedupe_window"):
        max_age_hours(dedupe, override=720)
    with pytest.raises(ValueError, match="outbox_max_age_above_dedupe_window"):
        max_age_hours(DedupeParams("permanent", None, None), override=721)
