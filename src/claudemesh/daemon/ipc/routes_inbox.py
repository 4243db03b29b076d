"""``GET /v1/inbox`` and ``POST /v1/inbox/seen``: received messages and read state.

The cursor is the last row's ``seq``. Rows are never renumbered and new ones get higher
numbers, so walking pages (newest first by default, or ``order=asc``) never skips or
repeats a row, even while messages keep arriving. ``session`` narrows the list to the
messages for one session, ``unread=1`` to those it has not marked seen (docs/api.md).
``q`` searches the decrypted bodies (FTS5, best match first, each item with a
``highlight``; the cursor is then an offset), and ``thread`` returns one whole thread
instead (:mod:`.thread`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from aiohttp import web
from pydantic import Field, StringConstraints, model_validator

from claudemesh.clock import iso_ms
from claudemesh.daemon.inbound import inbox_item_view
from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import (
    StrictModel,
    ascii_digits,
    parse_json_object,
    validate,
)
from claudemesh.daemon.ipc.routes_sessions import resolve_session_name
from claudemesh.daemon.ipc.thread import thread_view
from claudemesh.daemon.store.fts_query import FtsQueryError
from claudemesh.daemon.store.inbox import InboxFilter, InboxStore
from claudemesh.daemon.store.readstate import MAX_MARK, ReadState
from claudemesh.daemon.store.search import search_inbox
from claudemesh.errors import InvalidRequest
from claudemesh.protocol.ids import is_valid_client_message_id

__all__ = ["QUERY_PARAMS", "get_inbox", "parse_inbox_query", "post_seen"]

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
QUERY_PARAMS: Final = frozenset({"since", "from", "topic", "mesh", "limit", "cursor", "order",
                            "session", "unread", "q", "thread"})
# With ``thread`` only these make sense (the thread is one conversation, in order).
THREAD_PARAMS: Final = frozenset({"thread", "mesh", "limit"})


def _since_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest("since must be an ISO 8601 time, e.g. 2026-11-26T15:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidRequest("since needs a time zone (e.g. a trailing Z)")
    return int(moment.timestamp() * 1000)


def _int(name: str, text: str, low: int, high: int) -> int:
    if not ascii_digits(text) or not low <= int(text) <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}")
    return int(text)


def parse_inbox_query(ctx: DaemonContext, query: Any, session: str | None = None) -> InboxFilter:
    """``session`` is the session *name* the caller resolved from the ``session`` param."""
    unknown = set(query) - QUERY_PARAMS
    if unknown:
        raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
    unread = query.get("unread", "0")
    if unread not in ("0", "1", "true", "false"):
        raise InvalidRequest("unread must be 1 or 0")
    if unread in ("1", "true") and session is None:
        raise InvalidRequest("unread=1 needs session=<id or name>: read state is per session")
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
        ascending=order == "asc", session=session, unread=unread in ("1", "true"))


async def get_inbox(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    if "thread" in request.query:
        return await _get_thread(ctx, request.query)
    session = request.query.get("session") or None
    name = None if session is None else await resolve_session_name(ctx, session)
    query = parse_inbox_query(ctx, request.query, name)
    text = request.query.get("q")
    if text is not None:
        return await _search(ctx, query, text, request.query.get("order"))
    items = await ctx.inbox.run(lambda conn: InboxStore(conn).query(query))
    next_cursor = str(items[-1].seq) if len(items) == query.limit else None
    return json_reply({"items": [inbox_item_view(i, iso_ms) for i in items],
                       "next_cursor": next_cursor})


async def _search(ctx: DaemonContext, query: InboxFilter, text: str,
                  order: str | None) -> web.Response:
    """``q``: best match first; the cursor is then how many results came before."""
    if order is not None:
        raise InvalidRequest("order cannot be combined with q: results come best match first")
    offset = query.cursor or 0
    try:
        hits = await ctx.inbox.run(lambda c: search_inbox(c, query, text, offset=offset))
    except FtsQueryError as exc:
        raise InvalidRequest(f"q: {exc}") from None
    next_cursor = str(offset + len(hits)) if len(hits) == query.limit else None
    return json_reply({"items": [{**inbox_item_view(i, iso_ms), "highlight": h}
                                 for i, h in hits], "next_cursor": next_cursor})


async def _get_thread(ctx: DaemonContext, params: Any) -> web.Response:
    unknown = set(params) - THREAD_PARAMS
    if unknown:
        raise InvalidRequest(f"{sorted(unknown)[0]!r} cannot be combined with thread"
                             " (only mesh and limit can)")
    ident = params["thread"]
    if not is_valid_client_message_id(ident):  # every id of ours has that shape
        raise InvalidRequest("thread must be a message id: 1-128 printable ASCII characters"
                             " without spaces")
    mesh = params.get("mesh") or None
    if mesh is not None:
        ctx.pick_mesh(mesh)  # 422 unknown_mesh
    limit = _int("limit", params.get("limit", str(MAX_LIMIT)), 1, MAX_LIMIT)
    return json_reply(await thread_view(ctx, ident, mesh=mesh, limit=limit))


class SeenRequest(StrictModel):
    session: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    ids: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
                   Field(min_length=1, max_length=MAX_MARK)] | None = None
    up_to_seq: Annotated[int, Field(ge=0, le=2**62)] | None = None
    path: Literal["mcp_push", "hook", "tool_call", "poll"] = "poll"

    @model_validator(mode="after")
    def _one_selector(self) -> SeenRequest:
        if (self.ids is None) == (self.up_to_seq is None):
            raise ValueError("give exactly one of ids or up_to_seq")
        return self


async def post_seen(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(SeenRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    name = await resolve_session_name(ctx, req.session)
    now = ctx.clock()
    # Not fsynced: a mark lost in a power cut makes the message unread again, so it is
    # shown again and its surfaced receipt queued again then (seen means shown, at least
    # once); a crash of the process alone loses nothing (WAL).
    marked = await ctx.inbox.run(lambda c: ReadState(c).mark_seen(
        name, ids=req.ids, up_to_seq=req.up_to_seq, path=req.path, now_ms=now),
        durable=False)
    if marked:
        ctx.receipts.notify()
    session_id = req.session if req.session != name else None
    return json_reply({"session_id": session_id, "session": name, "marked": marked})
