"""What the OS says about a process: whether it lives, and when it started.

A session owned by a pid is reaped when that pid is gone *or* now belongs to a newer
process: the start time recorded at registration tells the two apart, so a reused pid
never keeps a dead session alive (and a live one is never guessed dead). Linux reads
``/proc`` (start time in clock ticks since boot, qualified by the boot id); macOS asks
``ps``. Only processes of this daemon's own user count.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Final

__all__ = ["ProcessInfo", "process_info"]

_PROC: Final = Path("/proc")


class ProcessInfo:
    """A live process: its pid, parent, command name and start time."""

    __slots__ = ("command", "parent", "pid", "start")

    def __init__(self, pid: int, parent: int, command: str, start: str) -> None:
        self.pid = pid
        self.parent = parent
        self.command = command
        self.start = start


def process_info(pid: int, *, proc: Path = _PROC) -> ProcessInfo | None:
    """The process ``pid`` if it runs as this user, else None."""
    if pid <= 0:
        return None
    if (proc / "self").exists():
        return _linux(pid, proc)
    return _ps(pid)


def _linux(pid: int, proc: Path) -> ProcessInfo | None:
    base = proc / str(pid)
    try:
        if base.stat().st_uid != os.getuid():
            return None
        stat = (base / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    # "pid (comm) state ppid ... starttime(22nd) ...": comm may hold spaces and ')'.
    head, _, rest = stat.rpartition(")")
    fields = rest.split()
    if len(fields) < 20 or fields[0] == "Z":  # a zombie has exited
        return None
    boot = ""
    with contextlib.suppress(OSError):
        boot = (proc / "sys/kernel/random/boot_id").read_text().strip()
    return ProcessInfo(pid, int(fields[1]), head.partition("(")[2], f"{boot}:{fields[19]}")


def _ps(pid: int) -> ProcessInfo | None:
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["/bin/ps", "-o", "uid=,ppid=,lstart=,comm=", "-p", str(pid)],
            capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) < 8 or int(parts[0]) != os.getuid():
        return None
    # lstart is five words: "Wed Dec  2 14:38:59 2026"
    return ProcessInfo(pid, int(parts[1]), " ".join(parts[7:]), " ".join(parts[2:7]))
