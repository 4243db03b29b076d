"""``GET /v1/peers`` and ``POST /v1/profile``: live from the broker, never guessed.

While a mesh's link is down, both answer 503 ``broker_unavailable``: an empty peer list
would read as "nobody online", and a profile change would be lost (issue 4). Peers listed
here also refresh the daemon's directory, which ``/v1/send`` uses to resolve names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from claudemesh.daemon.ipc.context import CONTEXT
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import StrictModel, parse_json_object, validate
from claudemesh.errors import BrokerRejected, BrokerUnavailable, InvalidRequest

__all__ = ["ProfileRequest", "get_peers", "post_profile"]


class ProfileRequest(StrictModel):
    mesh: str | None = None
    summary: Annotated[str, StringConstraints(max_length=512)] | None = None
    status: Literal["idle", "working", "dnd"] | None = None
    visible: bool | None = None
    avatar: Annotated[str, StringConstraints(max_length=512)] | None = None
    title: Annotated[str, StringConstraints(max_length=128)] | None = None
    bio: Annotated[str, StringConstraints(max_length=2048)] | None = None
    capabilities: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = (
        Field(default=None, max_length=64))


async def get_peers(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    unknown = set(request.query) - {"mesh"}
    if unknown:
        raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
    slug = request.query.get("mesh") or None
    slugs = [ctx.pick_mesh(slug).slug] if slug else [m.slug for m in ctx.config.meshes]
    peers: list[dict[str, Any]] = []
    unavailable: list[str] = []
    for name in slugs:
        runtime = ctx.runtime(name)
        if not runtime.link.is_open:
            unavailable.append(name)
            continue
        try:
            listed = await runtime.refresh_peers()
        except (BrokerUnavailable, TimeoutError):
            unavailable.append(name)
            continue
        peers += [{"mesh": name, **p} for p in listed]
    if unavailable and (slug is not None or len(unavailable) == len(slugs)):
        raise BrokerUnavailable(f"no broker link for {', '.join(unavailable)}; the peer list"
                                " is unknown until it reconnects", meshes=unavailable)
    return json_reply({"peers": peers, "unavailable": unavailable})


async def post_profile(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(ProfileRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    fields = req.model_dump(exclude={"mesh"}, exclude_none=True)
    if not fields:
        raise InvalidRequest("give at least one of summary, status, visible, avatar, title,"
                             " bio, capabilities")
    mesh = ctx.pick_mesh(req.mesh)
    link = ctx.runtime(mesh.slug).link
    try:
        answer = await link.request({"type": "set_profile", **fields})
    except TimeoutError:
        raise BrokerUnavailable("the broker did not confirm the profile in time") from None
    if answer.get("type") != "result":
        raise BrokerRejected(f"the broker refused the profile: {answer.get('code')}:"
                             f" {answer.get('detail')}", broker_error=answer.get("code"))
    return json_reply({"mesh": mesh.slug, "applied": answer.get("applied", []),
                       "peer": answer.get("peer")})
