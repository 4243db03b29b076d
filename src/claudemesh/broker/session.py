"""One client connection: AWAITING_HELLO -> OPEN -> CLOSED, and what each frame does.

Before hello only ``hello`` and ``join`` are accepted; anything else gets an error frame
``hello_required``, and a connection that has not said hello within ``hello_timeout_s`` is
closed with 4008. A refused hello is answered with an ``error`` frame, then closed with
the error's close code (4001 auth, 4002 revoked, 4004 already connected). Once OPEN, each
frame is handled in its own task, at most ``frames_in_flight`` at once (the read loop
waits beyond that, which pushes back on the client). Nothing a client sends escapes as an
exception: frame errors become ``error`` frames, send errors become ``send_result`` frames
with a code, and an unexpected bug is logged and answered ``internal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from claudemesh import __version__
from claudemesh.broker.accept import (
    accept_input,
    check_send,
    deliveries_for,
    error_result,
    send_result,
)
from claudemesh.broker.hub import Hub
from claudemesh.broker.presence import peer_view
from claudemesh.broker.session_rules import SessionState, check_move
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import AcceptKind, BrokerStore, Member, Mesh, SessionProfile
from claudemesh.clock import now_ms
from claudemesh.cork import FrameCork
from claudemesh.crypto import (
    CryptoFailure,
    hello_statement,
    invite_statement,
    join_statement,
    verify,
)
from claudemesh.errors import (
    AlreadyAuthenticated,
    BadSignature,
    ClaudemeshError,
    HelloRequired,
    InternalError,
    InviteRejected,
    MemberRevoked,
    RateLimited,
    ReplayedNonce,
    StaleTimestamp,
    UnknownMember,
)
from claudemesh.protocol.batch import unbatch
from claudemesh.protocol.close import CloseCode
from claudemesh.protocol.features import FRAME_BATCH, BatchParams
from claudemesh.protocol.frames import (
    ClientAck,
    ClientFrame,
    FeatureNegotiationRequest,
    FrameError,
    Hello,
    Join,
    JoinGroup,
    LeaveGroup,
    ListPeers,
    ListTopics,
    Send,
    SetProfile,
    Subscribe,
    Unsubscribe,
    decode_frame,
    validate_client_frame,
)
from claudemesh.protocol.ids import new_ulid
from claudemesh.protocol.invite import InviteError, decode_invite
from claudemesh.protocol.strictjson import dumps

__all__ = ["BrokerContext", "Session", "SessionState"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BrokerContext:
    store: BrokerStore
    hub: Hub
    settings: BrokerSettings
    features: dict[str, Any]
    batch: BatchParams | None = None  # frame_batch, when this broker advertises it
    clock: Callable[[], int] = now_ms


class Session:
    def __init__(self, ws: ServerConnection, ctx: BrokerContext) -> None:
        self.session_id = new_ulid()
        self.ws = ws
        self.ctx = ctx
        self._state = SessionState.AWAITING_HELLO
        self.connected_at_ms = ctx.clock()
        self.revoked = False
        self._member: Member | None = None
        self._mesh: Mesh | None = None
        self._slots = asyncio.Semaphore(ctx.settings.frames_in_flight)
        self._cork: FrameCork | None = None  # once the client asked for frame_batch
        self._tasks: set[asyncio.Task[None]] = set()
        # Set once hello_ack is out (or the connection is over): pushes and events that
        # another broker's notification triggers early must not overtake hello_ack.
        self._greeted = asyncio.Event()

    @property
    def state(self) -> SessionState:
        return self._state

    def _move(self, new: SessionState) -> None:
        """Every state change goes through here: the table allows it, the log shows it."""
        old = self._state
        check_move(old, new)
        self._state = new
        log.debug("= %s %s -> %s", self.session_id, old, new)

    @property
    def member(self) -> Member:
        assert self._member is not None, "only OPEN sessions have a member"
        return self._member

    @property
    def mesh(self) -> Mesh:
        assert self._mesh is not None, "only OPEN sessions have a mesh"
        return self._mesh

    # -- I/O ---------------------------------------------------------------------------

    async def send(self, frame: dict[str, Any]) -> bool:
        """Send one frame; False when the connection is already closed."""
        if self._cork is not None:
            return await self._cork.send(dumps(frame))
        try:
            await self.ws.send(dumps(frame), text=True)
        except ConnectionClosed:
            return False
        return True

    async def send_unsolicited(self, frame: dict[str, Any]) -> bool:
        """A push or event: sent only after hello_ack, whatever woke it up first."""
        await self._greeted.wait()
        return await self.send(frame)

    async def close(self, code: int, reason: str) -> None:
        if self._cork is not None:
            await self._cork.flush()  # an error frame queued just before must go first
        with contextlib.suppress(ConnectionClosed):
            await self.ws.close(code, reason[:120])

    async def error(self, code: str, detail: str, req_id: str | None = None,
                    **fields: Any) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail, **fields}
        if req_id is not None:
            frame["req_id"] = req_id
        await self.send(frame)

    # -- the read loop -----------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.ctx.settings.hello_timeout_s, self._hello_timeout)
        try:
            async for message in self.ws:
                await self._receive(message)
        except ConnectionClosed:
            pass
        finally:
            timer.cancel()
            self._move(SessionState.CLOSED)
            self._greeted.set()  # waiting senders now fail fast on the closed connection
            if self.ws.close_code not in (None, CloseCode.NORMAL, CloseCode.GOING_AWAY):
                log.info("connection_closed", extra={
                    "session": self.session_id, "close_code": self.ws.close_code,
                    "close_reason": self.ws.close_reason,
                    "member_id": None if self._member is None else self._member.id})
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._member is not None:
                try:
                    await self.ctx.hub.detach(self, revoked=self.revoked)
                except ClaudemeshError:
                    log.exception("presence_detach_failed", extra={"session": self.session_id})

    def _hello_timeout(self) -> None:
        if self.state is SessionState.AWAITING_HELLO:
            task = asyncio.ensure_future(self.close(CloseCode.HELLO_TIMEOUT, "hello_timeout"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _receive(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self.error("binary_frame_unsupported", "frames are JSON text frames")
            return
        limit = self.ctx.settings.frame_soft_limit_bytes
        if len(message) > limit:
            await self.error("frame_too_large", f"frames are limited to {limit} bytes",
                             limit=limit)
            return
        try:
            doc = decode_frame(message)
            batch = self.ctx.batch
            # Without the feature, or before hello, a batch is left whole: unknown_type.
            members = [doc] if batch is None or self.state is not SessionState.OPEN else (
                unbatch(doc, batch.max_frames))
        except FrameError as exc:
            await self._frame_error(exc)
            return
        for member in members:  # each as if it had come alone, in order
            await self._dispatch(member)

    async def _dispatch(self, doc: dict[str, Any]) -> None:
        try:
            # Fields of features this broker leaves out are unknown fields here.
            frame = validate_client_frame(doc, features=self.ctx.features)
        except FrameError as exc:
            await self._frame_error(exc)
            return
        if self.state is SessionState.AWAITING_HELLO:
            await self._before_hello(frame)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(frame))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _frame_error(self, exc: FrameError) -> None:
        """Every ``send`` gets exactly one ``send_result``, malformed ones included."""
        if exc.frame_type == "send" and exc.req_id is not None and self._member is not None:
            await self.send({"type": "send_result", "req_id": exc.req_id, "code": 400,
                             "client_message_id": exc.client_message_id, "error": exc.code,
                             "detail": exc.detail})
            return
        await self.error(exc.code, exc.detail, exc.req_id)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _before_hello(self, frame: ClientFrame) -> None:
        if not isinstance(frame, Hello | Join):
            exc = HelloRequired("send hello (or join) before anything else")
            await self.error(exc.code, exc.detail, getattr(frame, "req_id", None))
            return
        try:
            if isinstance(frame, Hello):
                await self._hello(frame)
            else:
                await self._join(frame)
        except ClaudemeshError as exc:
            log.info("hello_refused", extra={"code": exc.code, "session": self.session_id})
            await self.error(exc.code, exc.detail, **exc.fields)
            await self.close(exc.close_code or CloseCode.POLICY, exc.code)

    async def _handle(self, frame: ClientFrame) -> None:
        handler = _HANDLERS[type(frame)]
        try:
            await handler(self, frame)
        except ClaudemeshError as exc:
            await self.error(exc.code, exc.detail, getattr(frame, "req_id", None), **exc.fields)
        except Exception:
            log.exception("frame_handler_failed", extra={"frame_type": type(frame).__name__,
                                                         "session": self.session_id})
            internal = InternalError("the broker failed on this frame; see its log")
            await self.error(internal.code, internal.detail, getattr(frame, "req_id", None))

    # -- before hello ------------------------------------------------------------------

    def _check_clock(self, timestamp_ms: int) -> int:
        now = self.ctx.clock()
        if abs(now - timestamp_ms) > self.ctx.settings.clock_skew_ms:
            raise StaleTimestamp(f"timestamp is {now - timestamp_ms} ms away from the broker's"
                                 " clock (limit ±60000 ms); check this machine's clock")
        return now

    async def _hello(self, frame: Hello) -> None:
        ctx = self.ctx
        now = self._check_clock(frame.timestamp_ms)
        statement = hello_statement(frame.mesh_id, frame.member_id, frame.pubkey,
                                    frame.timestamp_ms, frame.nonce)
        try:
            verify(frame.pubkey, statement, frame.signature)
        except CryptoFailure:
            raise BadSignature() from None
        mesh = await ctx.store.get_mesh(frame.mesh_id)
        member = None if mesh is None or mesh.id != frame.mesh_id else (
            await ctx.store.get_member(mesh.id, frame.pubkey))
        if mesh is None or member is None or member.id != frame.member_id:
            raise UnknownMember()
        if member.revoked_at is not None:
            raise MemberRevoked()
        expires = now + 2 * ctx.settings.clock_skew_ms
        if not await ctx.store.remember_nonce(frame.pubkey, frame.nonce, expires_at_ms=expires):
            raise ReplayedNonce()
        self._member, self._mesh = member, mesh
        await ctx.hub.attach(self, mesh.connection_policy)
        self._move(SessionState.OPEN)
        log.info("hello_accepted", extra={"session": self.session_id, "mesh_id": mesh.id,
                                          "member_id": member.id, "client": frame.client})
        settings = ctx.settings
        await self.send({
            "type": "hello_ack", "session_id": self.session_id, "mesh_id": mesh.id,
            "mesh_name": mesh.name, "member_id": member.id,
            "display_name": member.display_name, "features": ctx.features,
            "server": {"name": "claudemesh-broker", "version": __version__},
            "heartbeat": {"ping_interval_s": settings.ping_interval_s,
                          "idle_timeout_s": settings.ping_interval_s + settings.ping_timeout_s},
            "limits": {"frame_bytes": settings.frame_soft_limit_bytes,
                       "inline_bytes": settings.inline_bytes},
        })
        self._greeted.set()

    async def _join(self, frame: Join) -> None:
        ctx = self.ctx
        try:
            invite = decode_invite(frame.invite)
        except InviteError as exc:
            raise InviteRejected(str(exc)) from None
        mesh = await ctx.store.get_mesh(invite.mesh_id)
        if mesh is None or mesh.id != invite.mesh_id:
            raise InviteRejected("this broker has no mesh for that invite")
        try:
            verify(mesh.invite_pubkey, invite_statement(
                invite.mesh_id, invite.invite_id, invite.signed_urls, invite.expires_at_ms,
                invite.secret), invite.signature)
        except CryptoFailure:
            raise InviteRejected("the invite's signature does not verify") from None
        now = self._check_clock(frame.timestamp_ms)
        try:
            verify(frame.pubkey, join_statement(mesh.id, invite.invite_id, frame.pubkey,
                                                frame.display_name, frame.timestamp_ms),
                   frame.signature)
        except CryptoFailure:
            raise BadSignature("the join request's signature does not verify") from None
        secret_sha256 = hashlib.sha256(invite.secret.encode("ascii")).hexdigest()
        member = await ctx.store.redeem_invite(
            invite_id=invite.invite_id, mesh_id=mesh.id, secret_sha256=secret_sha256,
            member=Member(new_ulid(now), mesh.id, frame.pubkey, frame.display_name, now, None),
            now_ms=now)
        log.info("member_joined", extra={"mesh_id": mesh.id, "member_id": member.id})
        await self.send({"type": "join_result", "mesh_id": mesh.id, "mesh_name": mesh.name,
                         "member_id": member.id, "display_name": member.display_name,
                         "pubkey": member.pubkey})
        await self.close(CloseCode.NORMAL, "joined")

    # -- once open ---------------------------------------------------------------------

    async def _send_message(self, frame: Send) -> None:
        ctx, member = self.ctx, self.member
        try:
            delay = ctx.hub.rate_delay_s(member)
            if delay > 0:
                raise RateLimited(retry_after_ms=math.ceil(delay * 1000))
            fingerprint = check_send(frame, inline_bytes=ctx.settings.inline_bytes)
            now = ctx.clock()
            request = accept_input(frame, fingerprint, sender=member,
                                   mesh_dedupe_mode=self.mesh.dedupe_mode,
                                   retention_days=self.mesh.dedupe_retention_days,
                                   broker_message_id=new_ulid(now), now_ms=now)
            outcome = await ctx.store.accept(request)
        except ClaudemeshError as exc:
            await self.send(error_result(frame.req_id, frame.client_message_id, exc))
            if isinstance(exc, MemberRevoked):
                self.revoked = True
                await self.close(CloseCode.MEMBER_REVOKED, exc.code)
            return
        await self.send(send_result(frame.req_id, frame.client_message_id, outcome))
        if outcome.kind is AcceptKind.CREATED:
            await ctx.hub.deliver(deliveries_for(frame, request, outcome))

    async def _client_ack(self, frame: ClientAck) -> None:
        ids = [int(d) for d in frame.delivery_ids]
        await self.ctx.store.ack_deliveries(self.member.id, ids, self.ctx.clock())
        self.ctx.hub.acked(self.member, ids)

    async def _negotiate(self, frame: FeatureNegotiationRequest) -> None:
        """Answers with the feature map; a client listing ``frame_batch`` (and so able to
        read batches) gets its frames batched from then on."""
        features = self.ctx.features
        answer: dict[str, Any] = {
            "type": "feature_negotiation_response", "supported": features,
            "missing_required": [f for f in frame.require if f not in features]}
        if frame.req_id is not None:
            answer["req_id"] = frame.req_id
        await self.send(answer)
        batch = self.ctx.batch
        if batch is not None and self._cork is None and FRAME_BATCH in (
                *frame.require, *frame.optional):
            self._cork = FrameCork(self.ws, batch)

    async def _result(self, req_id: str, **data: Any) -> None:
        await self.send({"type": "result", "req_id": req_id, **data})

    async def _subscribe(self, frame: Subscribe) -> None:
        changed = await self.ctx.store.subscribe(self.mesh.id, self.member.id, frame.topic,
                                                 self.ctx.clock())
        await self._result(frame.req_id, topic=frame.topic, subscribed=True, changed=changed)

    async def _unsubscribe(self, frame: Unsubscribe) -> None:
        changed = await self.ctx.store.unsubscribe(self.mesh.id, self.member.id, frame.topic)
        await self._result(frame.req_id, topic=frame.topic, subscribed=False, changed=changed)

    async def _list_topics(self, frame: ListTopics) -> None:
        topics = await self.ctx.store.list_topics(self.mesh.id, self.member.id)
        await self._result(frame.req_id, topics=topics)

    async def _join_group(self, frame: JoinGroup) -> None:
        changed = await self.ctx.store.join_group(self.mesh.id, self.member.id, frame.group,
                                                  self.ctx.clock())
        await self._result(frame.req_id, group=frame.group, member=True, changed=changed)

    async def _leave_group(self, frame: LeaveGroup) -> None:
        changed = await self.ctx.store.leave_group(self.mesh.id, self.member.id, frame.group)
        await self._result(frame.req_id, group=frame.group, member=False, changed=changed)

    async def _list_peers(self, frame: ListPeers) -> None:
        me = self.member
        members = await self.ctx.store.list_members(self.mesh.id)
        online = await self.ctx.hub.online_members(self.mesh.id)
        peers = [peer_view(m, online=m.id in online) for m in members
                 if m.visible or m.id == me.id]
        await self._result(frame.req_id, peers=peers)

    async def _set_profile(self, frame: SetProfile) -> None:
        fields = frame.model_dump(exclude={"type", "req_id", "sessions"}, exclude_none=True)
        if frame.sessions is not None:  # the whole list: [] clears it
            fields["sessions"] = tuple(SessionProfile(e.name, e.summary, e.status, e.harness)
                                       for e in frame.sessions)
        updated = await self.ctx.store.set_profile(self.member.id, fields)
        self._member = updated
        await self.ctx.hub.profile_changed(updated)
        await self._result(frame.req_id, applied=sorted(fields),
                           peer=peer_view(updated, online=True))

    async def _already(self, frame: Hello | Join) -> None:
        raise AlreadyAuthenticated()


_HANDLERS: Final[dict[type[Any], Callable[[Session, Any], Awaitable[None]]]] = {
    Hello: Session._already,
    Join: Session._already,
    FeatureNegotiationRequest: Session._negotiate,
    Send: Session._send_message,
    ClientAck: Session._client_ack,
    Subscribe: Session._subscribe,
    Unsubscribe: Session._unsubscribe,
    ListTopics: Session._list_topics,
    JoinGroup: Session._join_group,
    LeaveGroup: Session._leave_group,
    ListPeers: Session._list_peers,
    SetProfile: Session._set_profile,
}
