"""``deliver_at`` in Phase A of ``POST /v1/send`` (issue 15): parsed to epoch ms, kept out
of the fingerprint, refused when malformed or more than a year ahead; nothing is written.
The scheduled send end to end is tests/integration/e2e/test_scheduled_send.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from claudemesh.clock import iso_ms
from claudemesh.daemon.ipc.context import DaemonContext
from claudemesh.daemon.ipc.requests import (
    MAX_SCHEDULE_AHEAD_MS,
    SendRequest,
    deliver_at_ms,
    instant_ms,
    validate,
)
from claudemesh.daemon.ipc.routes_send import prepare_send
from claudemesh.errors import InvalidRequest

Factory = Callable[..., DaemonContext]
T = 1_796_308_800_000  # 2026-12-03T14:40:00Z


def request(**fields: Any) -> SendRequest:
    return validate(SendRequest, {"to": "#news", "message": "hi", **fields})


@pytest.mark.parametrize(("text", "ms"), [
    ("2026-12-03T14:40:00Z", T), ("2026-12-03T14:40:00.250Z", T + 250),
    ("2026-12-03T15:40:00+01:00", T), ("2026-12-03T14:40:00z", T)])
def test_an_iso_time_with_a_zone_is_epoch_ms(text: str, ms: int) -> None:
    assert instant_ms(text) == ms


@pytest.mark.parametrize(("value", "reason"), [
    ("2026-12-03T14:40:00", "time zone"), ("in ten minutes", "ISO 8601"),
    (1796306400000, "string"), ("", "at least 1")])
def test_a_bad_deliver_at_is_a_400_naming_the_field(value: object, reason: str) -> None:
    with pytest.raises(InvalidRequest, match="deliver_at") as info:
        request(deliver_at=value)
    assert reason in info.value.detail


def test_a_year_ahead_is_the_limit() -> None:
    assert deliver_at_ms("2026-12-03T14:40:00Z", T - MAX_SCHEDULE_AHEAD_MS) == T
    with pytest.raises(InvalidRequest, match="366 days"):
        deliver_at_ms("2026-12-03T14:40:00Z", T - MAX_SCHEDULE_AHEAD_MS - 1)
    assert deliver_at_ms(None, T) is None
    assert deliver_at_ms("2026-12-03T14:40:00Z", T + 60_000) == T  # past: the store sends now


def test_deliver_at_reaches_the_row_but_not_the_fingerprint(make_context: Factory) -> None:
    ctx = make_context("demo")
    soon = ctx.clock() + 60_000
    scheduled = prepare_send(ctx, request(deliver_at=iso_ms(soon)), "k-1")
    plain = prepare_send(ctx, request(), "k-1")
    assert scheduled.send.deliver_at == soon and plain.send.deliver_at is None
    assert scheduled.request_fingerprint == plain.request_fingerprint


def test_far_future_is_refused_before_anything_is_prepared(make_context: Factory) -> None:
    ctx = make_context("demo")
    with pytest.raises(InvalidRequest, match="366 days"):
        prepare_send(ctx, request(deliver_at="2099-01-01T00:00:00Z"), "k-1")
