"""Who may talk to the daemon (R-AUTH-1..11): pure checks, then the middleware using them.

Order of checks, the same on both transports: a ``token`` query parameter (400), the
``Host`` header (403, DNS-rebinding defence), any ``Origin`` (403, browser defence),
``OPTIONS`` (403, no CORS), then, on TCP only, the bearer token (401). The Unix socket
needs no token: its 0600 mode inside a 0700 directory is the control (R-AUTH-1, A-20).
"""

from __future__ import annotations

import enum
import functools
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from claudemesh.errors import (
    ForbiddenHost,
    ForbiddenOrigin,
    PreflightRefused,
    TokenInQuery,
    Unauthorized,
)

__all__ = ["Transport", "bearer_matches", "guard_middleware", "host_allowed"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ALLOWED_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_HOST_RE: Final = re.compile(r"(?P<name>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>\d{1,5}))?")


class Transport(enum.StrEnum):
    UDS = "uds"
    TCP = "tcp"


@functools.lru_cache(maxsize=64)  # clients send the same Host on every request
def host_allowed(host: str | None) -> bool:
    """R-AUTH-9 with A-38: absent/empty, or a loopback name with an optional port."""
    if host is None or host == "":
        return True
    lowered = host.strip().lower()
    if lowered == "::1":  # a bare IPv6 loopback, which has colons of its own
        return True
    match = _HOST_RE.fullmatch(lowered)
    if match is None:
        return False
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        return False
    return match.group("name") in _ALLOWED_HOSTS


def bearer_matches(authorization: str | None, token: bytes) -> bool:
    """True when the header is ``Bearer <token>``; compared in constant time (R-AUTH-15)."""
    if not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token)


def guard_middleware(
    transport: Transport, token: bytes
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The R-AUTH checks for one transport; errors are raised for the error middleware."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "token" in request.query:
            # R-AUTH-5: a security event, logged without the value.
            log.warning("token_in_query_refused", extra={"path": request.path})
            raise TokenInQuery()
        if not host_allowed(request.headers.get("Host")):
            raise ForbiddenHost()
        if "Origin" in request.headers:
            raise ForbiddenOrigin()
        if request.method == "OPTIONS":
            raise PreflightRefused()
        if transport is Transport.TCP:
            authorization = request.headers.get("Authorization")
            if not bearer_matches(authorization, token):
                detail = ("invalid bearer token" if authorization
                          else "missing bearer token: send 'Authorization: Bearer <local-token>'")
                raise Unauthorized(detail)
        return await handler(request)

    return guard
