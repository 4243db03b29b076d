"""``claudemesh daemon ...``: run, stop and inspect the local daemon.

Each command parses, calls the daemon (or :mod:`claudemesh.daemon.process`, which starts
and stops it) and hands a dict plus its text rendering to :data:`PRINTER`. The server
stack (aiohttp, sqlite) is imported only inside ``up --foreground``; everything else uses
the SDK's stdlib client.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from claudemesh.cli.common import client, current_paths, json_option, service_report
from claudemesh.cli.output import PRINTER, format_duration, format_table
from claudemesh.cli.schedule import deliver_at, schedule_options
from claudemesh.config import Paths
from claudemesh.daemon.process import STOP_TIMEOUT_S, report_ready, spawn_daemon, stop_daemon
from claudemesh.errors import ClaudemeshError, DaemonUnreachable

if TYPE_CHECKING:
    from claudemesh.sdk.messages import OutboxItem

__all__ = ["daemon"]

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def daemon() -> None:
    """Run and inspect the local daemon."""


# -- up --------------------------------------------------------------------------------


@daemon.command("up")
@click.option("--foreground", is_flag=True, help="Stay attached; log JSON lines to stderr.")
@click.option("--no-tcp", is_flag=True, help="Serve only the Unix socket.")
@click.option("--tcp-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Loopback TCP port; 0 lets the OS pick (written to http.port).")
@click.option("--ready-fd", type=int, hidden=True)
@click.option("--log-file", is_flag=True, hidden=True)
@click.option("--host-root", hidden=True, help="Tests only: read host ids under this root.")
@click.option("--request-timeout", type=click.FloatRange(0.1, 300), hidden=True,
              help="Tests only: seconds to wait for the broker's answer to a frame.")
@click.option("--ping-interval", type=click.FloatRange(0.1, 300), hidden=True,
              help="Tests only: seconds between the link's keepalive pings.")
@click.option("--ping-timeout", type=click.FloatRange(0.1, 300), hidden=True,
              help="Tests only: seconds to wait for a pong before the link is cut.")
@click.option("--receipt-delay", type=click.FloatRange(0, 600), hidden=True,
              help="Tests only: seconds to hold receipts back before sending them.")
@click.option("--session-check", type=click.FloatRange(0.1, 60), hidden=True,
              help="Tests only: seconds between checks that session owners are alive.")
@click.option("--inbox-retention", type=click.FloatRange(0.1, 1e9), hidden=True,
              help="Tests only: keep inbox rows this many seconds (config: retention_days).")
@json_option
def up(*, foreground: bool, no_tcp: bool, tcp_port: int, ready_fd: int | None,
       log_file: bool, host_root: str | None, request_timeout: float | None,
       ping_interval: float | None, ping_timeout: float | None,
       receipt_delay: float | None, session_check: float | None,
       inbox_retention: float | None) -> int:
    """Start the daemon (detached unless --foreground)."""
    paths = current_paths()
    timings = {"request_timeout_s": request_timeout, "ping_interval_s": ping_interval,
               "ping_timeout_s": ping_timeout}
    if foreground:
        return _run_foreground(paths, tcp=not no_tcp, tcp_port=tcp_port, ready_fd=ready_fd,
                               log_file=log_file, host_root=host_root, timings=timings,
                               receipt_delay=receipt_delay, session_check=session_check,
                               inbox_retention=inbox_retention)
    extra = ["--no-tcp"] if no_tcp else ["--tcp-port", str(tcp_port)]
    if host_root:
        extra += ["--host-root", host_root]
    for flag, value in (("--request-timeout", request_timeout),
                        ("--ping-interval", ping_interval), ("--ping-timeout", ping_timeout),
                        ("--receipt-delay", receipt_delay), ("--session-check", session_check),
                        ("--inbox-retention", inbox_retention)):
        if value is not None:
            extra += [flag, str(value)]
    info = spawn_daemon(paths, extra)
    PRINTER.result(info, _ready_text(info))
    return 0


def _ready_text(info: dict[str, Any]) -> str:
    tcp = f", tcp 127.0.0.1:{info['tcp_port']}" if info.get("tcp_port") else ", no tcp"
    text = f"daemon running (pid {info['pid']}): {info['sock']}{tcp}"
    if info.get("recovered_inflight"):
        text += f"\n{info['recovered_inflight']} inflight row(s) returned to pending"
    for slug, state in (info.get("links") or {}).items():
        text += f"\nmesh {slug}: {state}"
    return text


def _run_foreground(paths: Paths, *, tcp: bool, tcp_port: int, ready_fd: int | None,
                    log_file: bool, host_root: str | None,
                    timings: dict[str, float | None] | None = None,
                    receipt_delay: float | None = None,
                    session_check: float | None = None,
                    inbox_retention: float | None = None) -> int:
    """Run the daemon in this process; ``timings`` holds the LinkTimings fields the
    hidden test options set (None: the default)."""
    import asyncio  # noqa: PLC0415 - the server stack stays off the CLI's hot path

    from claudemesh.config import load_config  # noqa: PLC0415
    from claudemesh.daemon.link import LinkTimings  # noqa: PLC0415
    from claudemesh.daemon.notify import notify_ready  # noqa: PLC0415
    from claudemesh.daemon.receipts import LINGER_S  # noqa: PLC0415
    from claudemesh.daemon.run import DaemonOptions, ReadyInfo, run_daemon  # noqa: PLC0415
    from claudemesh.daemon.sessions import CHECK_INTERVAL_S  # noqa: PLC0415
    from claudemesh.logs import configure_logging  # noqa: PLC0415
    from claudemesh.privatefs import ensure_private_dir  # noqa: PLC0415

    def on_ready(info: ReadyInfo) -> None:
        data = {"ok": True, "pid": info.pid, "sock": info.sock, "tcp_port": info.tcp_port,
                "recovered_inflight": info.recovered_inflight, "links": info.links}
        notify_ready(os.environ)  # systemd Type=notify: the unit is up now
        if ready_fd is not None:
            report_ready(ready_fd, data)
        elif PRINTER.json:
            PRINTER.result(data, "")

    os.umask(0o077)
    try:
        ensure_private_dir(paths.daemon_dir)
        configure_logging(file=paths.log if log_file else None)
        config = load_config(paths)
        link_timings = LinkTimings(**{k: v for k, v in (timings or {}).items()
                                      if v is not None})
        linger = LINGER_S if receipt_delay is None else receipt_delay
        options = DaemonOptions(tcp=tcp, tcp_port=tcp_port, host_roots=_roots(host_root),
                                link_timings=link_timings, receipt_delay_s=linger,
                                session_check_s=session_check or CHECK_INTERVAL_S,
                                inbox_retention_s=inbox_retention)
        return asyncio.run(run_daemon(config, options, on_ready=on_ready))
    except ClaudemeshError as exc:
        if ready_fd is not None:
            report_ready(ready_fd, {"ok": False, **exc.to_wire(), "exit_code": exc.exit_code})
        raise


# -- status / version / down -----------------------------------------------------------


def _unreachable(paths: Paths, exc: DaemonUnreachable) -> DaemonUnreachable:
    """Say whether a process holds the lock: alive-but-silent is not the same as absent."""
    from claudemesh.daemon.lock import lock_holder  # noqa: PLC0415

    pid = lock_holder(paths.pid)
    if pid is None:
        return DaemonUnreachable(f"no daemon is running for {paths.daemon_dir}; start one"
                                 " with `claudemesh daemon up`")
    return DaemonUnreachable(f"daemon pid {pid} holds the lock but does not answer on"
                             f" {paths.sock}: {exc.detail}")


@daemon.command("status")
@json_option
def status() -> int:
    """Show whether the daemon runs, its queue and each mesh's link."""
    paths = current_paths()
    try:
        health = client(paths, timeout=2.0).health()
    except DaemonUnreachable as exc:
        raise _unreachable(paths, exc) from None
    PRINTER.result(health, format_status(health, paths))
    return 0


