"""The daemon process: startup, serve until a signal, graceful shutdown (R-LIFE-2/3, STYLE (b)11).

startup
    umask 077; directories 0700; take the instance lock (``flock`` on ``daemon.pid``);
    check the host fingerprint (a copied directory refuses to start, exit 4); token;
    open ``outbox.db`` (refuse to start if it is damaged, R-REC-2) and return its
    ``inflight`` rows to ``pending`` (R-REC-1); open ``inbox.db`` (set a damaged one aside
    and start empty, R-REC-3); bind the Unix socket 0600 and TCP on 127.0.0.1 (its port
    goes to ``http.port``); start one broker link, drain and inbound processor per mesh;
    wait up to 5 s for each link's first outcome; report ready. If every mesh's broker is
    incompatible (close 4010), stop instead and exit 6 (DESIGN §5.4).
serve
    await the first of: SIGTERM/SIGINT, or every link having reached a terminal state
    (incompatible -> exit 6, rejected -> exit 1). Nothing polls.
shutdown (the exit stack, in reverse order of startup)
    refuse new requests with 503 and end the event streams; stop listening and wait for
    requests in flight (``shutdown_grace_s``); close each broker link with 1001; close
    connections; finish queued writes, checkpoint and close the databases; remove
    ``http.port``, the socket and ``daemon.pid``; release the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from claudemesh.clock import iso_ms, now_ms
from claudemesh.config import Config
from claudemesh.daemon.directory import Peer, PeerDirectory
from claudemesh.daemon.events import EventBus
from claudemesh.daemon.files import bind_unix_socket, load_or_create_token
from claudemesh.daemon.identity import DEFAULT_ROOTS, HostCheck, HostRoots, check_host
from claudemesh.daemon.ipc.app import build_app
from claudemesh.daemon.ipc.auth import Transport
from claudemesh.daemon.ipc.context import DaemonContext
from claudemesh.daemon.link import LinkTimings
from claudemesh.daemon.link_rules import LinkState
from claudemesh.daemon.lock import InstanceLock
from claudemesh.daemon.memberships import FILE_NAME as MEMBERSHIPS_FILE
from claudemesh.daemon.memberships import Memberships
from claudemesh.daemon.meshes import Meshes, MeshRuntime, stop_tasks
from claudemesh.daemon.notify import notify_stopping
from claudemesh.daemon.receipts import LINGER_S, ReceiptPump
from claudemesh.daemon.retention import InboxRetention
from claudemesh.daemon.sessions import CHECK_INTERVAL_S, SessionRegistry
from claudemesh.daemon.store.inbox import INBOX_MIGRATIONS, InboxStore
from claudemesh.daemon.store.outbox import OutboxStore
from claudemesh.daemon.store.outbox_schema import OUTBOX_MIGRATIONS
from claudemesh.daemon.store.sessions import SessionRow
from claudemesh.daemon.topic_keys import FILE_NAME as TOPIC_KEYS_FILE
from claudemesh.daemon.topic_keys import TopicKeyring
from claudemesh.errors import (
    BrokerIncompatible,
    BrokerUntrusted,
    DaemonStartFailed,
    ExitCode,
    HostMismatch,
    StoreCorrupt,
)
from claudemesh.privatefs import ensure_private_dir, write_private_file
from claudemesh.sqlitedb.db import integrity_check, open_database
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["DaemonOptions", "ReadyInfo", "run_daemon"]

log = logging.getLogger(__name__)

MIN_BACKOFF_MS: Final = 500  # R-OBX-7: [reconnect] initial_backoff_ms, used as min_backoff
LOOPBACK: Final = "127.0.0.1"  # R-AUTH-8: never anything else


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    tcp: bool = True
    tcp_port: int = 0  # 0: the OS picks; the bound port goes to http.port
    link_timings: LinkTimings = field(default_factory=LinkTimings)
    host_roots: HostRoots = DEFAULT_ROOTS
    receipt_delay_s: float = LINGER_S  # how long receipts wait to share a batch
    session_check_s: float = CHECK_INTERVAL_S
    inbox_retention_s: float | None = None  # None: the config's ``inbox.retention_days``


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    pid: int
    sock: str
    tcp_port: int | None
    recovered_inflight: int
    links: dict[str, str]


async def run_daemon(config: Config, options: DaemonOptions,
                     *, on_ready: Callable[[ReadyInfo], None]) -> int:
    """Run until SIGTERM/SIGINT, or until no mesh is usable; returns the exit status.

    Raises:
        DaemonAlreadyRunning, StoreCorrupt, SocketPathTooLong, ConfigError,
        DaemonStartFailed, BrokerIncompatible: startup could not complete; everything
        taken is released.
    """
    os.umask(0o077)
    paths = config.paths
    ensure_private_dir(paths.config_dir)
    ensure_private_dir(paths.daemon_dir)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        lock = InstanceLock(paths.pid)
        lock.acquire()
        stack.callback(lock.release)
        _check_host(paths.daemon_dir, options.host_roots)
        ctx, recovered = _open_stores(config, options, stack)
        stack.push_async_callback(ctx.meshes.stop)
        tcp_port = await _serve(ctx, options, stack)
        _install_signals(stop, stack)
        ctx.meshes.start()
        retention = InboxRetention(ctx.inbox, clock=now_ms, retention_s=(
            config.inbox_retention_s if options.inbox_retention_s is None
            else options.inbox_retention_s))
        _start_background(ctx, stack, retention)
        await ctx.meshes.settled()
        links = {slug: str(r.link.state) for slug, r in ctx.meshes.by_slug.items()}
        if config.meshes and len(ctx.meshes.incompatible()) == len(config.meshes):
            raise _incompatible(ctx.meshes)
        untrusted = ctx.meshes.in_state(LinkState.UNTRUSTED)
        if config.meshes and len(untrusted) == len(config.meshes):
            raise BrokerUntrusted("no mesh is usable: " + "; ".join(
                f"{r.mesh.slug}: {r.link.last_error}" for r in untrusted))
        log.info("daemon_started", extra={
            "pid": os.getpid(), "sock": str(paths.sock), "tcp_port": tcp_port,
            "links": links, "recovered_inflight": recovered})
        on_ready(ReadyInfo(os.getpid(), str(paths.sock), tcp_port, recovered, links))
        status = await _serve_until(stop, ctx.meshes)
        notify_stopping(os.environ)
        log.info("daemon_stopping", extra={"requests_in_flight": ctx.state.in_flight,
                                           "exit_status": status})
    log.info("daemon_stopped")
    return status


async def _serve_until(stop: asyncio.Event, meshes: Meshes) -> int:
    stopped = asyncio.create_task(stop.wait())
    unusable = asyncio.create_task(meshes.all_terminal.wait())
    try:
        await asyncio.wait({stopped, unusable}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        unusable.cancel()
    if stop.is_set():
        return 0
    if len(meshes.incompatible()) == len(meshes.by_slug):
        log.error("no_usable_mesh: every broker is incompatible")
        return ExitCode.BROKER_INCOMPATIBLE
    if len(meshes.in_state(LinkState.UNTRUSTED)) == len(meshes.by_slug):
        log.error("no_usable_mesh: no broker presented its pinned key")
        return ExitCode.BROKER_UNTRUSTED
    log.error("no_usable_mesh: every broker link ended",
              extra={"links": {s: str(r.link.state) for s, r in meshes.by_slug.items()}})
    return ExitCode.FAILURE


def _check_host(daemon_dir: Path, roots: HostRoots) -> None:
    """R-ID-12: refuse to run on a copied daemon directory (exit 4, no restart loop)."""
    result = check_host(daemon_dir, roots)
    if result.outcome is HostCheck.MISMATCH:
        raise HostMismatch(result.message, stored_host_id=result.stored_host_id,
                           current_host_id=result.current_host_id)
    if result.outcome is HostCheck.UNREADABLE:
        log.warning("host_fingerprint_unreadable", extra={"detail": result.message})


def _incompatible(meshes: Meshes) -> BrokerIncompatible:
    reasons = {r.mesh.slug: r.link.failure.close_reason() for r in meshes.incompatible()
               if r.link.failure is not None}
    detail = "; ".join(f"{slug}: {reason['kind']} ({reason['feature']}: {reason['detail']})"
                       for slug, reason in reasons.items())
    return BrokerIncompatible(f"no mesh is usable: {detail}", close_reasons=reasons)


def _open_stores(config: Config, options: DaemonOptions,
                 stack: contextlib.AsyncExitStack) -> tuple[DaemonContext, int]:
    paths = config.paths
    token = load_or_create_token(paths.token)
    conn = open_database(paths.outbox_db, OUTBOX_MIGRATIONS)
    try:
        integrity_check(conn, "outbox.db")
        recovered = OutboxStore(conn).recover_inflight(now_ms(), retry_after_ms=MIN_BACKOFF_MS)
        (schema_version,) = conn.execute("PRAGMA user_version").fetchone()
    except BaseException:
        conn.close()
        raise
    if recovered:
        log.warning("inflight_rows_recovered", extra={"count": recovered})
    outbox = DbWorker(conn, name="outbox")
    outbox.start()
    stack.callback(outbox.stop)
    inbox_conn = _open_inbox(paths.inbox_db)
    directory = PeerDirectory()
    for peer in InboxStore(inbox_conn).peers():
        directory.upsert(peer["mesh"], Peer(peer["pubkey"], peer["display_name"]))
    inbox = DbWorker(inbox_conn, name="inbox")
    inbox.start()
    stack.callback(inbox.stop)
    bus = EventBus()
    meshes = Meshes([])
    sessions = SessionRegistry(inbox, clock=now_ms, on_change=meshes.sessions_changed,
                               check_interval_s=options.session_check_s)
    pump = ReceiptPump(config.meshes, inbox=inbox, outbox=outbox, clock=now_ms,
                       on_enqueue=meshes.notify, delay_s=options.receipt_delay_s)

    async def published() -> list[dict[str, Any]]:
        return [session_entry(row) for row in await sessions.live()]

    memberships = Memberships.load(paths.daemon_dir / MEMBERSHIPS_FILE)
    keyring = TopicKeyring(paths.daemon_dir / TOPIC_KEYS_FILE)
    runtimes = [MeshRuntime(m, outbox=outbox, inbox=inbox, bus=bus, directory=directory,
                            clock=now_ms, iso=iso_ms, timings=options.link_timings,
                            on_state=meshes.watch, on_stored=pump.notify, sessions=published,
                            memberships=memberships, keyring=keyring)
                for m in config.meshes]
    meshes.by_slug = {r.mesh.slug: r for r in runtimes}
    ctx = DaemonContext(config=config, outbox=outbox, inbox=inbox, directory=directory,
                        bus=bus, meshes=meshes, token=token, schema_version=schema_version,
                        sessions=sessions, receipts=pump)
    return ctx, recovered


def session_entry(row: SessionRow) -> dict[str, Any]:
    """A session as the broker's member_sessions list holds it (docs/protocol.md)."""
    entry: dict[str, Any] = {"name": row.name}
    for key in ("summary", "status", "harness"):
        value = getattr(row, key)
        if value is not None:
            entry[key] = value
    return entry


