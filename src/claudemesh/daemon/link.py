"""One broker WebSocket per joined mesh: hello, feature check, heartbeats, reconnects.

A driver over :mod:`.link_rules`: the state lives in one attribute whose setter checks the
table, logs ``= <mesh> old -> new`` and reports the change (a ``broker_status`` event).
Requests (``send``, ``list_peers``, ``set_profile``) are matched to answers by ``req_id``;
when the connection drops, every request waiting on it fails with BrokerUnavailable, so
callers never hang. Pushes and presence events go to the callbacks the mesh runtime gives.
When the broker offers ``frame_batch``, the link asks for it (so the broker may batch what
it sends) and writes its own frames through a :class:`~claudemesh.cork.FrameCork`.
Heartbeats are websockets' own: a ping every 30 s, and 45 s more without a pong (75 s of
silence) cuts the connection, which then reconnects (DESIGN §5.8); so do 75 s in which the
bytes sent stay unacknowledged (:mod:`claudemesh.liveness`), which the keepalive
cannot see behind a full send buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from claudemesh import __version__
from claudemesh.clock import now_ms
from claudemesh.config import MeshConfig
from claudemesh.cork import FrameCork
from claudemesh.crypto import MemberKey
from claudemesh.daemon.link_rules import (
    TERMINAL,
    CloseVerdict,
    LinkState,
    backoff_delays,
    check_move,
    classify_close,
)
from claudemesh.errors import BrokerRejected, BrokerUnavailable, BrokerUntrusted, error_from_frame
from claudemesh.liveness import bound_stalls
from claudemesh.protocol.batch import unbatch
from claudemesh.protocol.close import CloseCode
from claudemesh.protocol.features import Negotiated, NegotiationFailure
from claudemesh.protocol.frames import FrameError
from claudemesh.protocol.handshake import (
    Incompatible,
    Refused,
    batch_request,
    hello_frame,
    read_hello_answer,
)
from claudemesh.protocol.replies import (
    BrokerReply,
    ErrorReply,
    EventReply,
    Result,
    SendResult,
    parse_reply,
)
from claudemesh.protocol.strictjson import JsonError, dumps, loads_object
from claudemesh.sending import with_req_id
from claudemesh.tls import check_pin, ssl_for

__all__ = ["BrokerLink", "LinkTimings"]

log = logging.getLogger(__name__)

MAX_FRAME_BYTES: Final = 2 * 1024 * 1024
MAX_BATCH_FRAMES: Final = 1024  # what this daemon reads in one batch frame


@dataclass(frozen=True, slots=True)
class LinkTimings:
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 45.0  # 30 + 45 = 75 s of silence before the cut
    open_timeout_s: float = 10.0
    hello_timeout_s: float = 10.0
    request_timeout_s: float = 30.0


PushHandler = Callable[[dict[str, Any]], Awaitable[None]]
EventHandler = Callable[[EventReply], None]
StateHandler = Callable[["BrokerLink"], None]


class BrokerLink:
    def __init__(self, mesh: MeshConfig, *, on_push: PushHandler, on_event: EventHandler,
                 on_state: StateHandler, timings: LinkTimings | None = None,
                 rng: random.Random | None = None) -> None:
        self.mesh = mesh
        self.timings = timings or LinkTimings()
        self._on_push, self._on_event, self._on_state = on_push, on_event, on_state
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._state = LinkState.DISCONNECTED
        self.negotiated: Negotiated | None = None
        self.failure: NegotiationFailure | None = None
        self.broker_version: str | None = None
        self.session_id: str | None = None
        self.last_error: str | None = None
        self.clock_skew_ms: int | None = None  # broker clock - ours, at the last hello_ack
        self.opened_at: float | None = None
        self._ws: ClientConnection | None = None
        self._cork: FrameCork | None = None  # this connection's, when frame_batch is on
        self._pending: dict[str, asyncio.Future[BrokerReply]] = {}
        self._ids = itertools.count(1)
        self._url_index = 0
        self._open = asyncio.Event()
        self.settled = asyncio.Event()  # the first attempt has an outcome
        self.connects = 0  # connection attempts: reconnects are connects - 1

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    def _move(self, new: LinkState) -> None:
        old = self._state
        check_move(old, new)
        self._state = new
        log.debug("= %s %s -> %s", self.mesh.slug, old, new)
        if new in (LinkState.OPEN, LinkState.INCOMPATIBLE, LinkState.REJECTED,
                   LinkState.UNTRUSTED) or (
                old is LinkState.OPEN):
            log.info("broker_link_%s", new, extra={"mesh": self.mesh.slug,
                                                   "error": self.last_error})
        if new is not LinkState.CONNECTING and new is not LinkState.NEGOTIATING:
            self.settled.set()
        self._on_state(self)

    @property
    def is_open(self) -> bool:
        return self._state is LinkState.OPEN

    async def wait_open(self) -> None:
        await self._open.wait()

    # -- the reconnect loop ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The broker this link uses now (failover moves it along ``mesh.urls``)."""
        return self.mesh.urls[self._url_index]

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until a terminal state or stop().

        Failover (issue 6): after a failed attempt the next URL is tried at once; the
        backoff delay is paid only when a whole round of URLs has failed in a row.
        """
        delays = backoff_delays(self._rng)
        failures = 0
        try:
            while self._state not in TERMINAL:
                self._move(LinkState.CONNECTING)
                self.connects += 1
                opened = await self._session()
                if self._state in TERMINAL:
                    return
                if opened:
                    delays = backoff_delays(self._rng)
                    failures = 0
                else:
                    failures += 1
                    self._url_index = (self._url_index + 1) % len(self.mesh.urls)
                self._move(LinkState.BACKOFF)
                round_failed = failures > 0 and failures % len(self.mesh.urls) == 0
                await asyncio.sleep(next(delays) if opened or round_failed else 0.05)
        finally:
            if self._state not in TERMINAL:  # stopped: keep the final state visible
                self._move(LinkState.CLOSED)

    async def _session(self) -> bool:
        """One connection, from connect to close. Returns True if it reached OPEN."""
        t, url, m = self.timings, self.url, self.mesh
        try:
            ws = await connect(url, open_timeout=t.open_timeout_s,
                               ping_interval=t.ping_interval_s, ping_timeout=t.ping_timeout_s,
                               close_timeout=2, max_size=MAX_FRAME_BYTES, compression=None,
                               user_agent_header=f"claudemesh-daemon/{__version__}",
                               ssl=ssl_for(url, pin=m.pin, ca_file=m.ca_file))
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.last_error = f"connect to {url} failed: {exc}"
            return False
        try:
            check_pin(ws.transport.get_extra_info("ssl_object"), m.pin, url)
        except BrokerUntrusted as exc:  # before our hello: the key never sees our signature
            self.last_error = f"{exc.code}: {exc.detail}"
            log.error("broker_untrusted", extra={  # noqa: TRY400 - a verdict, not a bug
                "mesh": m.slug, "url": url, **exc.fields})
            with contextlib.suppress(ConnectionClosed):
                await ws.close(CloseCode.POLICY, exc.code)
            self._move(LinkState.UNTRUSTED)
            return False
        self._ws = ws
        bound_stalls(ws.transport, self.timings.ping_interval_s + self.timings.ping_timeout_s)
        try:
            self._move(LinkState.NEGOTIATING)
            if not await self._hello(ws):
                return False
            await self._read(ws)
        except ConnectionClosed:
            return self.opened_at is not None
        else:
            return True
        finally:
            await self._after_close(ws)

    async def _hello(self, ws: ClientConnection) -> bool:
        m = self.mesh
        key = MemberKey.from_secret(m.secret_key)
        await ws.send(dumps(hello_frame(
            mesh_id=m.mesh_id, member_id=m.member_id, pubkey=m.pubkey, sign=key.sign,
            timestamp_ms=now_ms(), client=f"claudemesh-daemon/{__version__}")), text=True)
        try:
            async with asyncio.timeout(self.timings.hello_timeout_s):
                answer = await ws.recv()
            outcome = read_hello_answer(answer)
        except TimeoutError as exc:
            self.last_error = f"no valid hello_ack: {exc}"
            return False
        except FrameError as exc:
            self.last_error = f"no valid hello_ack: {exc.detail}"
            return False
        if isinstance(outcome, Refused):
            refusal = outcome.error
            self.last_error = f"hello refused: {refusal.code}: {refusal.detail}"
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                async with asyncio.timeout(2):
                    await ws.recv()
            if classify_close(ws.close_code, str(refusal.code)) is CloseVerdict.REJECTED:
                self._move(LinkState.REJECTED)
            return False
        if isinstance(outcome, Incompatible):
            await self._refuse(ws, outcome.failure, outcome.ack.features)
            return False
        result, ack = outcome.negotiated, outcome.ack
        self.negotiated = result
        self.broker_version = ack.server_version
        if ack.server_time_ms is not None:  # the ack left up to half a round trip ago
            self.clock_skew_ms = ack.server_time_ms - now_ms()
        self.session_id = ack.session_id
        for warning in result.warnings:
            log.warning("feature_optional_param_invalid", extra={"mesh": m.slug,
                                                                 "detail": warning})
        log.info("features_negotiated", extra={"mesh": m.slug, "features": result.features,
                                               "dedupe_mode": result.dedupe.mode,
                                               "retention_days": result.dedupe.retention_days})
        if result.batch is not None:
            # The answer needs no wait (the read loop ignores it).
            await ws.send(dumps(batch_request()), text=True)
            self._cork = FrameCork(ws, result.batch)
        self.last_error = None
        self.opened_at = time.monotonic()
        self._move(LinkState.OPEN)
        self._open.set()
        return True

    async def _refuse(self, ws: ClientConnection, failure: NegotiationFailure,
                      features: Any) -> None:
        """DESIGN §5.4: error frame with the full close_reason, close 4010, stop retrying."""
        reason = failure.close_reason()
        log.warning("feature_negotiation_failed", extra={"mesh": self.mesh.slug,
                                                         "close_reason": reason,
                                                         "features": features})
        with contextlib.suppress(ConnectionClosed):
            await ws.send(dumps({"type": "error", "code": "feature_negotiation_failed",
                                 "close_reason": reason}), text=True)
            await ws.close(CloseCode.FEATURE_UNAVAILABLE, str(failure.kind))
        self.failure = failure
        self.last_error = f"{failure.kind}: {failure.feature}: {failure.detail}"
        self._move(LinkState.INCOMPATIBLE)  # the runtime reports self.failure from there

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                frame = loads_object(raw)
            except JsonError:
                log.warning("broker_frame_invalid", extra={"mesh": self.mesh.slug})
                continue
            try:
                members = unbatch(frame, MAX_BATCH_FRAMES)
            except FrameError as exc:
                log.warning("broker_frame_invalid", extra={"mesh": self.mesh.slug,
                                                           "detail": exc.detail})
                continue
            for member in members:  # each as if it had come alone, in order
                await self._dispatch(member)

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "push":  # validated by the inbound queue (R-IN-5)
            await self._on_push(frame)
            return
        req_id = frame.get("req_id")
        future = self._pending.pop(req_id, None) if isinstance(req_id, str) else None
        try:
            reply = parse_reply(frame)
        except FrameError as exc:
            log.warning("broker_frame_invalid", extra={"mesh": self.mesh.slug,
                                                       "detail": exc.detail})
            if future is not None and not future.done():
                future.set_exception(BrokerRejected(f"unexpected answer: {exc.detail}"))
            return
        if future is not None:
            if not future.done():
                future.set_result(reply)
        elif isinstance(reply, EventReply):
            self._on_event(reply)
        elif isinstance(reply, ErrorReply):
            log.warning("broker_error_frame", extra={"mesh": self.mesh.slug,
                                                     "code": reply.code})

    async def _after_close(self, ws: ClientConnection) -> None:
        self._open.clear()
        self._ws = self._cork = None
        self.opened_at = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrokerUnavailable(
                    f"the link to mesh {self.mesh.slug!r} dropped before the answer"))
        self._pending.clear()
        code = ws.close_code
        if self._state is LinkState.OPEN:
            self.last_error = f"closed {code} {ws.close_reason or ''}".strip()
            if classify_close(code) is CloseVerdict.REJECTED:
                self._move(LinkState.REJECTED)

    # -- requests ----------------------------------------------------------------------

    async def request(self, frame: dict[str, Any], *, timeout_s: float | None = None) -> Result:
        """Send a request with a fresh ``req_id``; return the broker's ``result``.

        Raises:
            BrokerUnavailable: the link is not open, or dropped before the answer.
            TimeoutError: no answer within the timeout (the request may have been applied).
            ClaudemeshError: the broker refused it: its error as the typed class
                (:func:`~claudemesh.errors.error_from_frame`), or BrokerRejected for an
                answer that is not a ``result``.
        """
        req_id, future = await self.submit(frame)
        try:
            async with asyncio.timeout(timeout_s or self.timings.request_timeout_s):
                reply = await future
        finally:
            self.forget(req_id)
        if isinstance(reply, Result):
            return reply
        if isinstance(reply, ErrorReply | SendResult):
            raise error_from_frame(reply)
        raise BrokerRejected(f"unexpected answer to {frame.get('type')}: {reply.type}")

    async def submit(self, frame: dict[str, Any] | bytes) -> tuple[
            str, asyncio.Future[BrokerReply]]:
        """Send a frame with a fresh ``req_id``; its future gets the answer (any reply, a
        refusal included), BrokerRejected for an unreadable one, or BrokerUnavailable if
        the link drops first. No timeout: a caller that stops waiting calls :meth:`forget`
        (the drain times a whole batch with one timer). A frame already encoded (the
        drain's sends) gets its ``req_id`` spliced in, not re-encoded.

        Raises:
            BrokerUnavailable: the link is not open, or dropped while sending.
        """
        ws = self._ws
        if ws is None or not self.is_open:
            raise BrokerUnavailable(f"the link to mesh {self.mesh.slug!r} is {self._state}")
        req_id = str(next(self._ids))
        future: asyncio.Future[BrokerReply] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            await self._transmit(ws, with_req_id(frame, req_id) if isinstance(frame, bytes)
                                 else dumps({**frame, "req_id": req_id}))
        except (ConnectionClosed, BrokerUnavailable):
            self._pending.pop(req_id, None)
            if future.done():  # the close already failed it: nobody else will look
                future.exception()
            raise BrokerUnavailable(f"the link to mesh {self.mesh.slug!r} dropped") from None
        return req_id, future

    def forget(self, req_id: str) -> None:
        """Stop matching answers to ``req_id`` (its caller gave up waiting)."""
        self._pending.pop(req_id, None)

    async def send(self, frame: dict[str, Any]) -> bool:
        """Send a frame that has no answer (``client_ack``); False if the link is down."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await self._transmit(ws, dumps(frame))
        except (ConnectionClosed, BrokerUnavailable):
            return False
        return True

    async def _transmit(self, ws: ClientConnection, data: bytes) -> None:
        """Through the cork when there is one (then frames only queue), else at once."""
        cork = self._cork
        if cork is None:
            await ws.send(data, text=True)
        elif not await cork.send(data):
            raise BrokerUnavailable(f"the link to mesh {self.mesh.slug!r} dropped")

    async def close(self) -> None:
        """Close the connection with 1001 (going away); run() then ends in CLOSED."""
        if self._cork is not None:
            await self._cork.flush()  # acks queued just before the stop still leave
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.close(CloseCode.GOING_AWAY, "daemon_stopping")
