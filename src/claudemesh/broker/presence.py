"""Who is connected, presence leases, and the announcements that follow them.

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
the tables before anything is announced. Each local connection that is attached here has
its :class:`~claudemesh.broker.delivery.DeliveryPump`, started and stopped with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from claudemesh.broker.delivery import DeliveryPump, MemberSession
from claudemesh.broker.metrics import BrokerMetrics
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import BrokerStore, Member, Notifier
from claudemesh.broker.topic_keys import EpochKeys
from claudemesh.clock import now_ms
from claudemesh.protocol.close import CloseCode
from claudemesh.protocol.strictjson import dumps

__all__ = ["MemberKey", "Presence", "peer_view"]

log = logging.getLogger(__name__)

MemberKey = tuple[str, str]  # (mesh_id, member_id)


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


class Presence:
    """This broker's attached connections and the cluster-wide presence rows behind them."""

    def __init__(self, store: BrokerStore, settings: BrokerSettings, broker_id: str,
                 notifier: Notifier, metrics: BrokerMetrics, *,
                 keys: EpochKeys | None = None) -> None:
        self._store = store
        self._keys = keys
        self._metrics = metrics
        self._settings = settings
        self._broker_id = broker_id
        self._notifier = notifier
        self._attached: dict[MemberKey, _Attached] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

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

    def pump_of(self, mesh_id: str, member_id: str) -> DeliveryPump | None:
        """The pump of the member's connection here, if it has one."""
        attached = self._attached.get((mesh_id, member_id))
        return None if attached is None else attached.pump

    async def attach(self, session: MemberSession, policy: str) -> None:
        """Make ``session`` the member's connection (cluster-wide) and start its pump.

        Raises:
            MemberAlreadyConnected: the mesh prefers the oldest connection (close 4004).
        """
        member = session.member
        key = (member.mesh_id, member.id)
        change = await self._store.presence_attach(
            member.mesh_id, member.id, broker_id=self._broker_id,
            session_id=session.session_id, now_ms=now_ms(),
            prefer_oldest=policy == "prefer_oldest", dead_after_ms=self._dead_after_ms)
        old = self._attached.pop(key, None)
        pump = DeliveryPump(session, self._store, self._settings, metrics=self._metrics,
                            keys=self._keys)
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

    # -- announcements -----------------------------------------------------------------

    async def profile_changed(self, member: Member) -> None:
        await self._notifier.publish("profile", {"mesh_id": member.mesh_id,
                                                 "member_id": member.id})

    async def _announce(self, member: Member, event: str) -> None:
        await self._notifier.publish("presence", {"event": event, "mesh_id": member.mesh_id,
                                                  "member_id": member.id})

    def on_notify(self, kind: str, payload: dict[str, Any]) -> None:
        """A ``replace``, ``presence`` or ``profile`` notification from any broker."""
        mesh_id, member_id = payload.get("mesh_id"), payload.get("member_id")
        if kind == "replace":
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
        data = dumps({"type": "event", "event": event, "mesh_id": mesh_id,
                      "peer": peer_view(member, online=online)})  # once, for every target
        targets = [a.session for (mesh, other), a in self._attached.items()
                   if mesh == mesh_id and other != member_id]
        for target in targets:
            self._spawn(target.send_unsolicited(data))

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
