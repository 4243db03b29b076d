"""The broker's coordinator: the one object sessions and the server talk to.

It owns the store's notification channel and hands each notification to the part it is
for; presence (attach, detach, leases, announcements) is :mod:`.presence`, the pushing of
deliveries is :mod:`.delivery`, and what is left here is routing fresh deliveries and
acks to the recipients' pumps, and the per-member rate limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from claudemesh.broker.delivery import MemberSession, PushEncoder
from claudemesh.broker.metrics import BrokerMetrics
from claudemesh.broker.presence import MemberKey, Presence
from claudemesh.broker.ratelimit import TokenBucket
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import BrokerStore, Delivery, Member
from claudemesh.broker.topic_keys import EpochKeys
from claudemesh.protocol.strictjson import dumps

__all__ = ["Hub"]


class Hub:
    def __init__(self, store: BrokerStore, settings: BrokerSettings, broker_id: str, *,
                 metrics: BrokerMetrics | None = None) -> None:
        self._settings = settings
        self.broker_id = broker_id
        self._store = store
        self._notifier = store.notifier()
        self.epoch_keys = EpochKeys(store)
        self._presence = Presence(store, settings, broker_id, self._notifier,
                                  metrics or BrokerMetrics(), keys=self.epoch_keys)
        self._buckets: dict[MemberKey, TokenBucket] = {}

    async def start(self) -> None:
        await self._notifier.start(self._on_notify)

    async def close(self) -> None:
        """Cancel pumps; pending tasks finish or are cancelled."""
        await self._presence.close()

    # -- connections (presence.py) -----------------------------------------------------

    async def online_members(self, mesh_id: str) -> set[str]:
        return await self._presence.online_members(mesh_id)

    def session_of(self, mesh_id: str, member_id: str) -> MemberSession | None:
        return self._presence.session_of(mesh_id, member_id)

    async def attach(self, session: MemberSession, policy: str) -> None:
        """Make ``session`` the member's connection (cluster-wide) and start its pump.

        Raises:
            MemberAlreadyConnected: the mesh prefers the oldest connection (close 4004).
        """
        await self._presence.attach(session, policy)

    async def detach(self, session: MemberSession, *, revoked: bool = False) -> None:
        """The connection closed: start the presence lease (or leave at once if revoked)."""
        if revoked:
            self._forget(session.member)
        await self._presence.detach(session, revoked=revoked)

    async def revoked(self, member: Member) -> MemberSession | None:
        """A member was revoked: drop its presence now; returns its local session, if any."""
        self._forget(member)
        return await self._presence.revoked(member)

    async def expire_leases(self) -> None:
        """Announce the members whose lease ran out (each exactly once, cluster-wide)."""
        await self._presence.expire_leases()

    async def profile_changed(self, member: Member) -> None:
        await self._presence.profile_changed(member)

    async def membership_moved(self, mesh_id: str, topic: str) -> None:
        """Tell the topic's subscribers connected here that its membership moved (a
        subscribe, an unsubscribe, a revocation), so their next post starts a new epoch
        (docs/protocol.md, Encrypted topics). Members on other brokers learn it from
        their next ``topic_keys``."""
        view = await self._store.topic_keys(mesh_id, topic, "")
        if view is None:
            return
        data = dumps({"type": "event", "event": "topic_membership", "mesh_id": mesh_id,
                      "topic": topic, "membership_version": view.state.membership_version})
        for member_id in await self._store.topic_members(mesh_id, topic):
            session = self._presence.session_of(mesh_id, member_id)
            if session is not None:
                await session.send_unsolicited(data)

    # -- delivery (delivery.py) --------------------------------------------------------

    async def deliver(self, deliveries: Iterable[Delivery]) -> None:
        """Hand fresh deliveries to local pumps; wake the brokers of the other recipients."""
        remote: dict[str, list[str]] = {}
        encode = PushEncoder()  # the body they share is encoded once, if any is pushed now
        for delivery in deliveries:
            pump = self._presence.pump_of(delivery.mesh_id, delivery.recipient_member_id)
            if pump is not None:
                await pump.offer(delivery, encode)
            else:
                remote.setdefault(delivery.mesh_id, []).append(delivery.recipient_member_id)
        for mesh_id, members in remote.items():
            await self._notifier.publish("deliver", {"mesh_id": mesh_id, "member_ids": members})

    def acked(self, member: Member, delivery_ids: list[int]) -> None:
        pump = self._presence.pump_of(member.mesh_id, member.id)
        if pump is not None:
            pump.acked(delivery_ids)

    def _wake(self, payload: dict[str, Any]) -> None:
        """A ``deliver`` notification: the named members' pumps here read again."""
        mesh_id = str(payload.get("mesh_id"))
        for recipient in payload.get("member_ids", []):
            pump = self._presence.pump_of(mesh_id, str(recipient))
            if pump is not None:
                pump.wake.set()

    # -- rate limit --------------------------------------------------------------------

    def rate_delay_s(self, member: Member) -> float:
        """B1 rate limit: 0.0 to go ahead, else how long until the next token."""
        key = (member.mesh_id, member.id)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._settings.rate_per_s,
                                                      self._settings.rate_burst)
        return bucket.take(time.monotonic())

    def _forget(self, member: Member) -> None:
        self._buckets.pop((member.mesh_id, member.id), None)

    # -- notifications -----------------------------------------------------------------

    def _on_notify(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "deliver":
            self._wake(payload)
        else:
            self._presence.on_notify(kind, payload)
