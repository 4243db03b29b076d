"""``/v1/sessions``: register, list, renew and end the agent sessions of this daemon.

The rules (ownership, reaping, names) live in :mod:`claudemesh.daemon.sessions`; this
module validates bodies and renders a session with its addresses and unread count.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import Field, StringConstraints, model_validator

from claudemesh.clock import iso_ms, iso_ms_or_none
from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import (
    StrictModel,
    ascii_digits,
    parse_json_object,
    validate,
)
from claudemesh.daemon.sessions import Registration
from claudemesh.daemon.store.readstate import ReadState
from claudemesh.daemon.store.sessions import SessionRow
from claudemesh.errors import InvalidRequest, SessionNotFound
from claudemesh.protocol.destination import NAME_RE

__all__ = ["QUERY_PARAMS", "SESSION_NAME", "resolve_session_name", "session_view"]

SESSION_NAME: Final = rf"^{NAME_RE.pattern}$"
_ULID: Final = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
QUERY_PARAMS: Final = frozenset({"pid"})  # of GET /v1/sessions


class RegisterRequest(StrictModel):
    name: Annotated[str, StringConstraints(pattern=SESSION_NAME)]
    harness: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    pid: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    cwd: Annotated[str, StringConstraints(min_length=1, max_length=4096,
                                          pattern=r"^/[^\x00]*$")] | None = None
    default: bool = False
    lease_s: Annotated[int, Field(ge=10, le=3600)] | None = None

    @model_validator(mode="after")
    def _lease_without_pid(self) -> RegisterRequest:
        if self.pid is not None and self.lease_s is not None:
            raise ValueError("lease_s is only for sessions without a pid")
        return self


def session_view(ctx: DaemonContext, row: SessionRow, unread: int) -> dict[str, Any]:
    addresses = [{"mesh": m.slug, "address": f"{m.display_name}/{row.name}",
                  "pubkey_address": f"{m.pubkey}/{row.name}"} for m in ctx.config.meshes]
    return {
        "session_id": row.id, "name": row.name,
        "address": addresses[0]["address"] if addresses else None,
        "addresses": addresses, "harness": row.harness, "pid": row.pid, "cwd": row.cwd,
        "default": row.is_default, "summary": row.summary, "status": row.status,
        "lease_expires_at": iso_ms_or_none(row.lease_expires_at),
        "created_at": iso_ms(row.created_at), "last_seen_at": iso_ms(row.last_seen_at),
        "unread": unread,
    }


async def _unread(ctx: DaemonContext) -> dict[str, int]:
    return await ctx.inbox.run(lambda c: ReadState(c).unread_counts(), durable=False)


async def _unread_of(ctx: DaemonContext, name: str) -> int:
    return await ctx.inbox.run(lambda c: ReadState(c).unread_count(name), durable=False)


async def resolve_session_name(ctx: DaemonContext, value: str) -> str:
    """A session id (a live one; its lease is renewed) or a session name -> the name.

    Raises:
        SessionNotFound: ``value`` looks like a session id but no live session has it.
        InvalidRequest: neither an id nor a valid name.
    """
    try:
        return (await ctx.sessions.touch(value)).name
    except SessionNotFound:
        if _ULID.fullmatch(value):
            raise
    if NAME_RE.fullmatch(value) is None:
        raise InvalidRequest(f"session {value[:80]!r} is neither a session id nor a session"
                             " name")
    return value


async def post_session(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(RegisterRequest, parse_json_object(await read_body(request,
                                                                       ctx.config.limits)))
    row, created = await ctx.sessions.register(Registration(
        name=req.name, harness=req.harness, pid=req.pid, cwd=req.cwd, default=req.default,
        lease_s=req.lease_s))
    unread = await _unread_of(ctx, row.name)
    return json_reply(session_view(ctx, row, unread), 201 if created else 200)


async def get_sessions(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    unknown = set(request.query) - QUERY_PARAMS
    if unknown:
        raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
    pid_text = request.query.get("pid")
    if pid_text is not None and not (ascii_digits(pid_text) and 0 < int(pid_text) < 2**31):
        raise InvalidRequest("pid must be a positive integer")
    rows = await ctx.sessions.live()
    if pid_text is not None:
        rows = [r for r in rows if r.pid == int(pid_text)]
    unread = await _unread(ctx)
    return json_reply({"sessions": [session_view(ctx, r, unread.get(r.name, 0))
                                    for r in rows]})


async def get_session(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await ctx.sessions.get(request.match_info["session_id"])
    return json_reply(session_view(ctx, row, await _unread_of(ctx, row.name)))


async def delete_session(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    session_id = request.match_info["session_id"]
    await ctx.sessions.end(session_id)
    return json_reply({"session_id": session_id, "deleted": True})


async def post_heartbeat(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await read_body(request, ctx.config.limits)
    if body.strip() and parse_json_object(body):
        raise InvalidRequest("the heartbeat takes no fields; send {} or nothing")
    row = await ctx.sessions.touch(request.match_info["session_id"])
    return json_reply(session_view(ctx, row, await _unread_of(ctx, row.name)))
