"""Delivery (DESIGN §5.7): each connection's pump of pending deliveries, and its push frames.

A delivery row stays pending until its recipient acks it. Each connection's
:class:`DeliveryPump` pushes pending rows oldest first, at most ``delivery_window`` unacked
at once; a push not acked within ``delivery_lease_s`` is pushed again. When the pump is
caught up (its last read found nothing more), a fresh accept's pushes are handed to it
directly, without reading them back. Recipients connected to another broker get a
``deliver`` notification, and that broker's pump reads them. Order: first pushes to one
recipient follow accept order; a re-push after a lease may come later than newer
messages, which receivers tolerate because they dedupe by ``client_message_id``.

Encoding. A push frame is encoded once, when it is pushed, and those bytes are what the
socket gets; with ``frame_batch`` the cork splices them into a batch as they are
(``protocol.batch.encode_batch``). The body one accept sends to all its recipients is
encoded once for all of them (:class:`PushEncoder`) and spliced into each recipient's
frame as an ``orjson.Fragment``. The bytes are exactly ``strictjson.dumps(push_frame(d))``:
a frame orjson refuses (an integer past 64 bits, say) is encoded whole by that function's
fallback, as it always was. A re-push after a lease comes from a fresh store read, and
is encoded once for that read. A topic_box push also carries its recipient's own sealed
epoch key (``epoch_key``, a few hundred bytes per recipient, outside the shared body);
a re-push from a read takes it from :class:`~.topic_keys.EpochKeys`' cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from claudemesh.broker.accept import push_frame
from claudemesh.broker.metrics import BrokerMetrics
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import BrokerStore, Delivery, Member
from claudemesh.broker.topic_keys import EpochKeys
from claudemesh.clock import now_ms
from claudemesh.errors import ClaudemeshError
from claudemesh.protocol.strictjson import dumps

__all__ = ["DeliveryPump", "MemberSession", "PushEncoder", "encode_push", "history_item"]

log = logging.getLogger(__name__)

Encode = Callable[[Delivery], bytes]


class MemberSession(Protocol):
    """What the hub and a pump need from a connection (implemented by ``session.Session``)."""

    @property
    def session_id(self) -> str: ...

    @property
    def member(self) -> Member: ...

    async def send_unsolicited(self, data: bytes) -> bool:
        """Send an encoded push or event, never ahead of the connection's hello_ack."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


def encode_push(delivery: Delivery, body: orjson.Fragment | None = None) -> bytes:
    """The push frame of ``delivery`` as it goes on the wire; ``body``, when given, is
    ``delivery.body`` already encoded (see the module docstring)."""
    if body is not None:
        frame = push_frame(delivery)
        frame["body"] = body
        try:
            return orjson.dumps(frame)
        except TypeError:  # orjson.JSONEncodeError: the fallback below encodes it whole
            pass
    return dumps(push_frame(delivery))


def history_item(delivery: Delivery) -> dict[str, Any]:
    """A stored message as a ``topic_history`` item: its push to the reader, made by
    :func:`encode_push` (so whatever a push carries for its recipient, history carries
    too), minus the ``type`` and ``delivery_id`` that only a delivery has."""
    item: dict[str, Any] = orjson.loads(encode_push(delivery))
    del item["type"], item["delivery_id"]
    return item


class PushEncoder:
    """Encodes one accept's pushes: the body its recipients share is encoded on first use,
    once. Deliveries with another body object are encoded as they are."""

    def __init__(self) -> None:
        self._body: dict[str, Any] | None = None
        self._fragment: orjson.Fragment | None = None

    def __call__(self, delivery: Delivery) -> bytes:
        if delivery.body is not self._body:
            self._body = delivery.body
            try:
                self._fragment = orjson.Fragment(orjson.dumps(delivery.body))
            except TypeError:
                self._fragment = None
        return encode_push(delivery, self._fragment)


@dataclass(slots=True)
class DeliveryPump:
    """Pushes one member's pending deliveries to one connection (see module docstring)."""

    session: MemberSession
    store: BrokerStore
    settings: BrokerSettings
    in_flight: dict[int, float] = field(default_factory=dict)  # delivery id -> deadline
    cursor: int = 0
    caught_up: bool = False
    fetching: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: BrokerMetrics = field(default_factory=BrokerMetrics)
    keys: EpochKeys | None = None  # topic_box re-pushes get their sealed key here
    _timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        self.wake.set()
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                try:
                    await self._fill()
                except ClaudemeshError:
                    log.exception("delivery_read_failed", extra={
                        "member_id": self.session.member.id})
                    await asyncio.sleep(1.0)
                    self.wake.set()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _fill(self) -> None:
        self.fetching = True
        lease_ms = int(self.settings.delivery_lease_s * 1000)
        try:
            while (room := self.settings.delivery_window - len(self.in_flight)) > 0:
                batch = await self.store.pending_deliveries(
                    self.session.member.id, after=self.cursor, limit=room,
                    session_id=self.session.session_id, now_ms=now_ms(), lease_ms=lease_ms)
                self.caught_up = len(batch) < room
                for read in batch:
                    delivery = read if self.keys is None else await self.keys.attach(read)
                    if not await self._push(delivery):
                        return
                if self.caught_up:
                    break
        finally:
            self.fetching = False

    async def _push(self, delivery: Delivery, encode: Encode = encode_push, *,
                    from_read: bool = True) -> bool:
        if from_read:  # only a read may move the cursor: it has seen everything below it
            self.cursor = max(self.cursor, delivery.delivery_id)
        if delivery.delivery_id in self.in_flight:
            return True
        self.in_flight[delivery.delivery_id] = time.monotonic() + self.settings.delivery_lease_s
        self._arm_timer()
        if not await self.session.send_unsolicited(encode(delivery)):
            return False
        self.metrics.pushed += 1
        return True

    async def offer(self, delivery: Delivery, encode: Encode = encode_push) -> None:
        """A just-accepted delivery: push it now if nothing older is waiting, else read.

        A direct push does not move the cursor, so a delivery declined earlier (window
        full) is still found by the next read; the pushed one is skipped there because it
        is in flight. Declining marks the pump behind, so no newer offer jumps the queue.
        ``encode`` builds the frame's bytes, only if it is pushed now.
        """
        if self.caught_up and not self.fetching and len(self.in_flight) < (
                self.settings.delivery_window) and delivery.delivery_id > self.cursor:
            await self._push(delivery, encode, from_read=False)
        else:
            self.caught_up = False
            self.wake.set()

    def acked(self, delivery_ids: Iterable[int]) -> None:
        for delivery_id in delivery_ids:
            self.in_flight.pop(delivery_id, None)
        self.wake.set()

    def _arm_timer(self) -> None:
        if self._timer is None and self.in_flight:
            loop = asyncio.get_running_loop()
            delay = max(0.0, min(self.in_flight.values()) - time.monotonic())
            self._timer = loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = time.monotonic()
        expired = [d for d, deadline in self.in_flight.items() if deadline <= now]
        for delivery_id in expired:
            del self.in_flight[delivery_id]
        if expired:
            log.info("delivery_lease_expired", extra={
                "member_id": self.session.member.id, "count": len(expired)})
            self.cursor = min(self.cursor, min(expired) - 1)
            self.caught_up = False
            self.wake.set()
        self._arm_timer()
