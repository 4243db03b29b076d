"""The broker process: a WebSocket endpoint at ``/ws``, two maintenance jobs, and a clean stop.

The same port answers ``/healthz``, ``/readyz`` and ``/metrics`` over plain HTTP (ops.py).

Lifecycle. ``start`` opens the store and binds the listener (``port`` 0 lets the OS
choose; the bound port is reported); ``serve_until`` awaits an event set by SIGTERM or
SIGINT; ``stop`` closes every connection with 1001 ("going away"), stops the jobs, and
closes the store, which finishes its queued writes first. Jobs: the retention sweep
(R-BRK-2), and the revocation watch, which closes a revoked member's live connection with
4002. The watch polls the store because a revocation is written by another process
(``claudemesh mesh revoke``) and SQLite has no notification; PostgreSQL (issue 6) will
use LISTEN/NOTIFY instead.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from claudemesh.broker.blobfiles import BlobFiles, blob_dir_for
from claudemesh.broker.context import BrokerContext
from claudemesh.broker.hub import Hub
from claudemesh.broker.metrics import BrokerMetrics, time_store
from claudemesh.broker.ops import OpsEndpoints
from claudemesh.broker.session import Session
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store import open_store, redact_location
from claudemesh.broker.store.base import BrokerStore
from claudemesh.broker.store.rows import BLOB_ABANDONED_MS
from claudemesh.clock import now_ms
from claudemesh.errors import ClaudemeshError, ConfigError
from claudemesh.liveness import bound_stalls
from claudemesh.protocol.close import CloseCode
from claudemesh.protocol.features import DEFAULT_BATCH, FRAME_BATCH, build_feature_map
from claudemesh.protocol.ids import new_ulid
from claudemesh.tls import load_chain, pin_of_cert_file, server_context

__all__ = ["BrokerServer", "run_broker"]

log = logging.getLogger(__name__)


class BrokerServer:
    def __init__(self, settings: BrokerSettings, store: BrokerStore,
                 blobs: BlobFiles | None = None) -> None:
        self.settings = settings
        self.metrics = BrokerMetrics()
        self.store = store = time_store(store, self.metrics)
        self.broker_id = new_ulid()
        self.hub = Hub(store, settings, self.broker_id, metrics=self.metrics)
        batch = None if FRAME_BATCH in settings.omit_features else DEFAULT_BATCH
        self.ctx = BrokerContext(store, self.hub, settings, build_feature_map(
            inline_bytes=settings.inline_bytes,
            blob_bytes=settings.inline_bytes if blobs is None else settings.max_file_bytes,
            batch=batch, omit=settings.omit_features), batch=batch, metrics=self.metrics,
            blobs=blobs)
        self.ops = OpsEndpoints(store, self.metrics, broker_id=self.broker_id)
        self._server: Server | None = None
        self._jobs: list[asyncio.Task[None]] = []
        self.tls: ssl.SSLContext | None = None
        self.pin: str | None = None  # the SHA-256 of the TLS key, which invites carry
        if settings.tls_cert and settings.tls_key:
            self.tls = server_context(Path(settings.tls_cert), Path(settings.tls_key))
            self.pin = pin_of_cert_file(Path(settings.tls_cert))

    async def start(self) -> int:
        s = self.settings
        await self.store.broker_heartbeat(self.broker_id, now_ms=now_ms())  # before any attach
        await self.hub.start()
        self._server = await serve(
            self._handle, s.host, s.port, process_request=self.ops.answer,
            max_size=s.frame_hard_limit_bytes, ping_interval=s.ping_interval_s,
            ping_timeout=s.ping_timeout_s, close_timeout=s.close_timeout_s,
            server_header="claudemesh-broker",
            compression=None, ssl=self.tls)
        port = int(self._server.sockets[0].getsockname()[1])
        presence_every = min(s.presence_sweep_s, s.presence_lease_s / 4)
        self._jobs = [asyncio.create_task(self._every(s.sweep_interval_s, self._sweep)),
                      asyncio.create_task(self._every(s.revocation_poll_s, self._revocations)),
                      asyncio.create_task(self._every(s.heartbeat_interval_s, self._heartbeat)),
                      asyncio.create_task(self._every(presence_every, self.hub.expire_leases))]
        log.info("broker_started", extra={"host": s.host, "port": port, "tls": bool(self.tls),
                                          "pin": self.pin, "broker_id": self.broker_id})
        return port

    def reload_tls(self) -> None:
        """SIGHUP: load the certificate files again into the live context. Connections
        that are open keep their session; new handshakes present the new certificate. A
        pair that does not load is logged and the old one stays in use."""
        s = self.settings
        if self.tls is None or s.tls_cert is None or s.tls_key is None:
            return
        try:
            load_chain(self.tls, Path(s.tls_cert), Path(s.tls_key))
            pin = pin_of_cert_file(Path(s.tls_cert))
        except ConfigError as exc:
            log.error("tls_reload_failed", extra={"detail": exc.detail})  # noqa: TRY400
            return
        if pin != self.pin:
            log.warning("tls_key_changed: invites pinned to the old key stop working",
                        extra={"old_pin": self.pin, "pin": pin})
        self.pin = pin
        log.info("tls_reloaded", extra={"cert": s.tls_cert, "pin": pin})

    async def stop(self) -> None:
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        await self.hub.close()
        await self.store.close()
        log.info("broker_stopped")

    async def _handle(self, ws: ServerConnection) -> None:
        s = self.settings  # a stalled connection is cut like a silent one (liveness.py)
        bound_stalls(ws.transport, s.ping_interval_s + s.ping_timeout_s)
        await Session(ws, self.ctx).run()

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except ClaudemeshError as exc:
                log.warning("broker_job_failed", extra={"job": job.__name__, "error": str(exc)})

    async def _sweep(self) -> None:
        await self._sweep_blobs()
        result = await self.store.sweep(now_ms())
        if result.dedupe_rows_expired or result.messages_pruned:
            log.info("retention_sweep", extra={"dedupe_expired": result.dedupe_rows_expired,
                                               "messages_pruned": result.messages_pruned})

    async def _sweep_blobs(self) -> None:
        """Blobs go with their mesh's message retention; abandoned uploads after a day."""
        blobs = self.ctx.blobs
        if blobs is None:
            return
        expired = await self.store.expire_blobs(now_ms(), abandoned_after_ms=BLOB_ABANDONED_MS)
        for file_id in expired:
            blobs.delete(file_id)
        if expired:
            log.info("blob_sweep", extra={"blobs_deleted": len(expired)})

    async def _heartbeat(self) -> None:
        await self.store.broker_heartbeat(self.broker_id, now_ms=now_ms())

    async def _revocations(self) -> None:
        since = now_ms() - int(self.settings.revocation_poll_s * 1000) - 5_000
        for member in await self.store.revoked_since(since):
            for entry in await self.store.list_topics(member.mesh_id, member.id):
                if entry["subscribed"]:  # its topics' next epochs leave it out
                    await self.hub.membership_moved(member.mesh_id, entry["topic"])
            session = await self.hub.revoked(member)
            if isinstance(session, Session) and not session.revoked:
                session.revoked = True
                log.info("member_revoked_closing", extra={"member_id": member.id})
                await session.error("member_revoked", "this member has been revoked")
                await session.close(CloseCode.MEMBER_REVOKED, "member_revoked")