def _start_background(ctx: DaemonContext, stack: contextlib.AsyncExitStack,
                      retention: InboxRetention) -> None:
    """The session reaper, the receipt pump and the inbox retention sweep; cancelled
    first on the way out."""
    tasks = [asyncio.create_task(ctx.sessions.run(), name="session-reaper"),
             asyncio.create_task(ctx.receipts.run(), name="receipt-pump"),
             asyncio.create_task(retention.run(), name="inbox-retention")]

    stack.push_async_callback(stop_tasks, tasks)


def _open_inbox(path: Path) -> sqlite3.Connection:
    """R-REC-3: a damaged inbox is set aside and replaced; it is a cache of the broker's."""
    conn = open_database(path, INBOX_MIGRATIONS)
    try:
        integrity_check(conn, "inbox.db")
    except StoreCorrupt:
        conn.close()
        aside = path.with_name(f"{path.name}.corrupt-{now_ms()}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
        log.exception("inbox_corruption_recovered", extra={"moved_to": str(aside)})
        conn = open_database(path, INBOX_MIGRATIONS)
    return conn


async def _serve(ctx: DaemonContext, options: DaemonOptions,
                 stack: contextlib.AsyncExitStack) -> int | None:
    paths = ctx.config.paths
    grace = ctx.config.limits.shutdown_grace_s
    sock = bind_unix_socket(paths.sock)
    stack.callback(_unlink, paths.sock)
    uds = web.AppRunner(build_app(ctx, Transport.UDS), access_log=None,
                        handle_signals=False, shutdown_timeout=grace)
    await uds.setup()
    stack.push_async_callback(uds.cleanup)
    sites: list[web.BaseSite] = [web.SockSite(uds, sock)]
    await sites[0].start()
    tcp_port: int | None = None
    if options.tcp:
        tcp = web.AppRunner(build_app(ctx, Transport.TCP), access_log=None,
                            handle_signals=False, shutdown_timeout=grace)
        await tcp.setup()
        stack.push_async_callback(tcp.cleanup)
        sites.append(web.TCPSite(tcp, LOOPBACK, options.tcp_port))
        try:
            await sites[-1].start()
        except OSError as exc:
            raise DaemonStartFailed(
                f"cannot listen on {LOOPBACK}:{options.tcp_port}: {exc.strerror};"
                " choose another --tcp-port, or --no-tcp") from exc
        tcp_port = int(tcp.addresses[0][1])
        write_private_file(paths.http_port, f"{tcp_port}\n".encode())
        stack.callback(_unlink, paths.http_port)
    stack.push_async_callback(_drain_requests, ctx, sites)
    stack.callback(ctx.bus.close)
    # Runs first on the way out: requests arriving from now on get 503 shutting_down.
    stack.callback(setattr, ctx.state, "shutting_down", True)
    return tcp_port


async def _drain_requests(ctx: DaemonContext, sites: list[web.BaseSite]) -> None:
    """Stop listening, then let every request in flight finish before aiohttp's cleanup.

    aiohttp drops the bytes a connection receives once its own shutdown begins, so a
    request whose body is still arriving could never complete if we handed over at once.
    """
    for site in sites:
        await site.stop()
    grace = ctx.config.limits.shutdown_grace_s
    try:
        async with asyncio.timeout(grace):
            await ctx.state.idle.wait()
    except TimeoutError:
        log.warning("shutdown_grace_expired", extra={"requests_in_flight": ctx.state.in_flight,
                                                     "grace_s": grace})


def _install_signals(stop: asyncio.Event, stack: contextlib.AsyncExitStack) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
        stack.callback(loop.remove_signal_handler, sig)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
