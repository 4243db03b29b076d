"""``GET /v1/peers`` and ``POST /v1/profile``: live from the broker, never guessed.

While a mesh's link is down, both answer 503 ``broker_unavailable``: an empty peer list
would read as "nobody online", and a profile change would be lost (issue 4). Peers listed
here also refresh the daemon's directory, which ``/v1/send`` uses to resolve names.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import StrictModel, parse_json_object, validate
from claudemesh.errors import BrokerRejected, BrokerUnavailable, ClaudemeshError, InvalidRequest
from claudemesh.protocol.replies import Result

__all__ = ["QUERY_PARAMS", "ProfileRequest", "get_peers", "post_profile"]

QUERY_PARAMS: Final = frozenset({"mesh"})  # of GET /v1/peers


class ProfileRequest(StrictModel):
    mesh: str | None = None
    session: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
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
    unknown = set(request.query) - QUERY_PARAMS
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
        peers += [with_addresses(name, p) for p in listed]
    if unavailable and (slug is not None or len(unavailable) == len(slugs)):
        raise BrokerUnavailable(f"no broker link for {', '.join(unavailable)}; the peer list"
                                " is unknown until it reconnects", meshes=unavailable)
    return json_reply({"peers": peers, "unavailable": unavailable})


def with_addresses(mesh: str, peer: dict[str, Any]) -> dict[str, Any]:
    """A broker peer as the API shows it: its mesh, and an address per session."""
    who = peer["pubkey"] if "/" in peer["display_name"] else peer["display_name"]
    listed = peer.get("sessions")
    sessions: list[Any] = listed if isinstance(listed, list) else []
    return {"mesh": mesh, **peer, "sessions": [
        {"name": s["name"], "address": f"{who}/{s['name']}", "summary": s.get("summary"),
         "status": s.get("status"), "harness": s.get("harness")}
        for s in sessions if isinstance(s, dict) and isinstance(s.get("name"), str)]}


async def post_profile(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(ProfileRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    fields = req.model_dump(exclude={"mesh", "session"}, exclude_none=True)
    if not fields:
        raise InvalidRequest("give at least one of summary, status, visible, avatar, title,"
                             " bio, capabilities")
    mesh = ctx.pick_mesh(req.mesh)
    if req.session is not None:
        return await _session_line(ctx, req, fields, mesh.slug)
    link = ctx.runtime(mesh.slug).link
    try:
        answer = (await link.request({"type": "set_profile", **fields})).data
    except TimeoutError:
        raise BrokerUnavailable("the broker did not confirm the profile in time") from None
    except BrokerUnavailable:
        raise
    except ClaudemeshError as exc:  # the broker's refusal, as its typed error
        raise BrokerRejected(f"the broker refused the profile: {exc.code}: {exc.detail}",
                             broker_error=exc.code) from exc
    return json_reply({"mesh": mesh.slug, "applied": answer.get("applied", []),
                       "peer": answer.get("peer")})


async def _session_line(ctx: DaemonContext, req: ProfileRequest, fields: dict[str, Any],
                        slug: str) -> web.Response:
    """A session's own line (summary, status): saved here, then published to the broker
    with the session list; without a link it is published on the next connect."""
    extra = sorted(set(fields) - {"summary", "status"})
    if extra:
        raise InvalidRequest(f"with 'session' only summary and status can be set, not {extra[0]!r}")
    row = await ctx.sessions.set_line(req.session or "", summary=req.summary,
                                      status=req.status)
    runtime = ctx.runtime(slug)
    answer: Result | None = None
    if runtime.link.is_open and runtime.publishes_sessions:
        try:
            answer = await runtime.publish_sessions()
        except (BrokerUnavailable, TimeoutError):
            answer = None
    return json_reply({"mesh": slug, "session": row.name, "session_id": row.id,
                       "applied": sorted(fields), "published": answer is not None,
                       "peer": answer.data.get("peer") if answer is not None else None})
