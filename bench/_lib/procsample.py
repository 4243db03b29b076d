"""CPU seconds and memory of a process, read from ``/proc`` (Linux only).

The benchmarks report which process was the bottleneck, so CPU is read per thread: the
main thread runs the event loop, the others are SQLite writers and worker threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Cpu:
    """CPU seconds so far (utime + stime): all threads, and the main (event-loop) thread."""

    total_s: float = 0.0
    loop_s: float = 0.0

    @property
    def other_s(self) -> float:
        """The threads other than the event loop's."""
        return self.total_s - self.loop_s

    def __sub__(self, before: Cpu) -> Cpu:
        return Cpu(self.total_s - before.total_s, self.loop_s - before.loop_s)

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(self.total_s + other.total_s, self.loop_s + other.loop_s)


def _stat_seconds(stat: str) -> float:
    """utime + stime of one ``stat`` line (fields 14 and 15; the name may hold spaces)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> Cpu:
    """The threads' CPU from ``/proc/<pid>/task/*/stat``; zero once the process is gone."""
    total = loop = 0.0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread may end while we read
                seconds = _stat_seconds((task / "stat").read_text())
                total += seconds
                if int(task.name) == pid:
                    loop = seconds
    return Cpu(total, loop)


def sum_cpu(samples: Iterable[Cpu]) -> Cpu:
    """CPU of several processes together (their loops, and all their threads)."""
    return sum(samples, Cpu())


def process_cpu_s(pid: int) -> float:
    """The whole process's CPU from ``/proc/<pid>/stat``, ended threads included."""
    return _stat_seconds(Path(f"/proc/{pid}/stat").read_text())


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) from ``/proc/<pid>/status``, in kB (empty if gone)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


def memory_mib(pid: int) -> dict[str, float]:
    """:func:`memory_kb` in MiB."""
    return {name: kb / 1024 for name, kb in memory_kb(pid).items()}
