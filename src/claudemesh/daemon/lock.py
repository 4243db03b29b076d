"""One daemon per daemon directory, enforced by ``flock`` on ``daemon.pid`` (R-LIFE-2).

The kernel drops the lock when the process dies, however it dies, so there is no stale
pid file to second-guess. The pid written inside is for humans and ``daemon down``; it
is trusted only while the lock is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from claudemesh.errors import DaemonAlreadyRunning

__all__ = ["InstanceLock", "lock_holder"]


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid.

        Raises:
            DaemonAlreadyRunning: another live process holds it.
        """
        while True:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                where = f" (pid {pid})" if pid else ""
                raise DaemonAlreadyRunning(
                    f"a daemon already runs on {self._path.parent}{where}; stop it with"
                    " `claudemesh daemon down`", pid=pid) from None
            # The holder may have unlinked the file between our open and our lock: then
            # we locked an orphan inode and must start over on the current file.
            try:
                same = os.fstat(fd).st_ino == self._path.stat().st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fchmod(fd, 0o600)
        self._fd = fd

    def release(self) -> None:
        """Remove the pid file while still holding the lock, then let go."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        os.close(self._fd)
        self._fd = None


def lock_holder(path: Path) -> int | None:
    """The pid of the live daemon holding ``path``, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
