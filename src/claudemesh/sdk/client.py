"""The synchronous client: stdlib sockets only, light enough for ``claudemesh send``.

One request per connection (``Connection: close``), over the Unix socket or loopback TCP
(:mod:`~claudemesh.sdk.endpoint`), parsed by the sans-I/O :class:`ResponseParser`. Error
answers become the typed errors of :mod:`claudemesh.errors` through
:func:`~claudemesh.errors.error_from_wire`, the client's single translation point.

Each topic module (``info``, ``messages``, ``receipts``, ``inbox``, ``peers``,
``sessions``) is imported inside the methods that use it: its frozen dataclasses cost
about 1.5 ms each to create, and ``claudemesh send`` or a hook should pay only for the
ones it reads (bench/cli_send.py); the SSE parser and the resume policy load with
``events()``. The I/O-free halves of every method (the request, the answer's model, the
retry and resume policy) live in those modules and are shared with
:class:`~claudemesh.sdk.aio.AsyncClient`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from claudemesh.config import Paths, paths_from_env
from claudemesh.errors import ClaudemeshError, DaemonUnreachable, error_from_wire
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
)

if TYPE_CHECKING:
    from datetime import datetime

    from claudemesh.sdk.inbox import Event, InboxPage
    from claudemesh.sdk.info import VersionInfo
    from claudemesh.sdk.messages import OutboxItem, SendResult
    from claudemesh.sdk.peers import PeerList
    from claudemesh.sdk.receipts import MessageStatus
    from claudemesh.sdk.search import SearchPage, Thread
    from claudemesh.sdk.sessions import Session
    from claudemesh.sdk.sse import SseEvent
    from claudemesh.sdk.wire import Call

__all__ = ["DEFAULT_TIMEOUT_S", "IDLE_TIMEOUT_S", "Client", "Response"]

T = TypeVar("T")
DEFAULT_TIMEOUT_S: Final = 5.0
IDLE_TIMEOUT_S: Final = 60.0  # a stream's silence limit; the daemon sends keepalives every 15 s
READ_SIZE: Final = 65536


class Client:
    """The daemon's local API, one method per route (docs/api.md, docs/sdk.md).

    Args:
        paths: where the daemon lives; default: ``CLAUDEMESH_CONFIG_DIR`` and
            ``CLAUDEMESH_DAEMON_DIR`` from the environment, as the CLI reads them.
        transport: ``uds`` (the Unix socket) or ``tcp`` (loopback, bearer token).
        timeout: seconds each socket operation may take.
    """

    def __init__(self, paths: Paths | None = None, *, transport: str = "uds",
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.paths = paths if paths is not None else paths_from_env(os.environ)
        self.transport = check_transport(transport)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.paths.daemon_dir}, transport={self.transport!r})"

    @classmethod
    def connect(cls, paths: Paths | None = None, *, transport: str = "uds",
                timeout: float = DEFAULT_TIMEOUT_S, start: bool = True) -> Client:
        """A client whose daemon answers, as ``claudemesh send`` finds one.

        Probes ``/v1/version``; when no daemon answers and ``start`` is true, waits for
        an installed service or starts a daemon (:mod:`~claudemesh.sdk.discovery`).

        Raises:
            DaemonUnreachable: none answers (and ``start`` is false, or starting failed),
                or the one that answers speaks another API version.
        """
        from claudemesh.sdk import discovery

        client = cls(paths, transport=transport, timeout=timeout)
        discovery.ensure_daemon(client, start=start)
        return client

    def close(self) -> None:
        """Nothing to release: each request has a connection of its own (the counterpart
        of :meth:`AsyncClient.close`, which keeps connections alive)."""

    # -- the routes -----------------------------------------------------------------------

    def version(self) -> VersionInfo:
        from claudemesh.sdk import info

        return self.run(info.version())

    def health(self) -> dict[str, Any]:
        from claudemesh.sdk import info

        return self.run(info.health())

    def metrics(self) -> str:
        """``/v1/metrics``, Prometheus text."""
        from claudemesh.sdk import info

        return self.run(info.metrics())

    def openapi(self) -> dict[str, Any]:
        from claudemesh.sdk import info

        return self.run(info.openapi())

    def send(self, to: str, message: str, *, mesh: str | None = None, priority: str = "next",
             client_message_id: str | None = None, meta: dict[str, Any] | None = None,
             reply_to: str | None = None, session: str | None = None,
             anycast: bool = False, deliver_at: datetime | str | None = None) -> SendResult:
        """Queue ``message`` for ``to``; answered once it is durable in the outbox.

        The ``client_message_id`` is minted before the first attempt, and a timed-out
        or broken attempt is repeated with it, so this never sends twice. ``deliver_at``
        (an aware ``datetime`` or an ISO 8601 string with a zone) holds it in the outbox
        until then: the result's ``status`` is ``scheduled`` and ``deliver_at`` the time.

        Raises:
            IdempotencyKeyReused: the id belongs to a different message (409).
            InvalidRequest: a naive ``datetime``, or a malformed or over-a-year-out time.
            DaemonUnreachable: every attempt failed; the message may still be queued
                under ``fields["client_message_id"]``.
        """
        from claudemesh.protocol.ids import new_ulid
        from claudemesh.sdk import messages

        cmid = new_ulid() if client_message_id is None else client_message_id
        call = messages.send(messages.send_body(
            to, message, client_message_id=cmid, mesh=mesh, priority=priority, meta=meta,
            reply_to=reply_to, session=session, anycast=anycast, deliver_at=deliver_at))
        for attempt in range(1, messages.SEND_ATTEMPTS + 1):
            try:
                return self.run(call)
            except DaemonUnreachable as exc:
                if attempt == messages.SEND_ATTEMPTS:
                    raise messages.send_gave_up(exc, cmid) from exc
                time.sleep(messages.send_retry_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def outbox(self, *, status: str | None = None, limit: int = 50,
               client_message_id: str | None = None,
               purpose: str | None = None) -> list[OutboxItem]:
        from claudemesh.sdk import messages

        return self.run(messages.outbox(status=status, limit=limit,
                                        client_message_id=client_message_id, purpose=purpose))

    def requeue(self, row_id: str, new_client_message_id: str | None = None,
                deliver_at: datetime | str | None = None) -> dict[str, Any]:
        """Retire a row and queue a copy; ``deliver_at`` reschedules it (default: the old
        row's time, if any)."""
        from claudemesh.sdk import messages

        return self.run(messages.requeue(row_id, new_client_message_id, deliver_at))

    def abort(self, row_id: str) -> dict[str, Any]:
        """Cancel a scheduled, pending or dead row for good (no copy is queued)."""
        from claudemesh.sdk import messages

        return self.run(messages.abort(row_id))

    def message_status(self, client_message_id: str) -> MessageStatus:
        from claudemesh.sdk import receipts

        return self.run(receipts.message_status(client_message_id))

    def inbox(self, *, session: str | None = None, unread: bool = False,
              sender: str | None = None, topic: str | None = None, mesh: str | None = None,
              since: str | None = None, limit: int = 100, cursor: str | None = None,
              order: str = "desc") -> InboxPage:
        from claudemesh.sdk import inbox

        return self.run(inbox.inbox(session=session, unread=unread, sender=sender, topic=topic,
                                    mesh=mesh, since=since, limit=limit, cursor=cursor,
                                    order=order))

    def search(self, q: str, *, sent: bool = False, mesh: str | None = None,
               limit: int = 20, cursor: str | None = None, session: str | None = None,
               sender: str | None = None, topic: str | None = None) -> SearchPage:
        """Full-text search of what arrived (or, with ``sent``, of what was sent), best
        match first, each hit with a ``highlight``; ``next_cursor`` pages on.

        ``q`` is words: ``"a phrase"``, ``prefix*``, ``AND``/``OR``/``NOT``, ``NEAR(a b, 5)``.
        ``session``, ``sender`` (a name or pubkey) and ``topic`` narrow a received search.

        Raises:
            InvalidRequest: a malformed ``q`` (``detail`` starts ``q:``), or a received-only
                filter with ``sent=True``.
            UnknownMesh: ``mesh`` is not joined.
        """
        from claudemesh.sdk import search

        return self.run(search.search(q, sent=sent, mesh=mesh, limit=limit, cursor=cursor,
                                      session=session, sender=sender, topic=topic))

    def thread(self, message_id: str, *, mesh: str | None = None,
               limit: int | None = None) -> Thread:
        """The whole thread holding ``message_id`` (a ``broker_message_id``, inbox ``id``
        or ``client_message_id``), oldest first, received and sent, DMs and topics.

        Raises:
            MessageNotFound: no message received or sent here has that id.
        """
        from claudemesh.sdk import search

        return self.run(search.thread(message_id, mesh=mesh, limit=limit))

    def mark_seen(self, session: str, *, ids: list[str] | None = None,
                  up_to_seq: int | None = None, path: str = "poll") -> list[int]:
        from claudemesh.sdk import inbox

        return self.run(inbox.mark_seen(session, ids=ids, up_to_seq=up_to_seq, path=path))

    def peers(self, mesh: str | None = None) -> PeerList:
        from claudemesh.sdk import peers

        return self.run(peers.peers(mesh))

    def set_profile(self, *, mesh: str | None = None, session: str | None = None,
                    summary: str | None = None, status: str | None = None,
                    visible: bool | None = None, avatar: str | None = None,
                    title: str | None = None, bio: str | None = None,
                    capabilities: Sequence[str] | None = None) -> dict[str, Any]:
        from claudemesh.sdk import peers

        return self.run(peers.set_profile(
            mesh=mesh, session=session, summary=summary, status=status, visible=visible,
            avatar=avatar, title=title, bio=bio, capabilities=capabilities))

    def register_session(self, name: str, *, harness: str | None = None,
                         pid: int | None = None, cwd: str | None = None,
                         default: bool = False, lease_s: int | None = None) -> Session:
        from claudemesh.sdk import sessions

        return self.run(sessions.register_session(name, harness=harness, pid=pid, cwd=cwd,
                                                  default=default, lease_s=lease_s))

    def sessions(self, *, pid: int | None = None) -> list[Session]:
        from claudemesh.sdk import sessions

        return self.run(sessions.list_sessions(pid=pid))

    def session(self, session_id: str) -> Session:
        from claudemesh.sdk import sessions

        return self.run(sessions.session(session_id))

    def end_session(self, session_id: str) -> None:
        from claudemesh.sdk import sessions

        self.run(sessions.end_session(session_id))

    def heartbeat(self, session_id: str) -> Session:
        from claudemesh.sdk import sessions

        return self.run(sessions.heartbeat(session_id))

    def events(self, *, last_event_id: str | int | None = None, reconnect: bool = True,
               on_reconnect: Callable[[ClaudemeshError | None], None] | None = None,
               idle_timeout_s: float = IDLE_TIMEOUT_S,
               session: str | None = None) -> Generator[Event, None, None]:
        """``/v1/events`` as an iterator of :class:`~claudemesh.sdk.Event`.

        After a disconnect (the daemon restarted, the stream broke or went silent for
        ``idle_timeout_s``) it reconnects with ``Last-Event-ID`` set to the last message
        id it yielded, waiting 0.2 s doubling to 5 s between attempts: the daemon replays
        what was stored meanwhile, so no message is lost or repeated. ``on_reconnect`` is
        called before each wait with the error (None when the stream simply ended).
        With ``reconnect=False`` it ends with the stream and raises a broken one's error.
        ``session`` (an id or a name) keeps only the messages for that session.
        """
        from claudemesh.sdk.inbox import Event
        from claudemesh.sdk.reconnect import RECONNECTABLE, Backoff, EventCursor, events_path

        cursor = EventCursor(last_event_id)
        backoff = Backoff()
        while True:
            failure: ClaudemeshError | None = None
            try:
                with self._open_stream(events_path(session), cursor.headers(),
                                       idle_timeout_s) as st:
                    backoff.reset()
                    for raw in st:
                        event = Event.from_sse(raw)
                        cursor.saw(event)
                        yield event
            except RECONNECTABLE as exc:
                if not reconnect:
                    raise
                failure = exc
            if not reconnect:
                return
            if on_reconnect is not None:
                on_reconnect(failure)
            time.sleep(backoff.next())

    # -- the plumbing ---------------------------------------------------------------------

    def run(self, call: Call[T]) -> T:
        """Send one :class:`~claudemesh.sdk.wire.Call` and decode its answer."""
        return call.decode(self.call(call.method, call.path, call.body))

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        """Like :meth:`request`, but an error status raises its typed error."""
        resp = self.request(method, path, body, headers)
        if resp.status >= 400:
            raise error_from_wire(resp.status, resp.body)
        return resp.body

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Response:
        """One request; any HTTP status comes back as a :class:`Response`.

        Raises:
            DaemonUnreachable: no daemon answered (no socket, refused, broken answer).
            DaemonTimeout: it did not answer within the timeout.
        """
        endpoint = resolve(self.paths, self.transport)
        try:
            sock, parser, head = _exchange(endpoint, build_request(
                method, path, body=body, headers={**endpoint.headers, **(headers or {})}),
                self.timeout)
            with sock:
                data = b"".join(_body(sock, parser))
        except (OSError, ProtocolError) as exc:
            raise connection_error(exc, endpoint, self.timeout) from exc
        return Response(head.status, decode_body(data), head.headers)

    def _open_stream(self, path: str, headers: dict[str, str],
                     idle_timeout_s: float) -> _Stream:
        endpoint = resolve(self.paths, self.transport)
        request = build_request("GET", path, headers={
            **endpoint.headers, "Accept": "text/event-stream", **headers})
        try:
            sock, parser, head = _exchange(endpoint, request, idle_timeout_s)
        except (OSError, ProtocolError) as exc:
            raise connection_error(exc, endpoint, idle_timeout_s, stream=True) from exc
        stream = _Stream(sock, parser, endpoint, idle_timeout_s)
        if head.status >= 400:
            with stream:
                raise error_from_wire(head.status, decode_body(stream.rest()))
        return stream


class _Stream:
    """An open event stream: iterate for its events; closing it closes the socket."""

    def __init__(self, sock: socket.socket, parser: ResponseParser, endpoint: Endpoint,
                 idle_timeout_s: float) -> None:
        self._sock = sock
        self._parser = parser
        self._endpoint = endpoint
        self._idle = idle_timeout_s

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *_: object) -> None:
        self._sock.close()

    def rest(self) -> bytes:
        try:
            return b"".join(_body(self._sock, self._parser))
        except (OSError, ProtocolError) as exc:
            raise connection_error(exc, self._endpoint, self._idle, stream=True) from exc

    def __iter__(self) -> Iterator[SseEvent]:
        from claudemesh.sdk.sse import SseParser

        sse = SseParser()
        try:
            for piece in _body(self._sock, self._parser):
                yield from sse.feed(piece)
            yield from sse.eof()
        except (OSError, ProtocolError) as exc:
            raise connection_error(exc, self._endpoint, self._idle, stream=True) from exc


def _connect(endpoint: Endpoint, timeout: float) -> socket.socket:
    if endpoint.sock is None:
        return socket.create_connection(("127.0.0.1", endpoint.port or 0), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(endpoint.sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _exchange(endpoint: Endpoint, request: bytes,
              timeout: float) -> tuple[socket.socket, ResponseParser, Head]:
    """Connect, send ``request``, read the answer's head."""
    sock = _connect(endpoint, timeout)
    try:
        # An answer sent before the whole request was read (413) is still the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        parser = ResponseParser()
        head = _next(sock, parser)
    except BaseException:
        sock.close()
        raise
    if not isinstance(head, Head):
        sock.close()
        raise ProtocolError("no head in the answer")
    return sock, parser, head


def _next(sock: socket.socket, parser: ResponseParser) -> ParserEvent:
    while True:
        event = parser.next_event()
        if event is not NEED_DATA:
            return event
        data = sock.recv(READ_SIZE)
        if data:
            parser.feed(data)
        else:
            parser.eof()


def _body(sock: socket.socket, parser: ResponseParser) -> Iterator[bytes]:
    while (event := _next(sock, parser)) is not END:
        if isinstance(event, bytes):
            yield event
