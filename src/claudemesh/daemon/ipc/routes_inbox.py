"""``GET /v1/inbox``: received messages, filtered and paged by a cursor (DESIGN §4).

The cursor is the last row's ``seq``. Rows are never renumbered and new ones get higher
numbers, so walking pages (newest first by default, or ``order=asc``) never skips or
repeats a row, even while messages keep arriving.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from aiohttp import web

from claudemesh.clock import iso_ms
from claudemesh.daemon.inbound import inbox_item_view
from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply
from claudemesh.daemon.store.inbox import InboxFilter, InboxStore
from claudemesh.errors import InvalidRequest

__all__ = ["get_inbox", "parse_inbox_query"]

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
_PARAMS: Final = frozenset({"since", "from", "topic", "mesh", "limit", "cursor", "order"})


def _since_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest("since must be an ISO 8601 time, e.g. 2026-11-26T15:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidRequest("since needs a time zone (e.g. a trailing Z)")
    return int(moment.timestamp() * 1000)


def _int(name: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}")
    return int(text)


def parse_inbox_query(ctx: DaemonContext, query: Any) -> InboxFilter:
    unknown = set(query) - _PARAMS
    if unknown:
        raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
    mesh = query.get("mesh") or None
    if mesh is not None:
        ctx.pick_mesh(mesh)  # 422 unknown_mesh
    topic = query.get("topic") or None
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc")
    return InboxFilter(
        mesh=mesh, sender=query.get("from") or None,
        topic=None if topic is None else topic.removeprefix("#"),
        since_ms=None if not query.get("since") else _since_ms(query["since"]),
        limit=_int("limit", query.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT),
        cursor=None if not query.get("cursor") else _int("cursor", query["cursor"], 0, 2**62),
        ascending=order == "asc")


async def get_inbox(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query = parse_inbox_query(ctx, request.query)
    items = await ctx.inbox.run(lambda conn: InboxStore(conn).query(query))
    next_cursor = str(items[-1].seq) if len(items) == query.limit else None
    return json_reply({"items": [inbox_item_view(i, iso_ms) for i in items],
                       "next_cursor": next_cursor})
