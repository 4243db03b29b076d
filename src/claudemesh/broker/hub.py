"""Who is connected, presence leases, and the delivery pump of each connection.

Presence is rows in the store, so several brokers on one store agree on it (issue 6).
A member is ``online`` on one session of one broker, or ``leased`` until a time. When its
connection closes, the member stays leased for ``presence_lease_s``; a new connection in
that window, on any broker, re-attaches silently, and only when the lease runs out do the
others get ``peer_left`` (DESIGN §5.8). Expired leases are deleted with ``RETURNING``, so
exactly one broker announces each departure. A member connecting with no presence row is
announced with ``peer_joined``. Two connections of one member follow the mesh's
``concurrent_connection_policy`` (R-ID-14): ``prefer_newest`` closes the older with 4003
(across brokers: a ``replace`` notification), ``prefer_oldest`` refuses the newer (4004).
Brokers heartbeat; the members of a broker silent for ``broker_dead_after_s`` count as
leased from its last heartbeat, so a crashed broker's members leave after their lease.

Announcements travel as store notifications (in-process for SQLite, LISTEN/NOTIFY for
PostgreSQL); each broker relays them to its own connections. The facts themselves are in
the tables before anything is announced.

Delivery (DESIGN §5.7). A delivery row stays pending until its recipient acks it. Each
connection's :class:`DeliveryPump` pushes pending rows oldest first, at most
``delivery_window`` unacked at once; a push not acked within ``delivery_lease_s`` is pushed
again. When the pump is caught up (its last read found nothing more), a fresh accept's
pushes are handed to it directly, without reading them back. Recipients connected to
another broker get a ``deliver`` notification, and that broker's pump reads them. Order:
first pushes to one recipient follow accept order; a re-push after a lease may come later
than newer messages, which receivers tolerate because they dedupe by ``client_message_id``.
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
from claudemesh.clock import now_ms
from claudemesh.errors import ClaudemeshError
from claudemesh.protocol.close import CloseCode

__all__ = ["DeliveryPump", "Hub", "MemberSession", "peer_view"]

log = logging.getLogger(__name__)

MemberKey = tuple[str, str]  # (mesh_id, member_id)


class MemberSession(Protocol):
    """What the hub needs from a connection (implemented by ``session.Session``)."""

    @property
    def session_id(self) -> str: ...

    @property
    def member(self) -> Member: ...

    async def send_unsolicited(self, frame: dict[str, Any]) -> bool:
        """Send a push or event, never ahead of the connection's hello_ack."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


