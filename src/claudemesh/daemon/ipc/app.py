"""Build the aiohttp application for one transport; both share one :class:`DaemonContext`.

Middlewares, outermost first: error translation, the R-AUTH guard, the in-flight cap.
Routes are listed once here; each lives in the module named for its concern.
"""

from __future__ import annotations

from aiohttp import web

from claudemesh.daemon.ipc.auth import Transport, guard_middleware
from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import errors_middleware, limit_middleware
from claudemesh.daemon.ipc.routes_events import get_events
from claudemesh.daemon.ipc.routes_inbox import get_inbox, post_seen
from claudemesh.daemon.ipc.routes_info import get_health, get_version
from claudemesh.daemon.ipc.routes_messages import get_message
from claudemesh.daemon.ipc.routes_metrics import get_metrics
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

__all__ = ["build_app"]


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
    app.router.add_get("/v1/version", get_version, allow_head=False)
    app.router.add_get("/v1/health", get_health, allow_head=False)
    app.router.add_post("/v1/send", post_send)
    app.router.add_get("/v1/outbox", get_outbox, allow_head=False)
    app.router.add_post("/v1/outbox/requeue", post_requeue)
    app.router.add_get("/v1/inbox", get_inbox, allow_head=False)
    app.router.add_post("/v1/inbox/seen", post_seen)
    app.router.add_get("/v1/messages/{client_message_id}", get_message, allow_head=False)
    app.router.add_post("/v1/sessions", post_session)
    app.router.add_get("/v1/sessions", get_sessions, allow_head=False)
    app.router.add_get("/v1/sessions/{session_id}", get_session, allow_head=False)
    app.router.add_delete("/v1/sessions/{session_id}", delete_session)
    app.router.add_post("/v1/sessions/{session_id}/heartbeat", post_heartbeat)
    app.router.add_get("/v1/events", get_events, allow_head=False)
    app.router.add_get("/v1/peers", get_peers, allow_head=False)
    app.router.add_post("/v1/profile", post_profile)
    app.router.add_get("/v1/metrics", get_metrics, allow_head=False)
    return app
