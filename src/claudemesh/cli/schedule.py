"""``--in 10m`` / ``--at 2026-12-03T18:00:00Z``: when a scheduled send goes out (issue 15).

The CLI turns either into the absolute ``deliver_at`` the daemon's API takes (ISO 8601
UTC), using this machine's clock, which is the daemon's too. Pure parsing, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import click

from claudemesh.errors import InvalidRequest

__all__ = ["deliver_at", "parse_delay", "parse_instant", "schedule_options"]

F = TypeVar("F", bound=Callable[..., Any])
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DELAY: Final = re.compile(r"(?:(\d+)([smhd]))+")
_PART: Final = re.compile(r"(\d+)([smhd])")


def parse_delay(text: str) -> timedelta:
    """``30s``, ``10m``, ``2h``, ``1d`` or a run of them (``1h30m``).

    Raises:
        InvalidRequest: anything else.
    """
    compact = text.strip().lower()
    if not _DELAY.fullmatch(compact):
        raise InvalidRequest(f"--in {text!r}: give a delay like 30s, 10m, 2h, 1d or 1h30m")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(compact)))


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with a zone; a bare local time would be ambiguous, so refused.

    Raises:
        InvalidRequest: malformed, or without a zone.
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"--at {text!r}: give an ISO 8601 time such as"
                             " 2026-12-03T18:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"--at {text!r} needs a time zone (a trailing Z for UTC,"
                             " or +01:00)")
    return moment


def deliver_at(delay: str | None, at: str | None, *, now: datetime | None = None) -> str | None:
    """The ``deliver_at`` to send, from ``--in`` or ``--at`` (at most one), or None.

    Raises:
        InvalidRequest: both given, or either malformed.
    """
    if delay is not None and at is not None:
        raise InvalidRequest("give --in or --at, not both")
    if delay is not None:
        moment = (now or datetime.now(UTC)) + parse_delay(delay)
    elif at is not None:
        moment = parse_instant(at)
    else:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def schedule_options(fn: F) -> F:
    """``--in`` and ``--at`` (exclusive), passed on as ``delay`` and ``at``."""
    fn = click.option("--at", "at", metavar="TIME",
                      help="Deliver at this ISO 8601 time with a zone"
                           " (2026-12-03T18:00:00Z).")(fn)
    return click.option("--in", "delay", metavar="DELAY",
                        help="Deliver after this delay: 30s, 10m, 2h, 1d, 1h30m.")(fn)
