"""Who is connected, presence leases, and the delivery pump of each connection.

Presence is a lease (DESIGN §5.8). When a member's connection closes, it stays "online"
for ``presence_lease_s``; a new connection within that window re-attaches silently, and
only when the lease runs out do the others get ``peer_left``. A member connecting with no
lease gets ``peer_joined`` sent to the mesh. Two connections of one member follow the
mesh's ``concurrent_connection_policy`` (R-ID-14): ``prefer_newest`` closes the older with
4003, ``prefer_oldest`` refuses the newer with 4004.

Delivery (DESIGN §5.7). A delivery row stays pending until its recipient acks it. Each
connection's :class:`DeliveryPump` pushes pending rows oldest first, at most
``delivery_window`` unacked at once; a push not acked within ``delivery_lease_s`` is pushed
again. When the pump is caught up (its last read found nothing more), a fresh accept's
pushes are handed to it directly, without reading them back from the store. Order: first
pushes to one recipient follow accept order; a re-push after a lease may come later than
newer messages, which receivers tolerate because they dedupe by ``client_message_id``.

This state is per process. Issue 6 moves presence into the shared database so several
brokers agree on it; the interface here (attach, detach, notify) stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from claudemesh.broker.accept import push_frame
from claudemesh.broker.ratelimit import TokenBucket
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import BrokerStore, Delivery, Member
from claudemesh.errors import MemberAlreadyConnected

__all__ = ["DeliveryPump", "Hub", "MemberSession", "peer_view"]

log = logging.getLogger(__name__)

MemberKey = tuple[str, str]  # (mesh_id, member_id)


class MemberSession(Protocol):
    """What the hub needs from a connection (implemented by ``session.Session``)."""

    @property
    def session_id(self) -> str: ...

    @property
    def member(self) -> Member: ...

    async def send(self, frame: dict[str, Any]) -> bool: ...

    async def close(self, code: int, reason: str) -> None: ...


def peer_view(member: Member, *, online: bool) -> dict[str, Any]:
    return {
        "pubkey": member.pubkey, "member_id": member.id, "display_name": member.display_name,
        "online": online, "status": member.status, "summary": member.summary,
        "visible": member.visible, "avatar": member.avatar, "title": member.title,
        "bio": member.bio, "capabilities": list(member.capabilities),
        "groups": list(member.groups),
    }


@dataclass(slots=True)
class _Attached:
    session: MemberSession
    pump: DeliveryPump
    task: asyncio.Task[None]


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
    _timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        self.wake.set()
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                await self._fill()
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _fill(self) -> None:
        self.fetching = True
        try:
            while (room := self.settings.delivery_window - len(self.in_flight)) > 0:
                batch = await self.store.pending_deliveries(
                    self.session.member.id, after=self.cursor, limit=room)
                self.caught_up = len(batch) < room
                for delivery in batch:
                    if not await self._push(delivery):
                        return
                if self.caught_up:
                    break
        finally:
            self.fetching = False

    async def _push(self, delivery: Delivery) -> bool:
        self.cursor = max(self.cursor, delivery.delivery_id)
        if delivery.delivery_id in self.in_flight:
            return True
        self.in_flight[delivery.delivery_id] = time.monotonic() + self.settings.delivery_lease_s
        self._arm_timer()
        return await self.session.send(push_frame(delivery))

    async def offer(self, delivery: Delivery) -> None:
        """A just-accepted delivery: push it now if nothing older is waiting, else read."""
        if self.caught_up and not self.fetching and len(self.in_flight) < (
                self.settings.delivery_window) and delivery.delivery_id > self.cursor:
            await self._push(delivery)
        else:
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


class Hub:
    def __init__(self, store: BrokerStore, settings: BrokerSettings) -> None:
        self._store = store
        self._settings = settings
        self._attached: dict[MemberKey, _Attached] = {}
        self._leases: dict[MemberKey, asyncio.TimerHandle] = {}
        self._buckets: dict[MemberKey, TokenBucket] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- connections -------------------------------------------------------------------

    def is_online(self, mesh_id: str, member_id: str) -> bool:
        key = (mesh_id, member_id)
        return key in self._attached or key in self._leases

    def session_of(self, mesh_id: str, member_id: str) -> MemberSession | None:
        attached = self._attached.get((mesh_id, member_id))
        return None if attached is None else attached.session

    async def attach(self, session: MemberSession, policy: str) -> None:
        """Make ``session`` the member's connection and start its pump.

        Raises:
            MemberAlreadyConnected: the mesh prefers the oldest connection (close 4004).
        """
        member = session.member
        key = (member.mesh_id, member.id)
        old = self._attached.get(key)
        if old is not None and policy == "prefer_oldest":
            raise MemberAlreadyConnected()
        lease = self._leases.pop(key, None)
        if lease is not None:
            lease.cancel()
        pump = DeliveryPump(session, self._store, self._settings)
        self._attached[key] = _Attached(session, pump, asyncio.create_task(
            pump.run(), name=f"pump-{session.session_id}"))
        if old is not None:
            log.info("connection_replaced", extra={"member_id": member.id,
                                                   "old": old.session.session_id,
                                                   "new": session.session_id})
            old.task.cancel()
            self._spawn(old.session.close(4003, "replaced_by_newer_connection"))
        elif lease is None:
            self._broadcast(member, "peer_joined", online=True)

    def detach(self, session: MemberSession, *, revoked: bool = False) -> None:
        """The connection closed: start the presence lease (or leave at once if revoked)."""
        member = session.member
        key = (member.mesh_id, member.id)
        attached = self._attached.get(key)
        if attached is None or attached.session is not session:
            return  # replaced earlier: the newer connection owns presence
        del self._attached[key]
        attached.task.cancel()
        if revoked:
            self._broadcast(member, "peer_left", online=False)
            return
        loop = asyncio.get_running_loop()
        self._leases[key] = loop.call_later(self._settings.presence_lease_s,
                                            self._lease_expired, member)

    def _lease_expired(self, member: Member) -> None:
        self._leases.pop((member.mesh_id, member.id), None)
        self._broadcast(member, "peer_left", online=False)

    def revoked(self, member: Member) -> MemberSession | None:
        """A member was revoked: drop a lease at once; return its live session, if any."""
        key = (member.mesh_id, member.id)
        lease = self._leases.pop(key, None)
        if lease is not None:
            lease.cancel()
            self._broadcast(member, "peer_left", online=False)
        self._buckets.pop(key, None)
        attached = self._attached.get(key)
        return None if attached is None else attached.session

    # -- delivery ----------------------------------------------------------------------

    async def deliver(self, deliveries: Iterable[Delivery]) -> None:
        """Hand fresh deliveries to the pumps of recipients that are connected here."""
        for delivery in deliveries:
            attached = self._attached.get((delivery.mesh_id, delivery.recipient_member_id))
            if attached is not None:
                await attached.pump.offer(delivery)

    def acked(self, member: Member, delivery_ids: list[int]) -> None:
        attached = self._attached.get((member.mesh_id, member.id))
        if attached is not None:
            attached.pump.acked(delivery_ids)

    def rate_delay_s(self, member: Member) -> float:
        """B1 rate limit: 0.0 to go ahead, else how long until the next token."""
        key = (member.mesh_id, member.id)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._settings.rate_per_s,
                                                      self._settings.rate_burst)
        return bucket.take(time.monotonic())

    # -- events ------------------------------------------------------------------------

    def event(self, member: Member, event: str, *, online: bool) -> None:
        self._broadcast(member, event, online=online)

    def _broadcast(self, member: Member, event: str, *, online: bool) -> None:
        if not member.visible and event != "profile_updated":
            return
        frame = {"type": "event", "event": event, "mesh_id": member.mesh_id,
                 "peer": peer_view(member, online=online)}
        targets = [a.session for (mesh, member_id), a in self._attached.items()
                   if mesh == member.mesh_id and member_id != member.id]
        for target in targets:
            self._spawn(target.send(frame))

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel leases and pumps; pending tasks finish or are cancelled."""
        for lease in self._leases.values():
            lease.cancel()
        self._leases.clear()
        for attached in self._attached.values():
            attached.task.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)

