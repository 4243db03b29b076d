"""HTTP edge of the daemon: error translation, the in-flight cap, body reading, JSON replies.

``errors_middleware`` is the one place where exceptions become answers (STYLE (b)7): a
:class:`ClaudemeshError` becomes ``{error, detail, ...}`` with its status; aiohttp's own
404/405/413 become ours; anything else is a 500 ``internal`` whose traceback goes to the
log only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from claudemesh.config import IpcLimits
from claudemesh.daemon.ipc.context import ServerState
from claudemesh.errors import (
    ClaudemeshError,
    DaemonBusy,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    RouteNotFound,
    ShuttingDown,
)
from claudemesh.protocol.strictjson import dumps

__all__ = ["errors_middleware", "json_reply", "limit_middleware", "read_body"]

log = logging.getLogger(__name__)

UNCOUNTED_PATHS = frozenset({"/v1/events"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json",
                        charset="utf-8")


def error_reply(exc: ClaudemeshError) -> web.Response:
    response = json_reply(exc.to_wire(), status=exc.http_status)
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="claudemesh"'
    return response


_AIOHTTP_ERRORS: dict[type[web.HTTPException], type[ClaudemeshError]] = {
    web.HTTPNotFound: RouteNotFound,
    web.HTTPMethodNotAllowed: MethodNotAllowed,
    web.HTTPRequestEntityTooLarge: PayloadTooLarge,
}


def errors_middleware(
    state: ServerState, transport: str
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Translate errors once, and count every answer for /v1/metrics."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await _answer(request, handler)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        state.record(route, response.status, transport, time.perf_counter() - started)
        return response

    return errors


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClaudemeshError as exc:
        return error_reply(exc)
    except web.HTTPException as exc:
        mapped = _AIOHTTP_ERRORS.get(type(exc))
        if mapped is not None:
            response = error_reply(mapped())
            if "Allow" in exc.headers:  # RFC 9110 §15.5.6: a 405 names the methods there are
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        if exc.status < 400:
            raise
        return json_reply({"error": f"http_{exc.status}", "detail": exc.reason},
                          status=exc.status)
    except Exception:
        log.exception("unhandled error answering %s %s", request.method, request.path)
        return error_reply(InternalError())


def limit_middleware(
    state: ServerState, limits: IpcLimits
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """R-LIM-3: at most ``max_in_flight`` requests at once across both transports."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if state.shutting_down:
            raise ShuttingDown()
        if request.path in UNCOUNTED_PATHS:  # long-lived streams have their own cap
            return await handler(request)
        if state.in_flight >= limits.max_in_flight:
            raise DaemonBusy(f"{state.in_flight} requests in flight (limit"
                             f" {limits.max_in_flight}); retry shortly")
        state.enter()
        try:
            return await handler(request)
        finally:
            state.leave()

    return limit


async def read_body(request: web.Request, limits: IpcLimits) -> bytes:
    """The whole body, refusing oversize ones before reading them (R-LIM-1).

    Raises:
        PayloadTooLarge: declared or actual size above ``max_body_bytes`` (413).
        RequestTimeout: the body did not arrive within ``body_timeout_s`` (408).
    """
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the"
                              f" {limits.max_body_bytes}-byte limit")
    try:
        if request.content.is_eof():  # all of it came with the headers: no timer needed
            return await request.read()
        async with asyncio.timeout(limits.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout() from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"body exceeds the {limits.max_body_bytes}-byte limit") from None
