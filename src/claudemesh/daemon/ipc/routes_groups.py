"""``/v1/group/*``: joining, leaving and listing groups (issue 15).

Like topics: asked of the broker (503 while the link is down), and a change is recorded
in the daemon's own file so it is asserted again on every connect. A ``role`` is a free
label shown in the group's roster (``lead``, ``reviewer``); joining again with another
role changes it, without one keeps it.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, StringConstraints

from claudemesh.daemon.ipc.context import CONTEXT
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import StrictModel, parse_json_object, validate
from claudemesh.daemon.ipc.routes_topics import ask_broker, broker_list, name_of

__all__ = ["get_groups", "post_join", "post_leave"]

Role = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]


class JoinRequest(StrictModel):
    group: Annotated[str, Field(min_length=1, max_length=65)]
    role: Role | None = None
    mesh: str | None = None


class LeaveRequest(StrictModel):
    group: Annotated[str, Field(min_length=1, max_length=65)]
    mesh: str | None = None


async def post_join(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(JoinRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    name = name_of(req.group, "@", "group")
    runtime = ctx.runtime(ctx.pick_mesh(req.mesh).slug)
    frame: dict[str, Any] = {"type": "join_group", "group": name}
    if req.role is not None:
        frame["role"] = req.role
    data = await ask_broker(runtime.link, frame, "the join")
    if runtime.memberships is not None:
        await runtime.memberships.set_group(runtime.mesh.slug, name, True, req.role)
    role = runtime.memberships.groups(runtime.mesh.slug).get(name) if (
        runtime.memberships is not None) else req.role
    return json_reply({"mesh": runtime.mesh.slug, "group": name, "member": True,
                       "changed": bool(data.get("changed")), "role": role})


async def post_leave(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(LeaveRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    name = name_of(req.group, "@", "group")
    runtime = ctx.runtime(ctx.pick_mesh(req.mesh).slug)
    data = await ask_broker(runtime.link, {"type": "leave_group", "group": name}, "the leave")
    if runtime.memberships is not None:
        await runtime.memberships.set_group(runtime.mesh.slug, name, False)
    return json_reply({"mesh": runtime.mesh.slug, "group": name, "member": False,
                       "changed": bool(data.get("changed"))})


async def get_groups(request: web.Request) -> web.Response:
    return await broker_list(request, "list_groups", "groups")
