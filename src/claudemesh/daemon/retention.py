"""Inbox retention (R-IN-3): rows older than the retention go, at start-up and then
periodically, with their search index entries, read marks and queued receipts.

Each batch is one worker call, so one transaction, and other writers (inbound messages,
read marks) interleave between batches. The sweep interval follows the retention (a
tenth of it, from 1 s to an hour), so a short retention in tests is honoured promptly
and a 30-day one costs one small query an hour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from claudemesh.daemon.store.inbox import InboxStore
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["InboxRetention"]

log = logging.getLogger(__name__)

BATCH: Final = 500
MIN_INTERVAL_S: Final = 1.0
MAX_INTERVAL_S: Final = 3600.0


class InboxRetention:
    def __init__(self, inbox: DbWorker, *, retention_s: float, clock: Callable[[], int],
                 batch: int = BATCH) -> None:
        self._inbox = inbox
        self.retention_s = retention_s
        self._clock = clock
        self._batch = batch

    @property
    def interval_s(self) -> float:
        return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, self.retention_s / 10))

    async def sweep(self) -> int:
        """Delete every row received more than the retention ago; returns how many."""
        if self.retention_s <= 0:
            return 0
        before = self._clock() - int(self.retention_s * 1000)
        total = 0
        while True:
            n = await self._inbox.run(
                lambda conn: InboxStore(conn).prune(before, batch=self._batch))
            total += n
            if n < self._batch:
                break
        if total:
            log.info("inbox_pruned", extra={"rows": total, "retention_s": self.retention_s})
        return total

    async def run(self) -> None:
        """Sweep now, then every :attr:`interval_s`, until cancelled (0: never)."""
        if self.retention_s <= 0:
            return
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # a full disk now should not end retention for good
                log.exception("inbox_prune_failed")
            await asyncio.sleep(self.interval_s)
