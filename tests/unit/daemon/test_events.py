from __future__ import annotations

import pytest

from claudemesh.daemon.events import Event, EventBus
from claudemesh.daemon.ipc.routes_events import format_event
from claudemesh.errors import TooManyStreams
from claudemesh.sdk.sse import SseEvent, SseParser


async def test_publish_reaches_every_subscriber_and_close_ends_streams() -> None:
    bus = EventBus(max_streams=2)
    a, b = bus.subscribe(), bus.subscribe()
    with pytest.raises(TooManyStreams):
        bus.subscribe()
    bus.publish(Event("peer_join", {"x": 1}))
    assert (await a.queue.get()).kind == "peer_join"  # type: ignore[union-attr]
    assert (await b.queue.get()).kind == "peer_join"  # type: ignore[union-attr]
    a.close()
    assert bus.streams == 1
    bus.close()
    assert await b.queue.get() is None


async def test_a_slow_subscriber_is_cut_off_instead_of_slowing_anyone() -> None:
    bus = EventBus()
    slow = bus.subscribe()
    for i in range(5000):
        bus.publish(Event("message", {"i": i}, id=i))
    assert slow.overflowed
    assert await slow.queue.get() is None


def test_sse_framing_round_trips_through_the_sdk_parser() -> None:
    raw = format_event(Event("message", {"body": "a\nb", "é": 1}, id=42))
    raw += b": keepalive\n\n" + format_event(Event("peer_leave", {"pubkey": "p"}))
    parsed = SseParser().feed(raw)
    assert parsed == [SseEvent("message", "42", '{"body":"a\\nb","é":1}'),
                      SseEvent("peer_leave", None, '{"pubkey":"p"}')]
