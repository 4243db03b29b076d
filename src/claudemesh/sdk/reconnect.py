"""How ``events()`` resumes after a disconnect, as pure policy (STYLE (b)5).

The daemon gives every ``message`` event its inbox ``seq`` as the SSE id, and replays
the messages stored after a ``Last-Event-ID`` before going live (docs/api.md). So a
client that remembers the last message id it handed out, and reconnects with it, loses
nothing and repeats nothing: :class:`EventCursor` is that memory. :class:`Backoff` is the
wait between attempts (0.2 s doubling to 5 s, back to 0.2 s once a stream opens); the
clients do the sleeping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from claudemesh.backoff import Schedule
from claudemesh.errors import DaemonUnreachable, ShuttingDown

if TYPE_CHECKING:
    from claudemesh.sdk.inbox import Event

__all__ = ["RECONNECTABLE", "Backoff", "EventCursor", "events_path"]

FIRST_DELAY_S: Final = 0.2
MAX_DELAY_S: Final = 5.0

# A daemon that is gone, restarting or stopping; anything else (429 too_many_streams,
# 401 unauthorized, 400 for a bad id) is raised to the caller rather than retried forever.
RECONNECTABLE: Final = (DaemonUnreachable, ShuttingDown)


def events_path(session: str | None) -> str:
    """``/v1/events``, narrowed to one session's messages when ``session`` is given."""
    if session is None:
        return "/v1/events"
    from urllib.parse import quote  # noqa: PLC0415 - only streams of one session need it

    return f"/v1/events?session={quote(session, safe='')}"


class Backoff:
    """Delays of ``first`` doubling up to ``cap``; :meth:`reset` starts over.

    The shared :class:`~claudemesh.backoff.Schedule` without jitter: one local client
    reconnecting to its own daemon has nobody to fall in step with.
    """

    def __init__(self, first: float = FIRST_DELAY_S, cap: float = MAX_DELAY_S) -> None:
        self._schedule = Schedule(first, cap)
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = self._schedule.step(delay)
        return delay

    def reset(self) -> None:
        self._next = self._schedule.initial


class EventCursor:
    """The id to resume after: the last message event handed to the caller."""

    def __init__(self, last_event_id: str | int | None = None) -> None:
        self.last_event_id = None if last_event_id is None else str(last_event_id)

    def headers(self) -> dict[str, str]:
        return {} if not self.last_event_id else {"Last-Event-ID": self.last_event_id}

    def saw(self, event: Event) -> None:
        if event.id is not None:
            self.last_event_id = event.id
