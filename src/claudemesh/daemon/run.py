"""The daemon process: startup, serve until a signal, graceful shutdown (R-LIFE-2/3, STYLE (b)11).

startup
    umask 077; directories 0700; take the instance lock (``flock`` on ``daemon.pid``);
    token; open ``outbox.db``, check its integrity (R-REC-2), return ``inflight`` rows to
    ``pending`` (R-REC-1); start the writer thread; bind the Unix socket 0600 (replacing a
    stale one, which is safe only because we hold the lock) and TCP on 127.0.0.1 (its
    port goes to ``http.port``); report ready.
serve
    await an ``asyncio.Event`` that SIGTERM/SIGINT set. Nothing polls.
shutdown (the exit stack, in reverse order of startup)
    refuse new requests with 503; stop listening and wait until requests in flight have
    finished (``shutdown_grace_s``); close connections; finish queued writes, checkpoint
    and close the database; remove ``http.port``, the socket and ``daemon.pid``; release the lock.

The broker links and the drain loop (issue 4) start after the store and stop before it:
they hang off ``DaemonContext.outbox_changed`` and the store's ``claim_due``/``mark_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from claudemesh.config import Config
from claudemesh.daemon.directory import PeerDirectory
from claudemesh.daemon.files import bind_unix_socket, load_or_create_token
from claudemesh.daemon.ipc.app import build_app
from claudemesh.daemon.ipc.auth import Transport
from claudemesh.daemon.ipc.context import DaemonContext, now_ms
from claudemesh.daemon.lock import InstanceLock
from claudemesh.daemon.store.outbox import OUTBOX_MIGRATIONS, OutboxStore
from claudemesh.errors import DaemonStartFailed
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


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    pid: int
    sock: str
    tcp_port: int | None
    recovered_inflight: int


async def run_daemon(config: Config, options: DaemonOptions,
                     *, on_ready: Callable[[ReadyInfo], None]) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status (0 after a clean shutdown).

    Raises:
        DaemonAlreadyRunning, StoreCorrupt, SocketPathTooLong, ConfigError,
        DaemonStartFailed: startup could not complete; everything taken is released.
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
        ctx, recovered = _open_outbox(config, stack)
        tcp_port = await _serve(ctx, options, stack)
        _install_signals(stop, stack)
        log.info("daemon_started", extra={
            "pid": os.getpid(), "sock": str(paths.sock), "tcp_port": tcp_port,
            "meshes": [m.slug for m in config.meshes], "recovered_inflight": recovered})
        on_ready(ReadyInfo(os.getpid(), str(paths.sock), tcp_port, recovered))
        await stop.wait()
        log.info("daemon_stopping", extra={"requests_in_flight": ctx.state.in_flight})
    log.info("daemon_stopped")
    return 0


def _open_outbox(config: Config, stack: contextlib.AsyncExitStack) -> tuple[DaemonContext, int]:
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
    worker = DbWorker(conn, name="outbox")
    worker.start()
    stack.callback(worker.stop)
    ctx = DaemonContext(config=config, outbox=worker, directory=PeerDirectory(), token=token,
                        schema_version=schema_version)
    return ctx, recovered


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