def peer_view(member: Member, *, online: bool) -> dict[str, Any]:
    """A peer as ``list_peers``, ``set_profile`` and presence events show it. Each session
    entry has all four keys, null when not set, like the member's own profile fields."""
    return {
        "pubkey": member.pubkey, "member_id": member.id, "display_name": member.display_name,
        "online": online, "status": member.status, "summary": member.summary,
        "visible": member.visible, "avatar": member.avatar, "title": member.title,
        "bio": member.bio, "capabilities": list(member.capabilities),
        "groups": list(member.groups),
        "sessions": [{"name": s.name, "summary": s.summary, "status": s.status,
                      "harness": s.harness} for s in member.sessions],
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
                for delivery in batch:
                    if not await self._push(delivery):
                        return
                if self.caught_up:
                    break
        finally:
            self.fetching = False

    async def _push(self, delivery: Delivery, *, from_read: bool = True) -> bool:
        if from_read:  # only a read may move the cursor: it has seen everything below it
            self.cursor = max(self.cursor, delivery.delivery_id)
        if delivery.delivery_id in self.in_flight:
            return True
        self.in_flight[delivery.delivery_id] = time.monotonic() + self.settings.delivery_lease_s
        self._arm_timer()
        return await self.session.send_unsolicited(push_frame(delivery))

    async def offer(self, delivery: Delivery) -> None:
        """A just-accepted delivery: push it now if nothing older is waiting, else read.

        A direct push does not move the cursor, so a delivery declined earlier (window
        full) is still found by the next read; the pushed one is skipped there because it
        is in flight. Declining marks the pump behind, so no newer offer jumps the queue.
        """
        if self.caught_up and not self.fetching and len(self.in_flight) < (
                self.settings.delivery_window) and delivery.delivery_id > self.cursor:
            await self._push(delivery, from_read=False)
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


class Hub:
    def __init__(self, store: BrokerStore, settings: BrokerSettings, broker_id: str) -> None:
        self._store = store
        self._settings = settings
        self.broker_id = broker_id
        self._notifier = store.notifier()
        self._attached: dict[MemberKey, _Attached] = {}
        self._buckets: dict[MemberKey, TokenBucket] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self._notifier.start(self._on_notify)

    @property
    def _dead_after_ms(self) -> int:
        return int(self._settings.broker_dead_after_s * 1000)

    @property
    def _lease_ms(self) -> int:
        return int(self._settings.presence_lease_s * 1000)

    # -- connections -------------------------------------------------------------------

    async def online_members(self, mesh_id: str) -> set[str]:
        return await self._store.presence_online(mesh_id)

    def session_of(self, mesh_id: str, member_id: str) -> MemberSession | None:
        attached = self._attached.get((mesh_id, member_id))
        return None if attached is None else attached.session

    async def attach(self, session: MemberSession, policy: str) -> None:
        """Make ``session`` the member's connection (cluster-wide) and start its pump.

        Raises:
            MemberAlreadyConnected: the mesh prefers the oldest connection (close 4004).
        """
        member = session.member
        key = (member.mesh_id, member.id)
        change = await self._store.presence_attach(
            member.mesh_id, member.id, broker_id=self.broker_id, session_id=session.session_id,
            now_ms=now_ms(), prefer_oldest=policy == "prefer_oldest",
            dead_after_ms=self._dead_after_ms)
        old = self._attached.pop(key, None)
        pump = DeliveryPump(session, self._store, self._settings)
        self._attached[key] = _Attached(session, pump, asyncio.create_task(
            pump.run(), name=f"pump-{session.session_id}"))
        if old is not None:
            old.task.cancel()
            self._replace_local(old.session)
        if change.previous_state == "online" and change.previous_session_id not in (
                None, session.session_id) and (old is None or (
                old.session.session_id != change.previous_session_id)):
            await self._notifier.publish("replace", {
                "mesh_id": member.mesh_id, "member_id": member.id,
                "session_id": change.previous_session_id})
        elif change.previous_state is None:
            await self._announce(member, "peer_joined")

    def _replace_local(self, session: MemberSession) -> None:
        log.info("connection_replaced", extra={"member_id": session.member.id,
                                               "old": session.session_id})
        self._spawn(session.close(CloseCode.REPLACED, "replaced_by_newer_connection"))

    async def detach(self, session: MemberSession, *, revoked: bool = False) -> None:
        """The connection closed: start the presence lease (or leave at once if revoked)."""
        member = session.member
        key = (member.mesh_id, member.id)
        attached = self._attached.get(key)
        if attached is not None and attached.session is session:
            del self._attached[key]
            attached.task.cancel()
        if revoked:
            await self.revoked(member)
            return
        await self._store.presence_detach(
            member.mesh_id, member.id, session_id=session.session_id,
            lease_until_ms=now_ms() + self._lease_ms)

    async def revoked(self, member: Member) -> MemberSession | None:
        """A member was revoked: drop its presence now; returns its local session, if any."""
        self._buckets.pop((member.mesh_id, member.id), None)
        if await self._store.presence_drop(member.mesh_id, member.id):
            await self._announce(member, "peer_left")
        return self.session_of(member.mesh_id, member.id)

    async def expire_leases(self) -> None:
        """Announce the members whose lease ran out (each exactly once, cluster-wide)."""
        for mesh_id, member_id in await self._store.presence_expired(
                now_ms(), dead_after_ms=self._dead_after_ms, lease_ms=self._lease_ms):
            await self._notifier.publish("presence", {"event": "peer_left",
                                                      "mesh_id": mesh_id,
                                                      "member_id": member_id})

    # -- delivery ----------------------------------------------------------------------

    async def deliver(self, deliveries: Iterable[Delivery]) -> None:
        """Hand fresh deliveries to local pumps; wake the brokers of the other recipients."""
        remote: dict[str, list[str]] = {}
        for delivery in deliveries:
            attached = self._attached.get((delivery.mesh_id, delivery.recipient_member_id))
            if attached is not None:
                await attached.pump.offer(delivery)
            else:
                remote.setdefault(delivery.mesh_id, []).append(delivery.recipient_member_id)
        for mesh_id, members in remote.items():
            await self._notifier.publish("deliver", {"mesh_id": mesh_id, "member_ids": members})

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

    # -- announcements -----------------------------------------------------------------

    async def profile_changed(self, member: Member) -> None:
        await self._notifier.publish("profile", {"mesh_id": member.mesh_id,
                                                 "member_id": member.id})

    async def _announce(self, member: Member, event: str) -> None:
        await self._notifier.publish("presence", {"event": event, "mesh_id": member.mesh_id,
                                                  "member_id": member.id})

    def _on_notify(self, kind: str, payload: dict[str, Any]) -> None:
        mesh_id, member_id = payload.get("mesh_id"), payload.get("member_id")
        if kind == "deliver":
            for recipient in payload.get("member_ids", []):
                attached = self._attached.get((str(mesh_id), str(recipient)))
                if attached is not None:
                    attached.pump.wake.set()
        elif kind == "replace":
            attached = self._attached.get((str(mesh_id), str(member_id)))
            if attached is not None and attached.session.session_id == payload.get("session_id"):
                del self._attached[(str(mesh_id), str(member_id))]
                attached.task.cancel()
                self._replace_local(attached.session)
        elif kind == "presence":
            event = str(payload.get("event"))
            self._spawn(self._relay(str(mesh_id), str(member_id), event,
                                    online=event != "peer_left"))
        elif kind == "profile":
            self._spawn(self._relay(str(mesh_id), str(member_id), "profile_updated",
                                    online=True))

    async def _relay(self, mesh_id: str, member_id: str, event: str, *, online: bool) -> None:
        """Send an announcement to this broker's connections in the mesh, but the member's."""
        member = await self._store.get_member_by_id(member_id)
        if member is None or (not member.visible and event != "profile_updated"):
            return
        frame = {"type": "event", "event": event, "mesh_id": mesh_id,
                 "peer": peer_view(member, online=online)}
        targets = [a.session for (mesh, other), a in self._attached.items()
                   if mesh == mesh_id and other != member_id]
        for target in targets:
            self._spawn(target.send_unsolicited(frame))

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel pumps; pending tasks finish or are cancelled."""
        for attached in self._attached.values():
            attached.task.cancel()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
