"""Starting a detached daemon and stopping a running one, from outside the daemon.

Start: ``<python> -m claudemesh daemon up --foreground --ready-fd N`` in a new session;
the child writes one JSON line to that pipe (:func:`report_ready`) once its API answers,
or its error if it could not start, and the parent (:func:`spawn_daemon`) waits for it.
The CLI (``daemon up``, ``up``) and the SDK (:mod:`claudemesh.sdk.discovery`) share this
one implementation. Stop: SIGTERM the pid in the lock, then wait for the lock to be
released, which the daemon does last on its way out (:mod:`claudemesh.daemon.run`).

Only the standard library is imported here: the SDK pulls this module in when it must
start a daemon, and neither it nor the CLI may pay for the server stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, Final

from claudemesh.config import Paths
from claudemesh.errors import DaemonStartFailed, DaemonStopFailed, error_classes

__all__ = ["READY_TIMEOUT_S", "STOP_TIMEOUT_S", "report_ready", "spawn_daemon", "stop_daemon"]

READY_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 15.0


def spawn_daemon(paths: Paths, extra: list[str]) -> dict[str, Any]:
    """Start ``daemon up --foreground`` in a new session; wait for its ready line.

    The daemon serves ``paths`` whatever the caller's environment says (the SDK passes
    paths of its own), and the caller's umask is restored: a library must not change it.
    """
    from claudemesh.privatefs import ensure_private_dir  # noqa: PLC0415

    env = {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(paths.config_dir),
           "CLAUDEMESH_DAEMON_DIR": str(paths.daemon_dir)}
    umask = os.umask(0o077)
    try:
        ensure_private_dir(paths.daemon_dir)
        read_end, write_end = os.pipe()
        log_fd = os.open(paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        cmd = [sys.executable, "-m", "claudemesh", "daemon", "up", "--foreground",
               "--ready-fd", str(write_end), "--log-file", *extra]
        try:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                cmd, pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=log_fd,
                stderr=log_fd, start_new_session=True, env=env)
        finally:
            os.close(write_end)
            os.close(log_fd)
    finally:
        os.umask(umask)
    try:
        line = _read_line(read_end, proc, READY_TIMEOUT_S)
    finally:
        os.close(read_end)
    if line is None:
        proc.terminate()
        raise DaemonStartFailed(f"the daemon did not report ready within"
                                f" {READY_TIMEOUT_S:g}s; see {paths.log}")
    if not line:
        status = proc.wait(timeout=10)
        raise DaemonStartFailed(f"the daemon exited with status {status} before it was"
                                f" ready; see {paths.log}")
    report = json.loads(line)
    if not report.get("ok"):
        cls = error_classes().get(report.get("error", ""), DaemonStartFailed)
        raise cls(report.get("detail"))
    return {k: v for k, v in report.items() if k != "ok"}


def _read_line(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes | None:
    """One line from ``fd``: bytes, ``b""`` on EOF, ``None`` on timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                return buf
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return buf
        buf += chunk
        if b"\n" in buf:
            return buf.split(b"\n", 1)[0]
    return None


def report_ready(fd: int, data: dict[str, Any]) -> None:
    """The child's side of the ready pipe: one JSON line, then close; a parent that has
    gone away is not the daemon's failure."""
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(data) + "\n").encode())
        os.close(fd)


def stop_daemon(paths: Paths, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM the daemon holding the lock and wait until it lets go; its pid, or None
    when no daemon runs.

    Raises:
        DaemonStopFailed: the lock holds no pid, or the daemon outlived ``timeout``.
    """
    from claudemesh.daemon.lock import lock_holder  # noqa: PLC0415

    pid = lock_holder(paths.pid)
    if pid is None:
        return None
    if pid <= 0:
        raise DaemonStopFailed(f"the lock on {paths.pid} is held but holds no pid")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while lock_holder(paths.pid) is not None:
        if time.monotonic() > deadline:
            raise DaemonStopFailed(f"daemon pid {pid} is still running after {timeout:g}s")
        time.sleep(0.05)
    return pid
