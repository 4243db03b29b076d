"""One client connection: AWAITING_HELLO -> OPEN -> CLOSED (session_rules.py), and how
its frames are read, checked and answered.

Before hello only ``hello`` and ``join`` are accepted (handshake.py); anything else gets
an error frame ``hello_required``, and a connection that has not said hello within
``hello_timeout_s`` is closed with 4008. A refused hello is answered with an ``error``
frame, then closed with the error's close code (4001 auth, 4002 revoked, 4004 already
connected). Once OPEN, each frame is handled (handlers.py) in its own task, at most
``frames_in_flight`` at once (the read loop waits beyond that, which pushes back on the
client). Frames read before a close get ``CLOSE_GRACE_S`` to finish (a last ack still
lands). Nothing a client sends escapes as an exception: frame errors become ``error``
frames, send errors become ``send_result`` frames with a code, and an unexpected bug is
logged and answered ``internal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from claudemesh.broker.context import BrokerContext
from claudemesh.broker.handlers import HANDLERS
from claudemesh.broker.handshake import authenticate, hello_ack, join_result, redeem
from claudemesh.broker.session_rules import SessionState, check_move
from claudemesh.broker.store.base import Member, Mesh
from claudemesh.cork import FrameCork
from claudemesh.errors import ClaudemeshError, HelloRequired, InternalError
from claudemesh.protocol.batch import unbatch
from claudemesh.protocol.close import CloseCode
from claudemesh.protocol.features import BatchParams
from claudemesh.protocol.frames import (
    ClientFrame,
    FrameError,
    Hello,
    Join,
    decode_frame,
    validate_client_frame,
)
from claudemesh.protocol.ids import new_ulid
from claudemesh.protocol.strictjson import dumps

__all__ = ["BrokerContext", "Session", "SessionState"]

log = logging.getLogger(__name__)

# How long a closed connection's frames in flight may take to finish before they are
# cancelled (a store call waiting on a lock, say); detach waits for them.
CLOSE_GRACE_S: Final = 5.0


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

    def update_member(self, member: Member) -> None:
        """The member's profile changed (set_profile): later frames see the new one."""
        self._member = member

    # -- I/O ---------------------------------------------------------------------------

    async def send(self, frame: dict[str, Any]) -> bool:
        """Send one frame; False when the connection is already closed."""
        return await self._send_encoded(dumps(frame))

    async def send_unsolicited(self, data: bytes) -> bool:
        """An encoded push or event: sent only after hello_ack, whatever woke it up first."""
        await self._greeted.wait()
        return await self._send_encoded(data)

    async def _send_encoded(self, data: bytes) -> bool:
        if self._cork is not None:
            return await self._cork.send(data)
        try:
            await self.ws.send(data, text=True)
        except ConnectionClosed:
            return False
        return True

    async def close(self, code: int, reason: str) -> None:
        if self._cork is not None:
            await self._cork.flush()  # an error frame queued just before must go first
        with contextlib.suppress(ConnectionClosed):
            await self.ws.close(code, reason[:120])

    def cork(self, params: BatchParams) -> None:
        """Batch every frame from now on (``frame_batch``); only the first call counts."""
        if self._cork is None:
            self._cork = FrameCork(self.ws, params)

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
        metrics = self.ctx.metrics
        metrics.connections += 1
        metrics.connections_open += 1
        try:
            async for message in self.ws:
                await self._receive(message)
        except ConnectionClosed:
            pass
        finally:
            metrics.connections_open -= 1
            timer.cancel()
            self._move(SessionState.CLOSED)
            self._greeted.set()  # waiting senders now fail fast on the closed connection
            if self.ws.close_code not in (None, CloseCode.NORMAL, CloseCode.GOING_AWAY):
                log.info("connection_closed", extra={
                    "session": self.session_id, "close_code": self.ws.close_code,
                    "close_reason": self.ws.close_reason,
                    "member_id": None if self._member is None else self._member.id})
            await self._finish_tasks()
            if self._member is not None:
                try:
                    await self.ctx.hub.detach(self, revoked=self.revoked)
                except ClaudemeshError:
                    log.exception("presence_detach_failed", extra={"session": self.session_id})

    async def _finish_tasks(self) -> None:
        """Let the frames read before the close finish, then cancel what is left.

        A client acks and closes at once; cancelled, its last acks were never written
        and the broker pushed those messages again on its next connection.
        """
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_GRACE_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
        handler = HANDLERS[type(frame)]
        try:
            await handler(self, frame)
        except ClaudemeshError as exc:
            await self.error(exc.code, exc.detail, getattr(frame, "req_id", None), **exc.fields)
        except Exception:
            log.exception("frame_handler_failed", extra={"frame_type": type(frame).__name__,
                                                         "session": self.session_id})
            internal = InternalError("the broker failed on this frame; see its log")
            await self.error(internal.code, internal.detail, getattr(frame, "req_id", None))

    # -- before hello (handshake.py) ----------------------------------------------------

    async def _hello(self, frame: Hello) -> None:
        mesh, member = await authenticate(self.ctx, frame)
        self._member, self._mesh = member, mesh
        await self.ctx.hub.attach(self, mesh.connection_policy)
        self._move(SessionState.OPEN)
        log.info("hello_accepted", extra={"session": self.session_id, "mesh_id": mesh.id,
                                          "member_id": member.id, "client": frame.client})
        await self.send(hello_ack(self.session_id, mesh, member, features=self.ctx.features,
                                  settings=self.ctx.settings, now_ms=self.ctx.clock()))
        self._greeted.set()

    async def _join(self, frame: Join) -> None:
        mesh, member = await redeem(self.ctx, frame)
        await self.send(join_result(mesh, member))
        await self.close(CloseCode.NORMAL, "joined")