def _scheduled(health: dict[str, Any]) -> str:
    n = health.get("scheduled") or 0
    return f" {n} scheduled," if n else ""


def format_status(health: dict[str, Any], paths: Paths) -> str:
    lines = [
        f"daemon: running (pid {health['pid']}, up {format_duration(health['uptime_s'])},"
        f" v{health['daemon_version']})",
        f"socket: {paths.sock}",
        f"outbox: {health['queue_depth']} queued ({health['inflight']} inflight),"
        f"{_scheduled(health)} {health['dead']} dead",
    ]
    if not health["meshes"]:
        lines.append("meshes: none joined")
    for mesh in health["meshes"]:
        lines.append(f"mesh {mesh['slug']}: {mesh['link']}  {mesh['broker_url']}"
                     f"  queue {mesh['queue_depth']}, dead {mesh['dead']}")
    return "\n".join(lines)


@daemon.command("version")
@json_option
def version() -> int:
    """Show the CLI's and the running daemon's versions."""
    from claudemesh import __version__  # noqa: PLC0415

    paths = current_paths()
    try:
        info = client(paths, timeout=2.0).version().raw
    except DaemonUnreachable as exc:
        raise _unreachable(paths, exc) from None
    data = {"cli_version": __version__, "daemon": info}
    PRINTER.result(data, f"cli {__version__}\ndaemon {info['daemon_version']}"
                         f" (ipc {info['ipc_api']}, schema {info['schema_version']})")
    return 0


