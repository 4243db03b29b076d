"""``GET /v1/events``: Server-Sent Events (daemon-spec §5.4, DESIGN §5.9).

Events: ``message`` (its ``id:`` is the inbox ``seq``, its data the inbox item),
``peer_join``, ``peer_leave``, ``broker_status``, ``feature_negotiation_failed``. A comment
line every 15 s keeps proxies and clients from timing out. With ``Last-Event-ID`` (header,
or the ``last_event_id`` query parameter for clients that cannot set headers), the stream
first replays every message stored after that id, then goes live; it subscribes before
replaying and skips live messages already replayed, so nothing falls in the gap.
``session`` (an id or a name) narrows the messages, replayed and live, to those for one
session, and leaves out receipts; link and presence events are unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from typing import Final

from aiohttp import web

from claudemesh.clock import iso_ms
from claudemesh.daemon.events import Event, Subscription
from claudemesh.daemon.inbound import inbox_item_view
from claudemesh.daemon.ipc.context import CONTEXT
from claudemesh.daemon.ipc.requests import ascii_digits
from claudemesh.daemon.ipc.routes_sessions import resolve_session_name
from claudemesh.daemon.store.inbox import InboxFilter, InboxItem, InboxStore
from claudemesh.errors import InvalidRequest
from claudemesh.protocol.strictjson import dumps

__all__ = ["KEEPALIVE_S", "format_event", "get_events"]

KEEPALIVE_S: Final = 15.0
GONE_CHECK_S: Final = 1.0  # how soon a departed client's stream is noticed
REPLAY_PAGE: Final = 500
WRITE_BATCH: Final = 256  # events per write when a burst is queued


def format_event(event: Event) -> bytes:
    head = f"event: {event.kind}\ndata: " if event.id is None else (
        f"id: {event.id}\nevent: {event.kind}\ndata: ")
    return head.encode() + dumps(event.data) + b"\n\n"


def _last_event_id(request: web.Request) -> int | None:
    """The header, else the query parameter; each given one must be an id, and both
    given must agree (as ``Idempotency-Key`` and ``client_message_id`` must)."""
    given = [t for t in (request.headers.get("Last-Event-ID"),
                         request.query.get("last_event_id")) if t]
    for text in given:
        if not ascii_digits(text) or len(text) > 18:
            raise InvalidRequest("Last-Event-ID must be a message event id (an integer)")
    if len({int(t) for t in given}) > 1:
        raise InvalidRequest("the Last-Event-ID header and last_event_id differ")
    return int(given[0]) if given else None


async def _next_burst(subscription: Subscription) -> list[Event | None]:
    """The events already queued (up to ``WRITE_BATCH``), so a burst goes out in one write;
    waits up to ``GONE_CHECK_S`` for the first one (TimeoutError if none came)."""
    queue = subscription.queue
    if queue.empty():
        async with asyncio.timeout(GONE_CHECK_S):
            burst = [await queue.get()]
    else:
        burst = [queue.get_nowait()]
    while burst[-1] is not None and len(burst) < WRITE_BATCH and not queue.empty():
        burst.append(queue.get_nowait())
    return burst


def _replay(conn: sqlite3.Connection, *, after: int, session: str | None) -> list[InboxItem]:
    return InboxStore(conn).query(InboxFilter(cursor=after, limit=REPLAY_PAGE, ascending=True,
                                              session=session))


def _for_session(session: str | None) -> Callable[[Event], bool]:
    """With ``session``, a stream carries only the messages for it (filed for its name or
    for every session) and no receipts (they are about the member's sends, not one
    session's): an agent with ten siblings on one daemon is not woken for theirs. Link
    and presence events go to every stream."""
    if session is None:
        return lambda _event: True

    def keep(event: Event) -> bool:
        if event.kind == "message":
            return event.data.get("session") in (None, session)
        return event.kind != "receipt"

    return keep


async def get_events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    unknown = set(request.query) - {"last_event_id", "session"}
    if unknown:
        raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
    last_id = _last_event_id(request)
    wanted = request.query.get("session") or None
    session = None if wanted is None else await resolve_session_name(ctx, wanted)
    keep = _for_session(session)
    subscription = ctx.bus.subscribe()  # 429 too_many_streams past the cap
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(b": connected\n\n")
        replayed = last_id
        while replayed is not None:
            rows = await ctx.inbox.run(functools.partial(_replay, after=replayed,
                                                         session=session))
            for item in rows:
                await response.write(format_event(Event("message", inbox_item_view(
                    item, iso_ms), id=item.seq)))
                replayed = item.seq
            if len(rows) < REPLAY_PAGE:
                break
        quiet_s = 0.0
        while True:
            try:
                burst = await _next_burst(subscription)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break  # the client left: free its slot now, not at the next write
                quiet_s += GONE_CHECK_S
                if quiet_s >= KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")
                    quiet_s = 0.0
                continue
            quiet_s = 0.0
            chunk = b"".join(format_event(e) for e in burst if e is not None and keep(e) and not (
                e.kind == "message" and replayed is not None and (e.id or 0) <= replayed))
            if chunk:
                await response.write(chunk)
            if burst[-1] is None:
                break
    except (ConnectionError, RuntimeError):
        pass  # the client went away
    finally:
        subscription.close()
    return response
