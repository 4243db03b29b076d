"""The asyncio client: the same methods as :class:`~claudemesh.sdk.Client`, as coroutines.

It speaks the same HTTP/1.1 over ``asyncio.open_unix_connection`` or
``asyncio.open_connection``, through the same sans-I/O :class:`ResponseParser` and
:class:`SseParser`, and sends the same :class:`~claudemesh.sdk.wire.Call`\\ s: only the
waiting differs. No aiohttp: an MCP server or a script gets the SDK without the daemon's
server stack. As in the sync client, topic modules load on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from claudemesh.config import Paths, paths_from_env
from claudemesh.errors import ClaudemeshError, DaemonUnreachable, error_from_wire
from claudemesh.sdk.client import DEFAULT_TIMEOUT_S, IDLE_TIMEOUT_S, READ_SIZE
from claudemesh.sdk.endpoint import Endpoint, check_transport, connection_error, resolve
from claudemesh.sdk.http import (
    END,
    NEED_DATA,
    Head,
    ParserEvent,
    ProtocolError,
    Response,
    ResponseParser,
    build_request,
    decode_body,
    reusable,
)
from claudemesh.sdk.reconnect import RECONNECTABLE, Backoff, EventCursor, events_path
from claudemesh.sdk.sse import SseEvent, SseParser

POOL_MAX: Final = 4  # kept-alive connections waiting for the next request

if TYPE_CHECKING:
    from datetime import datetime

    from claudemesh.sdk.inbox import Event, InboxPage
    from claudemesh.sdk.info import VersionInfo
    from claudemesh.sdk.messages import OutboxItem, SendResult
    from claudemesh.sdk.peers import PeerList
    from claudemesh.sdk.receipts import MessageStatus
    from claudemesh.sdk.search import SearchPage, Thread
    from claudemesh.sdk.sessions import Session
    from claudemesh.sdk.wire import Call

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """The daemon's local API for asyncio code; arguments as :class:`Client`'s."""

    def __init__(self, paths: Paths | None = None, *, transport: str = "uds",
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.paths = paths if paths is not None else paths_from_env(os.environ)
        self.transport = check_transport(transport)
        self.timeout = timeout
        # Kept-alive connections: a long-lived client (an MCP server) saves a connect per
        # request. At most POOL_MAX wait here; concurrent requests open their own.
        self._idle: list[_Connection] = []
        self._idle_loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        """Close the kept-alive connections (event streams close when their loop ends);
        the client stays usable and opens new ones as needed."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.paths.daemon_dir}, transport={self.transport!r})"

    @classmethod
    async def connect(cls, paths: Paths | None = None, *, transport: str = "uds",
                      timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109 - the client's
                      start: bool = True) -> AsyncClient:
        """As :meth:`Client.connect`; starting a daemon runs in a worker thread."""
        from claudemesh.sdk import discovery

        client = cls(paths, transport=transport, timeout=timeout)
        await discovery.ensure_daemon_async(client, start=start)
        return client

    # -- the routes -----------------------------------------------------------------------

    async def version(self) -> VersionInfo:
        from claudemesh.sdk import info

        return await self.run(info.version())

    async def health(self) -> dict[str, Any]:
        from claudemesh.sdk import info

        return await self.run(info.health())

    async def metrics(self) -> str:
        from claudemesh.sdk import info

        return await self.run(info.metrics())

    async def openapi(self) -> dict[str, Any]:
        from claudemesh.sdk import info

        return await self.run(info.openapi())

    async def send(self, to: str, message: str, *, mesh: str | None = None,
                   priority: str = "next", client_message_id: str | None = None,
                   meta: dict[str, Any] | None = None, reply_to: str | None = None,
                   session: str | None = None, anycast: bool = False,
                   deliver_at: datetime | str | None = None) -> SendResult:
        """As :meth:`Client.send`: the id is minted first, and a retry reuses it."""
        from claudemesh.protocol.ids import new_ulid
        from claudemesh.sdk import messages

        cmid = new_ulid() if client_message_id is None else client_message_id
        call = messages.send(messages.send_body(
            to, message, client_message_id=cmid, mesh=mesh, priority=priority, meta=meta,
            reply_to=reply_to, session=session, anycast=anycast, deliver_at=deliver_at))
        for attempt in range(1, messages.SEND_ATTEMPTS + 1):
            try:
                return await self.run(call)
            except DaemonUnreachable as exc:
                if attempt == messages.SEND_ATTEMPTS:
                    raise messages.send_gave_up(exc, cmid) from exc
                await asyncio.sleep(messages.send_retry_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def outbox(self, *, status: str | None = None, limit: int = 50,
                     client_message_id: str | None = None,
                     purpose: str | None = None) -> list[OutboxItem]:
        from claudemesh.sdk import messages

        return await self.run(messages.outbox(
            status=status, limit=limit, client_message_id=client_message_id, purpose=purpose))

    async def requeue(self, row_id: str, new_client_message_id: str | None = None,
                      deliver_at: datetime | str | None = None) -> dict[str, Any]:
        from claudemesh.sdk import messages

        return await self.run(messages.requeue(row_id, new_client_message_id, deliver_at))

    async def abort(self, row_id: str) -> dict[str, Any]:
        """As :meth:`Client.abort`."""
        from claudemesh.sdk import messages

        return await self.run(messages.abort(row_id))

    async def message_status(self, client_message_id: str) -> MessageStatus:
        from claudemesh.sdk import receipts

        return await self.run(receipts.message_status(client_message_id))

    async def inbox(self, *, session: str | None = None, unread: bool = False,
                    sender: str | None = None, topic: str | None = None,
                    mesh: str | None = None, since: str | None = None, limit: int = 100,
                    cursor: str | None = None, order: str = "desc") -> InboxPage:
        from claudemesh.sdk import inbox

        return await self.run(inbox.inbox(
            session=session, unread=unread, sender=sender, topic=topic, mesh=mesh,
            since=since, limit=limit, cursor=cursor, order=order))

    async def search(self, q: str, *, sent: bool = False, mesh: str | None = None,
                     limit: int = 20, cursor: str | None = None, session: str | None = None,
                     sender: str | None = None, topic: str | None = None) -> SearchPage:
        """As :meth:`Client.search`."""
        from claudemesh.sdk import search

        return await self.run(search.search(q, sent=sent, mesh=mesh, limit=limit,
                                            cursor=cursor, session=session, sender=sender,
                                            topic=topic))

    async def thread(self, message_id: str, *, mesh: str | None = None,
                     limit: int | None = None) -> Thread:
        """As :meth:`Client.thread`."""
        from claudemesh.sdk import search

        return await self.run(search.thread(message_id, mesh=mesh, limit=limit))

    async def mark_seen(self, session: str, *, ids: list[str] | None = None,
                        up_to_seq: int | None = None, path: str = "poll") -> list[int]:
        from claudemesh.sdk import inbox

        return await self.run(inbox.mark_seen(session, ids=ids, up_to_seq=up_to_seq,
                                              path=path))

    async def peers(self, mesh: str | None = None) -> PeerList:
        from claudemesh.sdk import peers

        return await self.run(peers.peers(mesh))

    async def set_profile(self, *, mesh: str | None = None, session: str | None = None,
                          summary: str | None = None, status: str | None = None,
                          visible: bool | None = None, avatar: str | None = None,
                          title: str | None = None, bio: str | None = None,
                          capabilities: Sequence[str] | None = None) -> dict[str, Any]:
        from claudemesh.sdk import peers

        return await self.run(peers.set_profile(
            mesh=mesh, session=session, summary=summary, status=status, visible=visible,
            avatar=avatar, title=title, bio=bio, capabilities=capabilities))

    async def register_session(self, name: str, *, harness: str | None = None,
                               pid: int | None = None, cwd: str | None = None,
                               default: bool = False, lease_s: int | None = None) -> Session:
        from claudemesh.sdk import sessions

        return await self.run(sessions.register_session(
            name, harness=harness, pid=pid, cwd=cwd, default=default, lease_s=lease_s))

    async def sessions(self, *, pid: int | None = None) -> list[Session]:
        from claudemesh.sdk import sessions

        return await self.run(sessions.list_sessions(pid=pid))

    async def session(self, session_id: str) -> Session:
        from claudemesh.sdk import sessions

        return await self.run(sessions.session(session_id))

    async def end_session(self, session_id: str) -> None:
        from claudemesh.sdk import sessions

        await self.run(sessions.end_session(session_id))

    async def heartbeat(self, session_id: str) -> Session:
        from claudemesh.sdk import sessions

        return await self.run(sessions.heartbeat(session_id))

    async def events(self, *, last_event_id: str | int | None = None, reconnect: bool = True,
                     on_reconnect: Callable[[ClaudemeshError | None], None] | None = None,
                     idle_timeout_s: float = IDLE_TIMEOUT_S,
                     session: str | None = None) -> AsyncGenerator[Event, None]:
        """As :meth:`Client.events`: ``async for event in client.events(): ...``."""
        from claudemesh.sdk.inbox import Event

        cursor = EventCursor(last_event_id)
        backoff = Backoff()
        while True:
            failure: ClaudemeshError | None = None
            try:
                stream = await self._open_stream(events_path(session), cursor.headers(),
                                                 idle_timeout_s)
                received = stream.events()
                try:
                    backoff.reset()
                    async for raw in received:
                        event = Event.from_sse(raw)
                        cursor.saw(event)
                        yield event
                finally:
                    await received.aclose()
                    await stream.aclose()
            except RECONNECTABLE as exc:
                if not reconnect:
                    raise
                failure = exc
            if not reconnect:
                return
            if on_reconnect is not None:
                on_reconnect(failure)
            await asyncio.sleep(backoff.next())

    # -- the plumbing ---------------------------------------------------------------------

    async def run(self, call: Call[T]) -> T:
        return call.decode(await self.call(call.method, call.path, call.body))

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> Any:
        resp = await self.request(method, path, body, headers)
        if resp.status >= 400:
            raise error_from_wire(resp.status, resp.body)
        return resp.body

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> Response:
        """One request, on a kept-alive connection when one is idle.

        A kept-alive connection the daemon closed meanwhile (it restarted, or its idle
        timeout passed) fails before any byte of an answer; the request then goes once
        more on a new connection. Every route may be sent twice that way: sends carry
        their ``client_message_id``, and the other writes are idempotent.
        """
        endpoint = resolve(self.paths, self.transport)
        request = build_request(method, path, body=body, keep_alive=True,
                                headers={**endpoint.headers, **(headers or {})})
        conn = self._take_idle()
        while True:
            reused = conn is not None
            try:
                if conn is None:
                    conn, head = await _exchange(endpoint, request, self.timeout)
                else:
                    head = await conn.exchange(request)
                data = b"".join([piece async for piece in conn.body()])
            except (OSError, ProtocolError) as exc:
                answered = conn is not None and conn.answered
                if conn is not None:
                    await conn.aclose()
                if reused and not answered:
                    conn = None  # a stale kept-alive connection: once more, on a new one
                    continue
                raise connection_error(exc, endpoint, self.timeout) from exc
            break
        if reusable(head) and len(self._idle) < POOL_MAX:
            self._idle.append(conn)
        else:
            await conn.aclose()
        return Response(head.status, decode_body(data), head.headers)

    def _take_idle(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        if self._idle_loop is not loop:
            # Connections belong to the loop that made them, which may be closed by now:
            # let them go (a transport closes its socket when it is collected).
            self._idle, self._idle_loop = [], loop
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.writer.close()
        return None

    async def _open_stream(self, path: str, headers: dict[str, str],
                           idle_timeout_s: float) -> _Stream:
        endpoint = resolve(self.paths, self.transport)
        request = build_request("GET", path, headers={
            **endpoint.headers, "Accept": "text/event-stream", **headers})
        try:
            conn, head = await _exchange(endpoint, request, idle_timeout_s)
        except (OSError, ProtocolError) as exc:
            raise connection_error(exc, endpoint, idle_timeout_s, stream=True) from exc
        stream = _Stream(conn, endpoint, idle_timeout_s)
        if head.status >= 400:
            try:
                raise error_from_wire(head.status, decode_body(await stream.rest()))
            finally:
                await stream.aclose()
        return stream


class _Connection:
    """One socket's reader and writer, and the parser of the answer on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = ResponseParser()
        self.timeout = timeout
        self.answered = False  # a byte of the current answer arrived

    async def exchange(self, request: bytes) -> Head:
        """The next request on this kept-alive connection, and its answer's head."""
        self.parser = ResponseParser()
        self.answered = False
        self.writer.write(request)
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()
        head = await self.next()
        if not isinstance(head, Head):
            raise ProtocolError("no head in the answer")
        return head

    async def next(self) -> ParserEvent:
        while True:
            event = self.parser.next_event()
            if event is not NEED_DATA:
                return event
            async with asyncio.timeout(self.timeout):
                data = await self.reader.read(READ_SIZE)
            if data:
                self.answered = True
                self.parser.feed(data)
            else:
                self.parser.eof()

    async def body(self) -> AsyncGenerator[bytes, None]:
        while (event := await self.next()) is not END:
            if isinstance(event, bytes):
                yield event

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # the daemon already closed its end
            await self.writer.wait_closed()


async def _exchange(endpoint: Endpoint, request: bytes,
                    limit_s: float) -> tuple[_Connection, Head]:
    async with asyncio.timeout(limit_s):
        if endpoint.sock is not None:
            reader, writer = await asyncio.open_unix_connection(endpoint.sock)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
    conn = _Connection(reader, writer, limit_s)
    try:
        writer.write(request)
        # An answer sent before the whole request was read (413) is still the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            async with asyncio.timeout(limit_s):
                await writer.drain()
        head = await conn.next()
    except BaseException:
        await conn.aclose()
        raise
    if not isinstance(head, Head):
        await conn.aclose()
        raise ProtocolError("no head in the answer")
    return conn, head


class _Stream:
    """An open event stream: iterate :meth:`events`, then :meth:`aclose` both."""

    def __init__(self, conn: _Connection, endpoint: Endpoint, idle_timeout_s: float) -> None:
        self._conn = conn
        self._endpoint = endpoint
        self._idle = idle_timeout_s

    async def rest(self) -> bytes:
        try:
            return b"".join([piece async for piece in self._conn.body()])
        except (OSError, ProtocolError) as exc:
            raise connection_error(exc, self._endpoint, self._idle, stream=True) from exc

    async def events(self) -> AsyncGenerator[SseEvent, None]:
        sse = SseParser()
        try:
            async with contextlib.aclosing(self._conn.body()) as pieces:
                async for piece in pieces:
                    for event in sse.feed(piece):
                        yield event
            for event in sse.eof():
                yield event
        except (OSError, ProtocolError) as exc:
            raise connection_error(exc, self._endpoint, self._idle, stream=True) from exc

    async def aclose(self) -> None:
        await self._conn.aclose()