@daemon.command("down")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=STOP_TIMEOUT_S,
              show_default=True, help="Seconds to wait for a clean exit.")
@json_option
def down(timeout: float) -> int:
    """Stop the daemon gracefully (SIGTERM, then wait for its lock to be released)."""
    pid = stop_daemon(current_paths(), timeout)
    if pid is None:
        PRINTER.result({"stopped": False, "running": False}, "daemon is not running")
        return 0
    PRINTER.result({"stopped": True, "pid": pid}, f"daemon stopped (pid {pid})")
    return 0


@daemon.command("install-service")
@click.option("--dry-run", is_flag=True, help="Print the unit/plist and the commands only.")
@click.option("--allow-ci", is_flag=True, help="Install even in a CI environment.")
@json_option
def install_service(dry_run: bool, allow_ci: bool) -> int:
    """Run the daemon as a systemd user service (Linux) or a launchd agent (macOS)."""
    from pathlib import Path  # noqa: PLC0415

    from claudemesh.daemon.service import install, spec_from_env  # noqa: PLC0415

    spec = spec_from_env(os.environ, home=Path.home())
    report = install(spec, env=os.environ, dry_run=dry_run, allow_ci=allow_ci)
    return service_report(report, show_unit=dry_run)


@daemon.command("uninstall-service")
@click.option("--dry-run", is_flag=True, help="Print the commands only.")
@json_option
def uninstall_service(dry_run: bool) -> int:
    """Stop and remove the service installed by install-service."""
    from pathlib import Path  # noqa: PLC0415

    from claudemesh.daemon.service import uninstall  # noqa: PLC0415

    report = uninstall(home=Path.home(), env=os.environ, dry_run=dry_run)
    return service_report(report)


def _roots(host_root: str | None) -> Any:
    from pathlib import Path  # noqa: PLC0415

    from claudemesh.daemon.identity import DEFAULT_ROOTS, HostRoots  # noqa: PLC0415

    return DEFAULT_ROOTS if host_root is None else HostRoots(root=Path(host_root))


@daemon.command("accept-host")
@click.option("--host-root", hidden=True, help="Tests only: read host ids under this root.")
@json_option
def accept_host_cmd(host_root: str | None) -> int:
    """Accept this machine as the daemon's host after a hardware move (not for a clone)."""
    from claudemesh.daemon.identity import accept_host  # noqa: PLC0415
    from claudemesh.privatefs import ensure_private_dir  # noqa: PLC0415

    paths = current_paths()
    ensure_private_dir(paths.daemon_dir)
    result = accept_host(paths.daemon_dir, _roots(host_root))
    PRINTER.result({"accepted": True, "host_id": result.current_host_id,
                    "mac": result.current_mac, "fingerprint": result.fingerprint},
                   f"host accepted: {result.message}")
    return 0


# -- logs / metrics --------------------------------------------------------------------


@daemon.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", type=click.IntRange(0), default=50, show_default=True)
def logs(follow: bool, lines: int) -> int:
    """Print the daemon's log (JSON lines); under systemd it is in the journal instead."""
    path = current_paths().log
    if not path.exists():
        raise DaemonUnreachable(
            f"no log at {path}; a daemon run by systemd logs to the journal:"
            " `journalctl --user -u claudemesh-daemon -f`")
    for line in tail_lines(path, lines):
        sys.stdout.write(line)
    sys.stdout.flush()
    if follow:
        follow_file(path)
    return 0


def tail_lines(path: Any, count: int) -> list[str]:
    """The last ``count`` lines of a file, without reading all of a large one."""
    if count == 0:
        return []
    with open(path, "rb") as handle:  # noqa: PTH123 - seek from the end
        handle.seek(0, 2)
        size = handle.tell()
        chunk = b""
        while size > 0 and chunk.count(b"\n") <= count:
            step = min(size, 64 * 1024)
            size -= step
            handle.seek(size)
            chunk = handle.read(step) + chunk
    return [line.decode("utf-8", "replace") + "\n" for line in chunk.splitlines()[-count:]]


