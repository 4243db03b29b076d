"""A small real filesystem to fill up: a tmpfs mounted for one test, and a filler file.

Mounting needs root (this machine and CI run as root); where ``mount`` is refused the
test is skipped with the reason. The mount is undone in teardown, lazily when something
still holds it open (a daemon that did not stop).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import short_tmpdir

__all__ = ["fill", "tmpfs"]

_CHUNKS = (1 << 16, 1 << 12, 1 << 9, 1)  # write big, then smaller, until nothing fits


@contextlib.contextmanager
def tmpfs(size: str = "2m", *, at: Path | None = None) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted at ``at`` (created if missing) or a new temp dir,
    mode 0700 as the daemon wants its directory."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    where = at if at is not None else short_tmpdir("cmfs")
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(where)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        with contextlib.suppress(OSError):
            where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        done = subprocess.run(["umount", str(where)], capture_output=True, check=False)
        if done.returncode != 0:  # busy: detach now, the kernel frees it when released
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(directory: Path, name: str = "filler") -> Path:
    """Write ``directory/name`` until the filesystem answers ENOSPC; returns its path."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in _CHUNKS:
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path
