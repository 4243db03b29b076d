"""``GET /v1/events``: Server-Sent Events (daemon-spec §5.4, DESIGN §5.9).

Events: ``message`` (its ``id:`` is the inbox ``seq``, its data the inbox item),
``peer_join``, ``peer_leave``, ``broker_status``, ``feature_negotiation_failed``. A comment
line every 15 s keeps proxies and clients from timing out. With ``Last-Event-ID`` (header,
or the ``last_event_id`` query parameter for clients that cannot set headers), the stream
first replays every message stored after that id, then goes live; it subscribes before
replaying and skips live messages already replayed, so nothing falls in the gap.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from typing import Final

from aiohttp import web

from claudemesh.daemon.events import Event
from claudemesh.daemon.inbound import inbox_item_view
from claudemesh.daemon.ipc.context import CONTEXT, iso_ms
from claudemesh.daemon.store.inbox import InboxItem, InboxStore
from claudemesh.errors import InvalidRequest

__all__ = ["KEEPALIVE_S", "format_event", "get_events"]

KEEPALIVE_S: Final = 15.0
GONE_CHECK_S: Final = 1.0  # how soon a departed client's stream is noticed
REPLAY_PAGE: Final = 500


def format_event(event: Event) -> bytes:
    lines = [] if event.id is None else [f"id: {event.id}"]
    lines += [f"event: {event.kind}", "data: " + json.dumps(event.data, ensure_ascii=False)]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _last_event_id(request: web.Request) -> int | None:
    text = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        raise InvalidRequest("Last-Event-ID must be a message event id (an integer)")
    return int(text)


def _replay(conn: sqlite3.Connection, *, after: int) -> list[InboxItem]:
    return InboxStore(conn).after(after, limit=REPLAY_PAGE)


async def get_events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    last_id = _last_event_id(request)
    subscription = ctx.bus.subscribe()  # 429 too_many_streams past the cap
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(b": connected\n\n")
        replayed = last_id
        while replayed is not None:
            rows = await ctx.inbox.run(functools.partial(_replay, after=replayed))
            for item in rows:
                await response.write(format_event(Event("message", inbox_item_view(
                    item, iso_ms), id=item.seq)))
                replayed = item.seq
            if len(rows) < REPLAY_PAGE:
                break
        quiet_s = 0.0
        while True:
            try:
                event = await asyncio.wait_for(subscription.queue.get(), GONE_CHECK_S)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break  # the client left: free its slot now, not at the next write
                quiet_s += GONE_CHECK_S
                if quiet_s >= KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")
                    quiet_s = 0.0
                continue
            quiet_s = 0.0
            if event is None:
                break
            if event.kind == "message" and replayed is not None and (event.id or 0) <= replayed:
                continue
            await response.write(format_event(event))
    except (ConnectionError, RuntimeError):
        pass  # the client went away
    finally:
        subscription.close()
    return response
