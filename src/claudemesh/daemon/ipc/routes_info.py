"""``GET /v1/version`` (R-IPC-3, A-21) and ``GET /v1/health`` (R-IPC-2, A-22)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Final

from aiohttp import web

from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply
from claudemesh.daemon.link import BrokerLink
from claudemesh.daemon.store.outbox import OutboxStore
from claudemesh.daemon.store.outbox_rules import OutboxStatus

__all__ = ["IPC_API", "IPC_FEATURES", "get_health", "get_version"]

IPC_API: Final = "v1"
IPC_FEATURES: Final = ("version", "health", "send", "outbox", "inbox", "events", "peers",
                       "profile", "sessions", "receipts", "openapi")


def _negotiated(link: BrokerLink) -> list[str]:
    return [] if link.negotiated is None else list(link.negotiated.features)


async def get_version(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_reply({
        "daemon_version": ctx.daemon_version,
        "ipc_api": IPC_API,
        "ipc_features": list(IPC_FEATURES),
        "schema_version": ctx.schema_version,
        "pid": os.getpid(),
        "meshes": [
            {"slug": m.slug, "mesh_id": m.mesh_id, "member_pubkey": m.pubkey,
             "display_name": m.display_name,
             "broker_features_negotiated": _negotiated(ctx.runtime(m.slug).link)}
            for m in ctx.config.meshes
        ],
    })


def _mesh_health(ctx: DaemonContext, slug: str, counts: dict[OutboxStatus, int],
                 oldest: int | None) -> dict[str, Any]:
    runtime = ctx.runtime(slug)
    link, mesh = runtime.link, runtime.mesh
    negotiated = link.negotiated
    return {
        "slug": slug,
        "link": str(link.state),
        "connected": link.is_open,
        "broker_url": link.url,
        "broker_urls": list(mesh.urls),
        "broker_version": link.broker_version,
        "session_id": link.session_id,
        "member_pubkey": mesh.pubkey,
        "lag_ms": 0 if oldest is None else max(0, ctx.clock() - oldest),
        "queue_depth": counts[OutboxStatus.PENDING] + counts[OutboxStatus.INFLIGHT],
        "inflight": counts[OutboxStatus.INFLIGHT],
        "scheduled": counts[OutboxStatus.SCHEDULED],  # waiting for deliver_at; not queued
        "dead": counts[OutboxStatus.DEAD],
        "last_error": link.last_error,
        "clock_skew_ms": link.clock_skew_ms,
        "pinned_key": mesh.pin,
        "features": _negotiated(link),
        "dedupe": None if negotiated is None else {
            "mode": negotiated.dedupe.mode,
            "retention_days": negotiated.dedupe.retention_days},
        "incompatible": None if link.failure is None else link.failure.close_reason(),
    }


async def get_health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    slugs = [m.slug for m in ctx.config.meshes]

    def op(conn: sqlite3.Connection) -> tuple[Any, Any, dict[str, int | None]]:
        store = OutboxStore(conn)
        return store.counts(), store.counts_by_mesh(), {s: store.oldest_pending_ms(s)
                                                        for s in slugs}

    totals, per_mesh, oldest = await ctx.outbox.run(op)
    meshes = [_mesh_health(ctx, s, per_mesh.get(s, dict.fromkeys(OutboxStatus, 0)), oldest[s])
              for s in slugs]
    return json_reply({
        "status": "ok" if all(m["connected"] for m in meshes) else "degraded",
        "daemon_version": ctx.daemon_version,
        "schema_version": ctx.schema_version,
        "pid": os.getpid(),
        "uptime_s": ctx.uptime_s(),
        "queue_depth": totals[OutboxStatus.PENDING] + totals[OutboxStatus.INFLIGHT],
        "inflight": totals[OutboxStatus.INFLIGHT],
        "scheduled": totals[OutboxStatus.SCHEDULED],
        "dead": totals[OutboxStatus.DEAD],
        "requests_in_flight": ctx.state.in_flight,
        "event_streams": ctx.bus.streams,
        "meshes": meshes,
    })
