"""Everything the daemon runs per joined mesh, and the set of them.

Per mesh: the link (:mod:`.link`), the drain (:mod:`.drain`), the inbound processor
(:mod:`.inbound`), and the peer directory's upkeep: on every OPEN the directory is
refreshed with ``list_peers`` and saved to ``inbox.db`` (so names still resolve while the
broker is down), and presence events update it. Broker events become SSE events:
``peer_joined`` -> ``peer_join``, ``peer_left`` -> ``peer_leave``, every link state
change -> ``broker_status``. On every OPEN the mesh's recorded topic subscriptions and
group memberships (:mod:`.memberships`) are asserted again. Each task has an owner here
and is cancelled at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from claudemesh.config import MeshConfig
from claudemesh.daemon.directory import Peer, PeerDirectory
from claudemesh.daemon.drain import Drain
from claudemesh.daemon.events import Event, EventBus
from claudemesh.daemon.inbound import Inbound
from claudemesh.daemon.link import BrokerLink, LinkTimings
from claudemesh.daemon.link_rules import TERMINAL, LinkState
from claudemesh.daemon.memberships import Memberships
from claudemesh.daemon.store.inbox import InboxStore
from claudemesh.daemon.topic_keys import TopicKeyring, TopicSender
from claudemesh.errors import BrokerUnavailable, ClaudemeshError
from claudemesh.protocol.replies import EventReply, Result
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["MeshRuntime", "Meshes", "stop_tasks"]

log = logging.getLogger(__name__)

SETTLE_TIMEOUT_S: Final = 5.0
_PRESENCE: Final = {"peer_joined": "peer_join", "peer_left": "peer_leave"}


SessionsSource = Callable[[], Awaitable[list[dict[str, Any]]]]

RECANCEL_S: Final = 2.0


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait for them, cancelling again (and logging) any still
    running after ``RECANCEL_S``: a cancel lost in a race must not hang the daemon's stop."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        if pending:
            log.warning("task_went_on_after_cancel", extra={
                "tasks": sorted(task.get_name() for task in pending)})
    await asyncio.gather(*tasks, return_exceptions=True)


async def _no_sessions() -> list[dict[str, Any]]:
    return []


class MeshRuntime:
    def __init__(self, mesh: MeshConfig, *, outbox: DbWorker, inbox: DbWorker, bus: EventBus,
                 directory: PeerDirectory, clock: Callable[[], int],
                 iso: Callable[[int], str | None], timings: LinkTimings | None = None,
                 on_state: Callable[[MeshRuntime], None] | None = None,
                 on_stored: Callable[[], None] = lambda: None,
                 sessions: SessionsSource = _no_sessions,
                 memberships: Memberships | None = None,
                 keyring: TopicKeyring | None = None) -> None:
        self.mesh = mesh
        self.memberships = memberships
        self._inbox = inbox
        self._bus = bus
        self._directory = directory
        self._clock = clock
        self._on_state = on_state
        self._sessions = sessions
        self._publish = asyncio.Event()  # the session list changed, or the link opened
        self._publishing = asyncio.Lock()  # one set_profile of the list at a time
        self.link = BrokerLink(mesh, on_push=self._push, on_event=self._event,
                               on_state=self._state_changed, timings=timings)
        self.topics = TopicSender(mesh, self.link, keyring or TopicKeyring(None))
        self.drain = Drain(self.link, outbox, clock=clock, reseal=self.topics.reseal)
        self.inbound = Inbound(mesh, self.link, inbox, bus, clock=clock, iso=iso,
                               outbox=outbox, on_stored=on_stored, topics=self.topics)
        self._tasks: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        slug = self.mesh.slug
        self._tasks = [asyncio.create_task(self.link.run(), name=f"link-{slug}"),
                       asyncio.create_task(self.drain.run(), name=f"drain-{slug}"),
                       asyncio.create_task(self.inbound.run(), name=f"inbound-{slug}"),
                       asyncio.create_task(self._publisher(), name=f"sessions-{slug}")]

    # -- the session list, published with the profile (member_sessions) ---------------

    def sessions_changed(self) -> None:
        self._publish.set()

    @property
    def publishes_sessions(self) -> bool:
        negotiated = self.link.negotiated
        return negotiated is not None and negotiated.max_sessions is not None

    async def publish_sessions(self) -> Result | None:
        """Send the session list as it is now; the broker's ``result``, or None when this
        broker has no member_sessions or refused the list (logged). One at a time, so the
        latest list wins.

        Raises:
            BrokerUnavailable, TimeoutError: the link is down or did not answer.
        """
        async with self._publishing:
            negotiated = self.link.negotiated
            if negotiated is None or negotiated.max_sessions is None:
                return None
            entries = (await self._sessions())[:negotiated.max_sessions]
            try:
                return await self.link.request({"type": "set_profile", "sessions": entries})
            except BrokerUnavailable:
                raise
            except ClaudemeshError as exc:  # the broker refused the list
                log.warning("sessions_not_published", extra={
                    "mesh": self.mesh.slug, "code": exc.code, "detail": exc.detail})
                return None

    async def _publisher(self) -> None:
        """Publish after every change and every OPEN; a list that could not be sent goes
        out on the next OPEN."""
        while True:
            await self._publish.wait()
            await self.link.wait_open()
            self._publish.clear()
            with contextlib.suppress(BrokerUnavailable, TimeoutError):
                await self.publish_sessions()

    async def stop(self) -> None:
        await self.link.close()
        await stop_tasks([*self._tasks, *self._side])

    # -- callbacks from the link -------------------------------------------------------

    async def _push(self, frame: dict[str, Any]) -> None:
        await self.inbound.put(frame)

    def _event(self, frame: EventReply) -> None:
        event, peer = frame.event, frame.peer
        if event == "topic_membership":  # its next post starts a new epoch
            topic, version = frame.data.get("topic"), frame.data.get("membership_version")
            if isinstance(topic, str) and isinstance(version, int):
                self.topics.keyring.heard(self.mesh.mesh_id, topic, version)
            return
        if not isinstance(peer, dict) or not isinstance(peer.get("pubkey"), str) or (
                not isinstance(peer.get("display_name"), str)):
            return
        self._directory.upsert(self.mesh.slug, Peer(peer["pubkey"], peer["display_name"]))
        self._spawn(self._save_peer(peer))
        if event in _PRESENCE:
            self._bus.publish(Event(_PRESENCE[str(event)], {
                "mesh": self.mesh.slug, "pubkey": peer["pubkey"],
                "display_name": peer["display_name"], "online": peer.get("online")}))

    def _state_changed(self, link: BrokerLink) -> None:
        self._bus.publish(Event("broker_status", {"mesh": self.mesh.slug,
                                                  "status": str(link.state),
                                                  "error": link.last_error}))
        if link.state is LinkState.INCOMPATIBLE and link.failure is not None:
            self._bus.publish(Event("feature_negotiation_failed", {
                "type": "feature_negotiation_failed", "mesh": self.mesh.slug,
                **link.failure.close_reason()}))
        if link.state is LinkState.OPEN:
            self.drain.notify()
            self._publish.set()
            self._spawn(self.refresh_peers())
            self._spawn(self.reassert_memberships())
            self._spawn(self.topics.refresh_known())
        if self._on_state is not None:
            self._on_state(self)

    async def reassert_memberships(self) -> None:
        """Subscribe and join again as recorded (both idempotent at the broker); one the
        broker refuses is logged and the rest still go."""
        if self.memberships is None:
            return
        slug = self.mesh.slug
        frames: list[dict[str, Any]] = [{"type": "subscribe", "topic": t}
                                        for t in self.memberships.topics(slug)]
        for group, role in self.memberships.groups(slug).items():
            frames.append({"type": "join_group", "group": group}
                          | ({} if role is None else {"role": role}))
        for frame in frames:
            try:
                await self.link.request(frame)
            except (BrokerUnavailable, TimeoutError):
                raise
            except ClaudemeshError as exc:
                log.warning("membership_not_reasserted", extra={
                    "mesh": slug, "frame": frame, "code": exc.code, "detail": exc.detail})

    # -- the directory -----------------------------------------------------------------

    async def refresh_peers(self) -> list[dict[str, Any]]:
        """``list_peers`` from the broker; the directory and ``inbox.db`` follow it.

        Raises:
            BrokerUnavailable: the link is down (never an empty list that reads as
                "nobody online").
        """
        try:
            peers = (await self.link.request({"type": "list_peers"})).data.get("peers")
        except BrokerUnavailable:
            raise
        except ClaudemeshError as exc:
            raise BrokerUnavailable(f"the broker did not list peers: {exc.code}") from exc
        if not isinstance(peers, list):
            raise BrokerUnavailable("the broker did not list peers: no peers in its answer")
        valid = [p for p in peers if isinstance(p, dict) and isinstance(p.get("pubkey"), str)
                 and isinstance(p.get("display_name"), str)]
        self._directory.replace(self.mesh.slug, (Peer(p["pubkey"], p["display_name"])
                                                 for p in valid))
        now = self._clock()
        try:
            await self._inbox.run(lambda conn: InboxStore(conn).replace_peers(
                self.mesh.slug, valid, now), durable=False)  # refreshed on every connect
        except ClaudemeshError:
            log.exception("peer_directory_save_failed", extra={"mesh": self.mesh.slug})
        return valid

    async def _save_peer(self, peer: dict[str, Any]) -> None:
        now = self._clock()
        with contextlib.suppress(ClaudemeshError):
            await self._inbox.run(lambda conn: InboxStore(conn).upsert_peer(
                self.mesh.slug, peer, now), durable=False)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(self._quiet(coro))
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _quiet(self, coro: Any) -> None:
        try:
            await coro
        except (BrokerUnavailable, TimeoutError):
            pass  # the link dropped; the next OPEN refreshes again
        except ClaudemeshError:
            log.exception("mesh_side_task_failed", extra={"mesh": self.mesh.slug})


class Meshes:
    """The runtimes of every joined mesh."""

    def __init__(self, runtimes: list[MeshRuntime]) -> None:
        self.by_slug = {r.mesh.slug: r for r in runtimes}
        self.all_terminal = asyncio.Event()

    def watch(self, runtime: MeshRuntime) -> None:
        if self.by_slug and all(r.link.state in TERMINAL for r in self.by_slug.values()):
            self.all_terminal.set()

    def start(self) -> None:
        for runtime in self.by_slug.values():
            runtime.start()

    async def settled(self, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until every link's first attempt has an outcome (or the timeout)."""
        started = time.monotonic()
        for runtime in self.by_slug.values():
            remaining = max(0.0, timeout_s - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await runtime.link.settled.wait()

    def incompatible(self) -> list[MeshRuntime]:
        return self.in_state(LinkState.INCOMPATIBLE)

    def in_state(self, state: LinkState) -> list[MeshRuntime]:
        return [r for r in self.by_slug.values() if r.link.state is state]

    def notify(self, slug: str) -> None:
        runtime = self.by_slug.get(slug)
        if runtime is not None:
            runtime.drain.notify()

    def sessions_changed(self) -> None:
        for runtime in self.by_slug.values():
            runtime.sessions_changed()

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.by_slug.values()), return_exceptions=True)
