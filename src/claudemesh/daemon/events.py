"""In-process event bus feeding ``GET /v1/events`` (daemon-spec §5.4, DESIGN §5.9).

``publish`` never blocks and never waits for a reader. Each subscriber has a bounded
queue; one that falls ``QUEUE_LIMIT`` events behind is cut off (its stream ends). A
``message`` event carries the inbox ``seq`` as its id, so the client reconnects with
``Last-Event-ID`` and replays the missed messages from ``inbox.db``: nothing is lost.
Peer and status events are live only. At most ``MAX_STREAMS`` subscribers (R-LIM-4).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.errors import TooManyStreams

__all__ = ["Event", "EventBus", "Subscription"]

MAX_STREAMS: Final = 32
QUEUE_LIMIT: Final = 4096


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # message | peer_join | peer_leave | broker_status | feature_negotiation_failed
    data: dict[str, Any]
    id: int | None = None


class Subscription:
    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False

    def offer(self, event: Event | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self.queue = asyncio.Queue(1)
            self.queue.put_nowait(None)  # ends the stream; the client resumes by id

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self, *, max_streams: int = MAX_STREAMS) -> None:
        self._subscribers: set[Subscription] = set()
        self._max = max_streams
        self._closed = False

    def subscribe(self) -> Subscription:
        """Raises TooManyStreams past the cap (429)."""
        if len(self._subscribers) >= self._max:
            raise TooManyStreams(f"at most {self._max} event streams at once")
        sub = Subscription(self)
        if self._closed:
            sub.offer(None)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subscribers):
            sub.offer(event)

    def close(self) -> None:
        """End every stream (daemon shutdown)."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.offer(None)

    @property
    def streams(self) -> int:
        return len(self._subscribers)
