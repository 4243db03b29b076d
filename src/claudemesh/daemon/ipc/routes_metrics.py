"""``GET /v1/metrics`` (R-OBS-2): Prometheus text; the token rules of every route apply."""

from __future__ import annotations

import sqlite3

from aiohttp import web

from claudemesh.daemon.ipc.context import CONTEXT
from claudemesh.daemon.ipc.metrics import CONTENT_TYPE, OutboxSnapshot, render_metrics
from claudemesh.daemon.store.outbox import OutboxStore

__all__ = ["get_metrics"]


async def get_metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    slugs = list(ctx.meshes.by_slug)

    def op(conn: sqlite3.Connection) -> OutboxSnapshot:
        store = OutboxStore(conn)
        return OutboxSnapshot(store.counts_by_mesh(), {s: store.oldest_pending_ms(s)
                                                       for s in slugs}, ctx.clock())

    snapshot = await ctx.outbox.run(op)
    return web.Response(body=render_metrics(ctx, snapshot),
                        headers={"Content-Type": CONTENT_TYPE})