# The event loop and the store's writer thread hand the GIL back and forth for every
# accept; at CPython's default 5 ms switch interval a hand-off can wait that long. Measured
# with bench/broker.py (A/B, same machine): ~2,900 vs ~2,650 accepts/s. The daemon keeps
# the default: there bench/accept.py was ~10% faster without it.
GIL_SWITCH_S = 0.0005


async def run_broker(settings: BrokerSettings, location: str,
                     on_ready: Callable[[dict[str, Any]], None]) -> int:
    """Run until SIGTERM/SIGINT; returns 0 after a clean stop."""
    sys.setswitchinterval(GIL_SWITCH_S)
    blob_dir = blob_dir_for(location, settings.blob_dir)
    blobs = None if blob_dir is None else BlobFiles(blob_dir)
    server = BrokerServer(settings, open_store(location), blobs)
    stop = asyncio.Event()
    try:
        port = await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
        scheme = "wss" if server.tls else "ws"
        on_ready({"ok": True, "url": f"{scheme}://{settings.host}:{port}/ws", "port": port,
                  "db": redact_location(location), "tls": server.tls is not None,
                  "pin": server.pin})
        await stop.wait()
    finally:
        try:
            await server.stop()
        except ClaudemeshError:
            log.exception("broker_stop_failed")
    return 0
