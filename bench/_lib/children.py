"""Client processes that meet the parent at a barrier twice: ready, then go.

On a 2-core machine one client process cannot load a broker, so the load runs in spawned
children. Each runs ``target(job, barrier)`` (a module-level coroutine function, pickled
by name) and sends back its result dict, or ``{"failed": ...}``. The parent meets the
barrier once when every child is connected and warmed up and once to start them, and
samples the broker's CPU in between, so set-up stays out of the figures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final

BARRIER_TIMEOUT_S: Final = 300.0

ChildTarget = Callable[[dict[str, Any], Any], Coroutine[Any, Any, dict[str, Any]]]


def _child_main(target: ChildTarget, job: dict[str, Any], barrier: Any,
                pipe: multiprocessing.connection.Connection) -> None:
    try:
        result = asyncio.run(target(job, barrier))
    except BaseException as exc:
        barrier.abort()
        pipe.send({"failed": f"{type(exc).__name__}: {exc}"})
        raise
    pipe.send(result)


class Children:
    """One spawned process per job, all running ``target``."""

    def __init__(self, target: ChildTarget, jobs: list[dict[str, Any]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.barrier = ctx.Barrier(len(jobs) + 1)
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._procs: list[Any] = []
        for job in jobs:
            ours, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child_main, args=(target, job, self.barrier, theirs),
                               daemon=True)
            proc.start()
            theirs.close()
            self._pipes.append(ours)
            self._procs.append(proc)

    def meet(self) -> None:
        """Wait at the barrier with every child; a child that failed says why."""
        try:
            self.barrier.wait(BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            raise RuntimeError("a client process failed: " + "; ".join(
                str(r.get("failed")) for r in self.results(timeout_s=5.0))) from None

    def results(self, timeout_s: float = BARRIER_TIMEOUT_S) -> list[dict[str, Any]]:
        out = []
        for pipe in self._pipes:
            if not pipe.poll(timeout_s):
                raise RuntimeError("a client process sent no result in time")
            out.append(pipe.recv())
        failed = [r["failed"] for r in out if "failed" in r]
        if failed:
            raise RuntimeError("client process failed: " + "; ".join(failed))
        return out

    def close(self) -> None:
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` dealt round-robin into at most ``parts`` non-empty groups."""
    return [items[i::parts] for i in range(parts) if items[i::parts]]
