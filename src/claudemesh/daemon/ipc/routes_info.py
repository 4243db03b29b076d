"""``GET /v1/version`` (R-IPC-3, A-21) and ``GET /v1/health`` (R-IPC-2, A-22)."""

from __future__ import annotations

import os
from typing import Any, Final

from aiohttp import web

from claudemesh.daemon.ipc.context import CONTEXT
from claudemesh.daemon.ipc.http import json_reply
from claudemesh.daemon.store.outbox import OutboxStore
from claudemesh.daemon.store.outbox_rules import OutboxStatus

__all__ = ["IPC_API", "IPC_FEATURES", "get_health", "get_version"]

IPC_API: Final = "v1"
IPC_FEATURES: Final = ("version", "health", "send", "outbox")


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
             "display_name": m.display_name, "broker_features_negotiated": []}
            for m in ctx.config.meshes
        ],
    })


async def get_health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    totals, per_mesh = await ctx.outbox.run(
        lambda conn: (OutboxStore(conn).counts(), OutboxStore(conn).counts_by_mesh()))
    meshes: list[dict[str, Any]] = []
    for mesh in ctx.config.meshes:
        counts = per_mesh.get(mesh.slug, dict.fromkeys(OutboxStatus, 0))
        status = ctx.link_status(mesh.slug)
        meshes.append({
            "slug": mesh.slug,
            "link": str(status),
            "connected": False,
            "broker_url": mesh.broker_url,
            "broker_version": None,
            "member_pubkey": mesh.pubkey,
            "lag_ms": None,
            "queue_depth": counts[OutboxStatus.PENDING] + counts[OutboxStatus.INFLIGHT],
            "inflight": counts[OutboxStatus.INFLIGHT],
            "dead": counts[OutboxStatus.DEAD],
        })
    return json_reply({
        "status": "ok",
        "daemon_version": ctx.daemon_version,
        "schema_version": ctx.schema_version,
        "pid": os.getpid(),
        "uptime_s": ctx.uptime_s(),
        "queue_depth": totals[OutboxStatus.PENDING] + totals[OutboxStatus.INFLIGHT],
        "inflight": totals[OutboxStatus.INFLIGHT],
        "dead": totals[OutboxStatus.DEAD],
        "requests_in_flight": ctx.state.in_flight,
        "meshes": meshes,
    })
