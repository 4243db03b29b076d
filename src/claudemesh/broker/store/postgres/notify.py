"""The PostgreSQL store's notifier: LISTEN/NOTIFY fan-out between brokers.

*Notifications.* :class:`PgNotifier` is LISTEN/NOTIFY on the channel ``claudemesh`` over
one dedicated connection (not from the pool), re-opened with backoff when it drops.
Every broker, the publisher included, receives each notification. Payloads are JSON
``{"kind", "payload"}`` under PostgreSQL's 8000-byte limit; a long ``deliver`` member list
is split over several notifications. Notifications are wake-ups only (base.py): a lost
one delays a push until the next read, it never loses a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]

from claudemesh.broker.store.base import Handler, Notifier
from claudemesh.broker.store.postgres.connection import PgPool, describe, store_errors
from claudemesh.errors import ClaudemeshError

__all__ = ["CHANNEL", "NOTIFY_LIMIT", "PgNotifier"]

log = logging.getLogger(__name__)

CHANNEL: Final = "claudemesh"
NOTIFY_LIMIT: Final = 7_900  # bytes; PostgreSQL refuses payloads of 8000 and more
_RECONNECT_MAX_S: Final = 5.0
_PING_EVERY_S: Final = 30.0


def _encode(kind: str, payload: dict[str, Any]) -> str:
    return json.dumps({"kind": kind, "payload": payload}, separators=(",", ":"))


def _notifications(kind: str, payload: dict[str, Any]) -> list[str]:
    """The payload as NOTIFY texts under the limit; a long ``deliver`` list is halved."""
    text = _encode(kind, payload)
    if len(text.encode()) <= NOTIFY_LIMIT:
        return [text]
    members = payload.get("member_ids")
    if kind != "deliver" or not isinstance(members, list) or len(members) < 2:
        raise ValueError(f"a {kind!r} notification of {len(text.encode())} bytes does not fit"
                         f" in one NOTIFY ({NOTIFY_LIMIT} bytes)")
    half = len(members) // 2
    return (_notifications(kind, {**payload, "member_ids": members[:half]})
            + _notifications(kind, {**payload, "member_ids": members[half:]}))


def _merged(batch: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The batch in order, with every ``deliver`` of one mesh folded into its first one."""
    out: list[tuple[str, dict[str, Any]]] = []
    delivers: dict[Any, tuple[list[Any], set[Any]]] = {}
    for kind, payload in batch:
        members = payload.get("member_ids")
        if kind != "deliver" or not isinstance(members, list):
            out.append((kind, payload))
            continue
        mesh_id = payload.get("mesh_id")
        if mesh_id not in delivers:
            merged: list[Any] = []
            delivers[mesh_id] = (merged, set())
            out.append((kind, {**payload, "member_ids": merged}))
        listed, seen = delivers[mesh_id]
        for member in members:
            if member not in seen:
                seen.add(member)
                listed.append(member)
    return out


def _decode(text: str) -> tuple[str, dict[str, Any]] | None:
    """``(kind, payload)`` from a notification's JSON, or None (logged) when malformed."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        log.warning("notify_bad_payload", extra={"error": str(exc)})
        return None
    kind = message.get("kind") if isinstance(message, dict) else None
    payload = message.get("payload") if isinstance(message, dict) else None
    if not isinstance(kind, str) or not isinstance(payload, dict):
        log.warning("notify_bad_payload", extra={"error": "no kind or no payload object"})
        return None
    return kind, payload


class PgNotifier(Notifier):
    """LISTEN/NOTIFY on :data:`CHANNEL`: one listening connection, re-opened when it drops.

    ``publish`` goes through the store's pool (``SELECT pg_notify``); it never raises:
    a notification that cannot be sent is logged and dropped (base.py: best effort).
    """

    def __init__(self, pool: PgPool) -> None:
        self._dsn = pool.dsn
        self._pool = pool
        self._handler: Handler | None = None
        self._conn: Any = None  # asyncpg.Connection, listening
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._outgoing: list[tuple[str, dict[str, Any]]] = []
        self._flusher: asyncio.Future[None] | None = None
        self.reconnects = 0  # how often the listening connection was re-opened

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self, handler: Handler) -> None:
        """Listen; if the database is unreachable now, keep trying in the background."""
        self._handler = handler
        if self._closed or self._supervisor is not None:
            return
        try:
            await self._listen()
        except (ClaudemeshError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("notify_listen_failed", extra={"error": describe(exc)})
        self._supervisor = asyncio.create_task(self._supervise(), name="pg-notify-listener")

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, timeout=10,
            server_settings={"application_name": "claudemesh-broker-listen"})
        try:
            conn.add_termination_listener(self._on_terminated)
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._lost.clear()

    def _on_terminated(self, conn: Any) -> None:
        if conn is self._conn and not self._closed:
            log.warning("notify_connection_lost")
            self._lost.set()

    async def _supervise(self) -> None:
        """Re-open the listening connection when it drops; ping it now and then."""
        delay = 0.1
        while not self._closed:
            if self._lost.is_set() or not self.listening:
                await self._drop_connection()
                try:
                    await self._listen()
                except Exception as exc:  # never let the listener die
                    log.warning("notify_reconnect_failed", extra={
                        "error": describe(exc), "retry_s": delay})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RECONNECT_MAX_S)
                    continue
                self.reconnects += 1
                log.info("notify_reconnected", extra={"reconnects": self.reconnects})
                delay = 0.1
            try:
                async with asyncio.timeout(_PING_EVERY_S):
                    await self._lost.wait()
            except TimeoutError:
                await self._ping()

    async def _ping(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            async with asyncio.timeout(10):
                await conn.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            log.warning("notify_ping_failed")
            self._lost.set()
            conn.terminate()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            if not conn.is_closed():
                await conn.remove_listener(CHANNEL, self._on_notification)
                async with asyncio.timeout(2):
                    await conn.close()
        if not conn.is_closed():
            conn.terminate()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, text: str) -> None:
        handler = self._handler
        if handler is None or self._closed:
            return
        decoded = _decode(text)
        if decoded is None:
            return
        kind, payload = decoded
        try:
            handler(kind, payload)
        except Exception:
            log.exception("notify_handler_failed", extra={"kind": kind})

    async def publish(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue the notification and wait until its batch went out (or failed, logged).

        Publishes that arrive while a batch is on the wire form the next batch, which goes
        out as one statement with the ``deliver`` wake-ups of one mesh merged: under load,
        one round trip carries many accepts' wake-ups.
        """
        self._outgoing.append((kind, payload))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._outgoing:
            batch, self._outgoing = self._outgoing, []
            texts: list[str] = []
            for kind, payload in _merged(batch):
                try:
                    texts += _notifications(kind, payload)
                except ValueError as exc:
                    log.error("notify_too_large", extra={"kind": kind,  # noqa: TRY400
                                                         "error": str(exc)})
            if not texts:
                continue
            try:
                with store_errors("publishing notifications"):
                    pool = await self._pool.get()
                    await pool.execute("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t",
                                       CHANNEL, texts)
            except ClaudemeshError as exc:
                log.warning("notify_publish_failed", extra={"count": len(texts),
                                                            "error": str(exc)})

    async def close(self) -> None:
        self._closed = True
        self._handler = None
        if self._flusher is not None and not self._flusher.done():  # let the last batch out
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.shield(self._flusher)
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()

