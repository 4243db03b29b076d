"""Build the aiohttp application for one transport; both share one :class:`DaemonContext`.

Middlewares, outermost first: error translation, the R-AUTH guard, the in-flight cap.
Routes are listed once here; each lives in the module named for its concern.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from claudemesh.daemon.ipc.auth import Transport, guard_middleware
from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import errors_middleware, limit_middleware
from claudemesh.daemon.ipc.routes_events import get_events
from claudemesh.daemon.ipc.routes_inbox import get_inbox, post_seen
from claudemesh.daemon.ipc.routes_info import get_health, get_version
from claudemesh.daemon.ipc.routes_messages import get_message
from claudemesh.daemon.ipc.routes_metrics import get_metrics
from claudemesh.daemon.ipc.routes_openapi import get_openapi
from claudemesh.daemon.ipc.routes_outbox import get_outbox, post_requeue
from claudemesh.daemon.ipc.routes_peers import get_peers, post_profile
from claudemesh.daemon.ipc.routes_send import post_send
from claudemesh.daemon.ipc.routes_sessions import (
    delete_session,
    get_session,
    get_sessions,
    post_heartbeat,
    post_session,
)
from claudemesh.daemon.ipc.routes_topics import post_subscribe, post_unsubscribe

__all__ = ["ROUTES", "build_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Every route of the local API, once. docs/openapi.yaml documents exactly these
# (tests/unit/daemon/ipc/test_routes_openapi.py). No GET answers HEAD.
ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", "/v1/version", get_version),
    ("GET", "/v1/health", get_health),
    ("POST", "/v1/send", post_send),
    ("GET", "/v1/outbox", get_outbox),
    ("POST", "/v1/outbox/requeue", post_requeue),
    ("GET", "/v1/inbox", get_inbox),
    ("POST", "/v1/inbox/seen", post_seen),
    ("GET", "/v1/messages/{client_message_id}", get_message),
    ("POST", "/v1/sessions", post_session),
    ("GET", "/v1/sessions", get_sessions),
    ("GET", "/v1/sessions/{session_id}", get_session),
    ("DELETE", "/v1/sessions/{session_id}", delete_session),
    ("POST", "/v1/sessions/{session_id}/heartbeat", post_heartbeat),
    ("GET", "/v1/events", get_events),
    ("GET", "/v1/peers", get_peers),
    ("POST", "/v1/profile", post_profile),
    ("POST", "/v1/topic/subscribe", post_subscribe),
    ("POST", "/v1/topic/unsubscribe", post_unsubscribe),
    ("GET", "/v1/metrics", get_metrics),
    ("GET", "/v1/openapi.json", get_openapi),
)


def build_app(ctx: DaemonContext, transport: Transport) -> web.Application:
    app = web.Application(
        middlewares=[
            errors_middleware(ctx.state, str(transport)),
            guard_middleware(transport, ctx.token),
            limit_middleware(ctx.state, ctx.config.limits),
        ],
        client_max_size=ctx.config.limits.max_body_bytes,
    )
    app[CONTEXT] = ctx
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
