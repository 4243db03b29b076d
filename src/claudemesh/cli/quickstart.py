"""``claudemesh up`` / ``claudemesh down``: the one-command start on a fresh machine.

``up`` makes sure of four things, each only if it is missing, so running it again is
harmless: a local broker on the embedded SQLite store (``127.0.0.1:7900``, store in
``$CLAUDEMESH_CONFIG_DIR/broker/broker.db``), a mesh on it, this machine joined to that mesh,
and a running daemon that knows the mesh (it is restarted when the join is new). ``down``
stops the daemon and the broker that ``up`` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import click

from claudemesh.cli.broker import default_db
from claudemesh.cli.common import current_paths, json_option
from claudemesh.cli.output import PRINTER
from claudemesh.clock import now_ms
from claudemesh.config import Paths
from claudemesh.errors import BrokerUnreachable, InvalidRequest

__all__ = ["down", "up"]

BROKER_READY_S: Final = 15.0


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.3):
        return True
    return False


def _broker_pid_file(paths: Paths) -> Path:
    return paths.config_dir / "broker" / "broker.pid"


def ensure_broker(paths: Paths, port: int) -> str:
    """Start a local broker unless something already listens on the port."""
    if _listening(port):
        return "already running"
    from claudemesh.privatefs import ensure_private_dir, write_private_file  # noqa: PLC0415

    broker_dir = paths.config_dir / "broker"
    ensure_private_dir(broker_dir)
    log_fd = os.open(broker_dir / "broker.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "claudemesh", "broker", "up", "--port", str(port),
             "--db", str(default_db()), "--json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_fd,
            start_new_session=True, text=True)
    finally:
        os.close(log_fd)
    assert proc.stdout is not None
    deadline = time.monotonic() + BROKER_READY_S
    line = ""
    while time.monotonic() < deadline and proc.poll() is None and not line:
        line = proc.stdout.readline()
    if not line:
        raise BrokerUnreachable(f"the local broker did not start; see {broker_dir/'broker.log'}")
    write_private_file(_broker_pid_file(paths), f"{proc.pid}\n".encode())
    json.loads(line)
    return f"started (pid {proc.pid})"


def ensure_membership(paths: Paths, url: str, mesh_name: str, name: str) -> str | None:
    """Create (or reuse) the mesh and join it, unless config.json already has it."""
    import asyncio  # noqa: PLC0415

    from claudemesh.broker.admin import MeshOptions, create_mesh, mint_invite  # noqa: PLC0415
    from claudemesh.broker.store import open_store  # noqa: PLC0415
    from claudemesh.config import MeshConfig, add_mesh, load_meshes  # noqa: PLC0415
    from claudemesh.crypto import MemberKey  # noqa: PLC0415
    from claudemesh.joining import join_mesh  # noqa: PLC0415
    from claudemesh.protocol.invite import decode_invite  # noqa: PLC0415

    if any(m.broker_url == url for m in load_meshes(paths.config_file)):
        return None

    async def invite() -> str:
        store = open_store(default_db())
        try:
            now = now_ms()
            mesh = await store.get_mesh(mesh_name) or await create_mesh(
                store, mesh_name, MeshOptions(), now_ms=now)
            return await mint_invite(store, mesh, broker_url=url, max_uses=1, valid_hours=1,
                                     now_ms=now)
        finally:
            await store.close()

    decoded = decode_invite(asyncio.run(invite()))
    key = MemberKey.generate()
    result = join_mesh(decoded, key, name)
    add_mesh(paths.config_file, MeshConfig(
        slug=mesh_name, mesh_id=decoded.mesh_id, member_id=result.member_id,
        display_name=result.display_name, broker_url=url, pubkey=key.pubkey,
        secret_key=key.secret_key))
    return str(result.display_name)


@click.command()
@click.option("--name", help="Your display name [default: your user name].")
@click.option("--mesh-name", default="local", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=7900, show_default=True)
@json_option
def up(name: str | None, mesh_name: str, port: int) -> int:
    """Start everything on this machine: a local broker, a mesh, your membership, the daemon."""
    from claudemesh.cli.mesh import default_display_name  # noqa: PLC0415
    from claudemesh.daemon.process import spawn_daemon  # noqa: PLC0415
    from claudemesh.privatefs import ensure_private_dir  # noqa: PLC0415
    from claudemesh.sdk.client import Client  # noqa: PLC0415
    from claudemesh.sdk.discovery import probe  # noqa: PLC0415

    paths = current_paths()
    ensure_private_dir(paths.config_dir)
    url = f"ws://127.0.0.1:{port}/ws"
    broker = ensure_broker(paths, port)
    joined = ensure_membership(paths, url, mesh_name, name or default_display_name())
    api = Client(paths, timeout=2.0)
    running = probe(api)
    if running and joined:
        subprocess.run([sys.executable, "-m", "claudemesh", "daemon", "down"],
                       check=False, capture_output=True)
        running = False
    daemon = "already running" if running else f"started (pid {spawn_daemon(paths, [])['pid']})"
    data: dict[str, Any] = {"broker": {"url": url, "state": broker},
                            "mesh": mesh_name, "joined_as": joined, "daemon": daemon}
    PRINTER.result(data, "\n".join([
        f"broker  {url}: {broker}",
        f"mesh    {mesh_name}: " + (f"joined as {joined}" if joined else "already joined"),
        f"daemon  {daemon}",
        "",
        "next:",
        "  claudemesh peers                      who is in the mesh",
        "  claudemesh send <name> 'hello'        a DM, end-to-end encrypted",
        "  claudemesh inbox                      what you received",
        "  claudemesh events                     a live stream (NDJSON)",
        f"  claudemesh mesh invite {mesh_name}       an invite for another member"
        " (on another machine: start the broker with --host 0.0.0.0)",
    ]))
    return 0


def _is_our_broker(pid: int) -> bool:
    """Never signal a recycled pid: the process must be ``claudemesh broker up``."""
    result = subprocess.run(["ps", "-p", str(pid), "-o", "command="],  # noqa: S603, S607
                            capture_output=True, text=True, check=False)
    return "claudemesh" in result.stdout and "broker" in result.stdout


@click.command()
@json_option
def down() -> int:
    """Stop the daemon and the local broker that `claudemesh up` started."""
    paths = current_paths()
    daemon = subprocess.run([sys.executable, "-m", "claudemesh", "daemon", "down"],
                            check=False, capture_output=True, text=True)
    pid_file = _broker_pid_file(paths)
    broker = "not started by claudemesh up"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid and _is_our_broker(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            broker = f"stopped (pid {pid})"
    elif pid:
        broker = "was not running"
    pid_file.unlink(missing_ok=True)
    if daemon.returncode not in (0,):
        raise InvalidRequest(f"stopping the daemon failed: {daemon.stderr.strip()}")
    PRINTER.result({"daemon": daemon.stdout.strip(), "broker": broker},
                   f"daemon: {daemon.stdout.strip()}\nbroker: {broker}")
    return 0
