"""``/v1/topic/*``: subscriptions, posts and history of topics (issue 15).

Subscribing and listing ask the broker (503 ``broker_unavailable`` while the link is
down); a change is also recorded in the daemon's own file (:mod:`..memberships`), which
is asserted again on every connect. A post is ``/v1/send`` to ``#topic``: the same phase
A, lookup table and idempotency (A-53). History pages come from the broker, newest first,
and every message is filed in the inbox exactly once (:meth:`Inbound.file_history`).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import Field

from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import (
    SendRequest,
    StrictModel,
    ascii_digits,
    parse_json_object,
    validate,
)
from claudemesh.daemon.ipc.routes_send import accept_send
from claudemesh.daemon.link import BrokerLink
from claudemesh.daemon.meshes import MeshRuntime
from claudemesh.errors import (
    BrokerRejected,
    BrokerUnavailable,
    ClaudemeshError,
    DestinationNotFound,
    InvalidRequest,
    NotSubscribed,
)
from claudemesh.protocol.destination import NAME_RE

__all__ = ["HISTORY_PARAMS", "LIST_PARAMS", "ask_broker", "broker_list", "get_history",
           "get_topics", "name_of", "post_subscribe", "post_topic", "post_unsubscribe", "query_of"]

LIST_PARAMS: Final = frozenset({"mesh"})  # of GET /v1/topic/list (and /v1/group/list)
HISTORY_PARAMS: Final = frozenset({"topic", "mesh", "before", "limit"})
HISTORY_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 50
BACKFILL_MAX: Final = 1000
_PASSED_ON: Final = (NotSubscribed, DestinationNotFound)  # the broker's answer, as it is


def name_of(value: str, mark: str, what: str) -> str:
    """``news`` or ``#news`` (``mark`` ``#``) as the bare name. Raises 400."""
    name = value[1:] if value.startswith(mark) else value
    if NAME_RE.fullmatch(name) is None:
        raise InvalidRequest(f"field {what!r}: a name is 1-64 characters of letters, digits,"
                             f" '.', '_' or '-', starting with a letter or digit (optionally"
                             f" after {mark!r})")
    return name


def query_of(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and all known. Raises 400."""
    unknown = set(request.query) - allowed
    if unknown:
        raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
    for key in request.query:
        if len(request.query.getall(key)) > 1:
            raise InvalidRequest(f"query parameter {key!r} given more than once")
    return dict(request.query)


async def ask_broker(link: BrokerLink, frame: dict[str, Any], what: str) -> dict[str, Any]:
    """One request to the mesh's broker; its ``result`` data.

    Raises:
        BrokerUnavailable: the link is down or the answer did not come (503).
        NotSubscribed / DestinationNotFound: the broker's refusal, passed on.
        BrokerRejected: any other refusal (502).
    """
    try:
        return (await link.request(frame)).data
    except TimeoutError:
        raise BrokerUnavailable(f"the broker did not answer {what} in time") from None
    except (BrokerUnavailable, *_PASSED_ON):
        raise
    except ClaudemeshError as exc:
        raise BrokerRejected(f"the broker refused {what}: {exc.code}: {exc.detail}",
                             broker_error=exc.code) from exc


class SubscribeRequest(StrictModel):
    topic: Annotated[str, Field(min_length=1, max_length=65)]
    mesh: str | None = None
    backfill: Annotated[int, Field(ge=0, le=BACKFILL_MAX)] = 0


class UnsubscribeRequest(StrictModel):
    topic: Annotated[str, Field(min_length=1, max_length=65)]
    mesh: str | None = None


async def _body(request: web.Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request, request.app[CONTEXT].config.limits))


async def post_subscribe(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(SubscribeRequest, await _body(request))
    return json_reply(await _set_subscribed(ctx, req.mesh, req.topic, True, req.backfill))


async def post_unsubscribe(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(UnsubscribeRequest, await _body(request))
    return json_reply(await _set_subscribed(ctx, req.mesh, req.topic, False, 0))


async def _set_subscribed(ctx: DaemonContext, mesh: str | None, topic: str, on: bool,
                          backfill: int) -> dict[str, Any]:
    name = name_of(topic, "#", "topic")
    runtime = ctx.runtime(ctx.pick_mesh(mesh).slug)
    kind = "subscribe" if on else "unsubscribe"
    data = await ask_broker(runtime.link, {"type": kind, "topic": name}, f"the {kind}")
    if runtime.memberships is not None:
        await runtime.memberships.set_topic(runtime.mesh.slug, name, on)
    answer: dict[str, Any] = {"mesh": runtime.mesh.slug, "topic": name, "subscribed": on,
                              "changed": bool(data.get("changed"))}
    if backfill:
        answer["backfill"] = await _history(runtime, name, None, backfill)
    return answer


async def broker_list(request: web.Request, frame_type: str, field: str) -> web.Response:
    """A listing the broker keeps (``?mesh=`` only): ``{mesh, <field>: [...]}``."""
    ctx = request.app[CONTEXT]
    query = query_of(request, LIST_PARAMS)
    runtime = ctx.runtime(ctx.pick_mesh(query.get("mesh") or None).slug)
    data = await ask_broker(runtime.link, {"type": frame_type}, f"the {field} list")
    listed = data.get(field)
    if not isinstance(listed, list):
        raise BrokerRejected(f"the broker's {frame_type} answer has no {field!r}")
    return json_reply({"mesh": runtime.mesh.slug, field: listed})


async def get_topics(request: web.Request) -> web.Response:
    return await broker_list(request, "list_topics", "topics")


async def post_topic(request: web.Request) -> web.Response:
    """``/v1/send`` to ``#topic``: the body of a send with ``topic`` in place of ``to``."""
    ctx = request.app[CONTEXT]
    doc = await _body(request)
    for name in ("to", "anycast"):
        if name in doc:
            raise InvalidRequest(f"unknown field {name!r}")
    topic = doc.pop("topic", None)
    if not isinstance(topic, str):
        raise InvalidRequest("missing field 'topic'" if topic is None
                             else "field 'topic': Input should be a valid string")
    req = validate(SendRequest, {**doc, "to": f"#{name_of(topic, '#', 'topic')}"})
    return await accept_send(ctx, req, request.headers.get("Idempotency-Key"))


async def get_history(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query = query_of(request, HISTORY_PARAMS)
    if "topic" not in query:
        raise InvalidRequest("missing query parameter 'topic'")
    name = name_of(query["topic"], "#", "topic")
    before = query.get("before")
    if before is not None and not (ascii_digits(before) and len(before) <= 20):
        raise InvalidRequest("query parameter 'before' is a history_id (digits)")
    limit = _limit(query.get("limit"))
    runtime = ctx.runtime(ctx.pick_mesh(query.get("mesh") or None).slug)
    return json_reply(await _history(runtime, name, before, limit))


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not ascii_digits(text) or len(text) > 6 or not 1 <= int(text) <= HISTORY_LIMIT:
        raise InvalidRequest(f"query parameter 'limit' must be 1..{HISTORY_LIMIT}")
    return int(text)


async def _history(runtime: MeshRuntime, topic: str, before: str | None,
                   limit: int) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "topic_history", "topic": topic, "limit": limit}
    if before is not None:
        frame["before"] = before
    data = await ask_broker(runtime.link, frame, "the topic history")
    items = data.get("items")
    if not isinstance(items, list):
        raise BrokerRejected("the broker's topic history has no 'items'")
    next_before = data.get("next_before")
    return {"mesh": runtime.mesh.slug, "topic": topic,
            "items": await runtime.inbound.file_history(items),
            "next_before": next_before if isinstance(next_before, str) else None}
