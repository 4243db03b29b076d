"""``POST /v1/topic/subscribe`` and ``POST /v1/topic/unsubscribe``: this member's topic
subscriptions, at the broker (docs/api.md). The answer is the broker's; while the link is
down both answer 503 ``broker_unavailable``. A subscription change moves the topic's
membership version, so the next post to an encrypted topic starts a new key epoch.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import StringConstraints

from claudemesh.daemon.ipc.context import CONTEXT
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import StrictModel, parse_json_object, validate
from claudemesh.errors import BrokerUnavailable
from claudemesh.protocol.destination import NAME_RE

__all__ = ["TopicRequest", "post_subscribe", "post_unsubscribe"]


class TopicRequest(StrictModel):
    topic: Annotated[str, StringConstraints(pattern=f"^#?{NAME_RE.pattern}$")]
    mesh: str | None = None


async def _change(request: web.Request, frame_type: str) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(TopicRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    mesh = ctx.pick_mesh(req.mesh)
    topic = req.topic.removeprefix("#")
    try:
        answer = (await ctx.runtime(mesh.slug).link.request(
            {"type": frame_type, "topic": topic})).data
    except TimeoutError:
        raise BrokerUnavailable("the broker did not answer in time") from None
    return json_reply({"mesh": mesh.slug, "topic": topic,
                       "subscribed": bool(answer.get("subscribed")),
                       "changed": bool(answer.get("changed"))})


async def post_subscribe(request: web.Request) -> web.Response:
    return await _change(request, "subscribe")


async def post_unsubscribe(request: web.Request) -> web.Response:
    return await _change(request, "unsubscribe")