def follow_file(path: Any) -> None:
    """``tail -F``: keep reading, and reopen when the log is rotated."""
    handle = open(path, encoding="utf-8", errors="replace")  # noqa: PTH123, SIM115
    handle.seek(0, 2)
    inode = os.fstat(handle.fileno()).st_ino
    try:
        while True:
            line = handle.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
                continue
            time.sleep(0.2)
            try:
                if os.stat(path).st_ino != inode:  # noqa: PTH116
                    handle.close()
                    handle = open(path, encoding="utf-8", errors="replace")  # noqa: PTH123, SIM115
                    inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                continue
    except KeyboardInterrupt:
        return
    finally:
        handle.close()


@daemon.command("metrics")
def metrics() -> int:
    """Print /v1/metrics (Prometheus text)."""
    sys.stdout.write(client(current_paths()).metrics())
    return 0


# -- outbox ----------------------------------------------------------------------------


@daemon.group("outbox", invoke_without_command=True)
@click.pass_context
def outbox(ctx: click.Context) -> None:
    """Inspect the outbox, recover failed sends, cancel scheduled ones."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(outbox_list)


def _status_flag(name: str, value: str, help_text: str) -> Callable[[F], F]:
    return click.option(f"--{name}", "status_filter", flag_value=value, help=help_text)


@outbox.command("list")
@_status_flag("scheduled", "scheduled", "Only rows waiting for their deliver_at.")
@_status_flag("failed", "dead", "Only dead rows (dead letters).")
@_status_flag("pending", "pending", "Only rows waiting to be sent.")
@_status_flag("inflight", "inflight", "Only rows being sent now.")
@_status_flag("done", "done", "Only rows the broker accepted.")
@_status_flag("aborted", "aborted", "Only rows retired by requeue or abort.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@json_option
def outbox_list(status_filter: str | None = None, limit: int = 50) -> int:
    """List outbox rows, newest first."""
    items = client(current_paths()).outbox(status=status_filter, limit=limit)
    PRINTER.result({"items": [i.raw for i in items]}, format_outbox(items))
    return 0


def format_outbox(items: list[OutboxItem]) -> str:
    if not items:
        return "outbox is empty"
    if any(i.deliver_at for i in items):  # scheduled sends: say when they go out
        return format_table(
            ["ID", "CLIENT_MESSAGE_ID", "STATUS", "TRIES", "MESH", "TO", "DELIVER_AT",
             "LAST_ERROR"],
            [(i.id, i.client_message_id, i.status, i.attempts, i.mesh, _short(i.destination),
              i.deliver_at or "-", i.last_error) for i in items])
    rows = [(i.id, i.client_message_id, i.status, i.attempts, i.mesh, _short(i.destination),
             i.enqueued_at, i.last_error) for i in items]
    return format_table(["ID", "CLIENT_MESSAGE_ID", "STATUS", "TRIES", "MESH", "TO",
                         "ENQUEUED", "LAST_ERROR"], rows)


def _short(destination: str) -> str:
    return f"{destination[:12]}…" if len(destination) == 64 else destination


@outbox.command("requeue")
@click.argument("row_id")
@click.option("--new-client-id", "--new-id", "new_client_id",
              help="Id for the new row (default: a fresh ULID). Never one used before.")
@schedule_options
@json_option
def outbox_requeue(row_id: str, new_client_id: str | None, delay: str | None = None,
                   at: str | None = None) -> int:
    """Retire a pending, scheduled or dead row and queue a copy under a new
    client_message_id (--in/--at reschedule it; default: the old row's time)."""
    result = client(current_paths()).requeue(row_id, new_client_id, deliver_at(delay, at))
    verb = (f"scheduled for {result['deliver_at']}" if result.get("status") == "scheduled"
            else "queued")
    text = (f"row {result['aborted_row_id']} aborted; new row {result['new_row_id']}"
            f" {verb} as {result['new_client_message_id']}")
    if "warning" in result:
        text += f"\nwarning: {result['warning']}"
    PRINTER.result(result, text)
    return 0


@outbox.command("abort")
@click.argument("row_id")
@json_option
def outbox_abort(row_id: str) -> int:
    """Cancel a scheduled, pending or dead row for good (nothing is queued instead)."""
    result = client(current_paths()).abort(row_id)
    text = f"row {result['aborted_row_id']} aborted (was {result['previous_status']})"
    if "warning" in result:
        text += f"\nwarning: {result['warning']}"
    PRINTER.result(result, text)
    return 0
