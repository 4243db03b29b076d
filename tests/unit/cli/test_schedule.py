"""``--in`` / ``--at``: the delay and time grammar of scheduled sends (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from claudemesh.cli.schedule import deliver_at, parse_delay, parse_instant
from claudemesh.errors import InvalidRequest

NOW = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0s", 0),
    (" 2H ", 7200)])
def test_delays(text: str, seconds: int) -> None:
    assert parse_delay(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "1w", "-5m", "1.5h", "10m30"])
def test_bad_delays_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="--in"):
        parse_delay(text)


def test_at_needs_a_zone_and_is_written_back_in_utc() -> None:
    assert parse_instant("2026-12-03T18:00:00Z") == datetime(2026, 12, 3, 18, tzinfo=UTC)
    assert deliver_at(None, "2026-12-03T19:00:00+01:00") == "2026-12-03T18:00:00.000Z"
    with pytest.raises(InvalidRequest, match="time zone"):
        parse_instant("2026-12-03T18:00:00")
    with pytest.raises(InvalidRequest, match="ISO 8601"):
        parse_instant("tomorrow")


def test_in_counts_from_now_and_the_two_are_exclusive() -> None:
    assert deliver_at("10m", None, now=NOW) == "2026-12-03T14:10:00.000Z"
    assert deliver_at(None, None) is None
    with pytest.raises(InvalidRequest, match="not both"):
        deliver_at("10m", "2026-12-03T18:00:00Z")
