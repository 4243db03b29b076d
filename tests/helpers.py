"""Helpers shared by the integration tests: real daemon processes, real sockets, real files."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import nacl.signing

from claudemesh.config import Paths, paths_from_env
from claudemesh.sdk.client import Client, Response

# Nothing listens on the discard port: daemons of the API tests stay in backoff, queueing.
NO_BROKER = "ws://127.0.0.1:9/ws"


def short_tmpdir(prefix: str = "cmt") -> Path:
    """A temp dir short enough for a Unix socket path (sun_path is 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def mesh_entry(slug: str, name: str = "alice") -> dict[str, str]:
    key = nacl.signing.SigningKey.generate()
    pubkey = key.verify_key.encode().hex()
    return {
        "slug": slug, "mesh_id": f"mesh-{slug}", "member_id": f"member-{name}",
        "display_name": name, "broker_url": NO_BROKER,
        "pubkey": pubkey, "secret_key": key.encode().hex() + pubkey,
    }


def write_config(config_dir: Path, slugs: tuple[str, ...] = ("demo",)) -> list[dict[str, str]]:
    meshes = [mesh_entry(s) for s in slugs]
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = config_dir / "config.json"
    path.write_text(json.dumps({"version": 1, "meshes": meshes}))
    path.chmod(0o600)
    return meshes


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "claudemesh", *args], env=env, capture_output=True,
        text=True, timeout=timeout, check=False,
    )


def cli_in_process(env: dict[str, str], *args: str,
                   timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real CLI's code (``claudemesh.cli.main.main``), run in this process: what
    :func:`cli` does without an interpreter start and the CLI's imports (a third of a
    pair's set-up CPU). For fixtures' routine steps (join, mesh create);
    tests of the CLI itself use :func:`cli`.

    It runs on a thread of its own, so it works inside a test's running event loop
    (``mesh create`` calls ``asyncio.run``); meanwhile this thread waits, so swapping
    ``os.environ`` and ``sys.stdout``/``sys.stderr`` for the call is seen by nobody else.
    """
    from claudemesh.cli.main import main  # noqa: PLC0415
    from claudemesh.cli.output import PRINTER  # noqa: PLC0415

    def run() -> subprocess.CompletedProcess[str]:
        saved_env, saved_json = dict(os.environ), PRINTER.json
        out, err = io.StringIO(), io.StringIO()
        code: int | str | None = 0
        os.environ.clear()
        os.environ.update(env)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(list(args))
        except SystemExit as exc:
            code = exc.code
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            PRINTER.json = saved_json
        status = code if isinstance(code, int) else (0 if code is None else 1)
        return subprocess.CompletedProcess(["claudemesh", *args], status, out.getvalue(),
                                           err.getvalue())

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(timeout=timeout)


@dataclass
class DaemonHandle:
    config_dir: Path
    env: dict[str, str]
    meshes: list[dict[str, str]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> Paths:
        return paths_from_env(self.env)

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    def start(self, *extra: str) -> dict[str, Any]:
        # A subprocess, not cli_in_process: the daemon must not be this process's child,
        # or once it exits it stays a zombie that os.kill(pid, 0) still finds.
        result = cli(self.env, "daemon", "up", "--json", *extra)
        assert result.returncode == 0, (result.stdout, result.stderr)
        self.info = json.loads(result.stdout)
        return self.info

    def stop(self) -> None:
        # A subprocess too: a test's own threads (an SSE reader, an SDK event loop) run
        # while a daemon stops, and cli_in_process swaps this process's environment.
        result = cli(self.env, "daemon", "down", "--timeout", "20")
        assert result.returncode == 0, (result.stdout, result.stderr)

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        wait_gone(self.pid)

    def uds(self, timeout: float = 10.0) -> Client:
        return Client(self.paths, timeout=timeout)

    def tcp(self, timeout: float = 10.0) -> Client:
        return Client(self.paths, timeout=timeout, transport="tcp")

    def send(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
        return self.uds().request("POST", "/v1/send", body, headers)

    def outbox(self, status: str | None = None) -> list[dict[str, Any]]:
        query = "/v1/outbox?limit=500" + (f"&status={status}" if status else "")
        return list(self.uds().call("GET", query)["items"])

    def db_rows(self) -> list[tuple[Any, ...]]:
        """Rows read straight from outbox.db (read-only), independent of the API."""
        uri = f"file:{self.paths.outbox_db}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return conn.execute(
                "SELECT client_message_id, status, attempts, last_error FROM outbox"
                " ORDER BY rowid").fetchall()

    def token(self) -> str:
        return self.paths.token.read_text().strip()

    def tcp_port(self) -> int:
        return int(self.paths.http_port.read_text().strip())

    def cleanup(self) -> None:
        """Stop the daemon, kill it if that failed, remove its directory; then fail the
        test if the stop failed (a daemon that outlives SIGTERM for 20 s is a bug, which a
        quiet kill here once hid)."""
        failed: AssertionError | None = None
        try:
            self.stop()
        except AssertionError as exc:
            failed = exc
        if self.info.get("pid"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        shutil.rmtree(self.config_dir, ignore_errors=True)
        if failed is not None:
            raise AssertionError(f"the daemon did not stop cleanly: {failed}") from failed


class Cleanable(Protocol):
    def cleanup(self) -> None: ...


def cleanup_all(*parts: Cleanable | None) -> None:
    """Clean every part up even when one fails (so none outlives the test), then raise the
    first failure."""
    failures: list[AssertionError] = []
    for part in parts:
        if part is None:
            continue
        try:
            part.cleanup()
        except AssertionError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


def new_daemon(slugs: tuple[str, ...] = ("demo",), *, start: bool = True,
               extra: tuple[str, ...] = ()) -> DaemonHandle:
    config_dir = short_tmpdir()
    env = {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(config_dir)}
    env.pop("CLAUDEMESH_DAEMON_DIR", None)
    handle = DaemonHandle(config_dir, env, write_config(config_dir, slugs))
    if start:
        handle.start(*extra)
    return handle


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still alive after {timeout}s")


def raw_http(target: str | int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """Send raw request bytes to a Unix socket path or a loopback port; parse the answer."""
    if isinstance(target, int):
        sock = socket.create_connection(("127.0.0.1", target), timeout=timeout)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(target)
    with sock:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
    try:
        return resp.status, (json.loads(body) if body else {})
    except ValueError:
        return resp.status, {"text": body.decode("utf-8", "replace")}


def http_request(target: str | int, method: str, path: str, *, headers: dict[str, str],
                 body: bytes = b"", version: str = "1.1") -> tuple[int, dict[str, Any]]:
    """A request with exactly the given headers (no Host added unless given)."""
    lines = [f"{method} {path} HTTP/{version}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return raw_http(target, "\r\n".join(lines).encode() + body)
