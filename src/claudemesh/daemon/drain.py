"""Outbox -> broker for one mesh: claim due rows, send them, apply the broker's answers.

A driver over :mod:`.drain_rules`. While the link is OPEN, the drain claims due ``pending``
rows (oldest ``next_attempt_at`` first), marks them ``inflight``, and sends their frozen
envelopes, keeping up to ``window`` sends awaiting answers. Each answer moves its row to
``done``, ``dead`` or back to ``pending`` with a backoff (daemon-spec §4.8). It never
polls: it sleeps until a send is queued (``notify``), the link opens, a send finishes, or
the earliest retry falls due. When the link drops, the answers still awaited fail, and
those rows go back to ``pending``, due at once; the reconnect's own backoff paces them.

Ordering. Rows of one mesh go out in enqueue order, and the broker accepts frames of one
connection in arrival order (a batch's frames too), so the first attempts of sends to one
destination reach their recipient in the order they were accepted here. A row that had to
be retried can land after rows queued later; nothing stronger is promised (recipients
dedupe and sort by time if they need to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from claudemesh.daemon.drain_rules import (
    Verdict,
    VerdictKind,
    classify_result,
    max_age_hours,
    retry_delay_ms,
)
from claudemesh.daemon.link import BrokerLink
from claudemesh.daemon.store.outbox import OutboxRow, OutboxStore, Transition
from claudemesh.daemon.store.outbox_rules import OutboxEvent
from claudemesh.errors import BrokerUnavailable, ClaudemeshError
from claudemesh.protocol.envelope import FrozenSend
from claudemesh.sending import wire_frame
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["Drain", "DrainCounters"]

log = logging.getLogger(__name__)

HOUR_MS: Final = 3_600_000
IDLE_WAKE_S: Final = 3600.0  # with nothing due, look again hourly (max-age expiry)
EXPIRY_CHECK_S: Final = 60.0  # the pending-row expiry scan runs at most this often


@dataclass(slots=True)
class DrainCounters:
    delivered: int = 0
    retries: int = 0
    dead: int = 0
    history_pruned: int = 0
    last_rtt_ms: float | None = None  # the last send -> send_result round trip


class Drain:
    def __init__(self, link: BrokerLink, outbox: DbWorker, *, clock: Callable[[], int],
                 window: int = 256, rng: random.Random | None = None) -> None:
        self.link = link
        self.mesh = link.mesh.slug
        self._outbox = outbox
        self._clock = clock
        self._window = window
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self.counters = DrainCounters()
        self._answered: list[Transition] = []
        self._flushing = False
        self._next_expiry_check = 0.0  # monotonic seconds

    def notify(self) -> None:
        """Something became due (a new send, a requeue, the link opening)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._sending)

    async def run(self) -> None:
        try:
            while True:
                await self.link.wait_open()
                self._wake.clear()
                claimed, room = await self._claim()
                if claimed and claimed == room:
                    continue  # the window filled: there may be more due rows
                await self._sleep(await self._next_due_s())
        finally:
            for task in list(self._sending):
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _sleep(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    def _max_age_ms(self) -> int:
        negotiated = self.link.negotiated
        return max_age_hours(None if negotiated is None else negotiated.dedupe) * HOUR_MS

    async def _claim(self) -> tuple[int, int]:
        """Claim up to the free room; returns (rows claimed, room)."""
        room = self._window - len(self._sending)
        if room <= 0:
            return 0, 0
        now = self._clock()
        cutoff = now - self._max_age_ms()

        check_expiry = time.monotonic() >= self._next_expiry_check
        if check_expiry:  # max age is hours to days: once a minute is plenty
            self._next_expiry_check = time.monotonic() + EXPIRY_CHECK_S

        def op(conn: sqlite3.Connection) -> list[tuple[OutboxRow, bytes]]:
            store = OutboxStore(conn)
            expired = store.expire_pending(self.mesh, enqueued_before_ms=cutoff) if (
                check_expiry) else 0
            if expired:
                log.warning("outbox_rows_expired", extra={"mesh": self.mesh, "count": expired})
            return store.claim_due_payloads(now, limit=room, mesh=self.mesh)

        # Not fsynced: a claim lost in a power cut leaves the row pending, as recovery would.
        claimed = await self._outbox.run(op, durable=False)
        for row, payload in claimed:
            task = asyncio.create_task(self._deliver(row, FrozenSend.from_bytes(payload)))
            self._sending.add(task)
            task.add_done_callback(self._finished)
        return len(claimed), room

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("drain_send_failed", exc_info=task.exception(),
                      extra={"mesh": self.mesh})
        self._wake.set()

    async def _next_due_s(self) -> float:
        def op(conn: sqlite3.Connection) -> int | None:
            return OutboxStore(conn).next_due_ms(self.mesh)

        due = await self._outbox.run(op)
        if due is None:
            return IDLE_WAKE_S
        return max(0.0, (due - self._clock()) / 1000)

    async def _deliver(self, row: OutboxRow, frozen: FrozenSend) -> None:
        try:
            started = time.perf_counter()
            answer = await self.link.request(wire_frame(row.client_message_id, frozen))
            self.counters.last_rtt_ms = (time.perf_counter() - started) * 1000
            verdict = classify_result(answer)
        except BrokerUnavailable:
            verdict = Verdict(VerdictKind.RETRY, error="link dropped before the answer",
                              retry_after_ms=0)
        except TimeoutError:
            verdict = Verdict(VerdictKind.RETRY, error="no answer from the broker in time")
        await self._apply(row, verdict)

    async def _apply(self, row: OutboxRow, verdict: Verdict) -> None:
        """Queue the row's transition; one flusher writes them in batches."""
        self._answered.append(self._final(row, verdict))
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._answered:
                batch, self._answered = self._answered, []
                await self._write(batch)
        finally:
            self._flushing = False

    def _final(self, row: OutboxRow, verdict: Verdict) -> Transition:
        """Count and log the answer, and turn it into the row's transition; a retry past
        the max age becomes dead (R-AGE-5, recorded as EXPIRED)."""
        now = self._clock()
        counters = self.counters
        event = OutboxEvent.PERMANENT_FAILURE  # what a DEAD verdict records
        if verdict.kind is VerdictKind.RETRY and row.enqueued_at < now - self._max_age_ms():
            verdict = Verdict(VerdictKind.DEAD, error=f"max_age_exceeded ({verdict.error})")
            event = OutboxEvent.EXPIRED
        match verdict.kind:
            case VerdictKind.DONE:
                counters.delivered += 1
                if not verdict.history_available:
                    counters.history_pruned += 1
                    log.warning("dedupe_history_pruned", extra={
                        "mesh": self.mesh, "client_message_id": row.client_message_id})
                return Transition.done(row.id, broker_message_id=str(verdict.broker_message_id),
                                       history_id=verdict.history_id, now_ms=now)
            case VerdictKind.RETRY:
                counters.retries += 1
                delay = verdict.retry_after_ms if verdict.retry_after_ms is not None else (
                    retry_delay_ms(row.attempts, self._rng))
                return Transition.retry(row.id, error=str(verdict.error),
                                        next_attempt_at=now + delay)
            case VerdictKind.DEAD:
                counters.dead += 1
                log.error("outbox_row_dead", extra={"mesh": self.mesh, "row": row.id,
                                                    "client_message_id": row.client_message_id,
                                                    "error": verdict.error})
                return Transition.dead(row.id, error=str(verdict.error), event=event)

    async def _write(self, transitions: list[Transition]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            OutboxStore(conn).apply(transitions)

        try:
            # Not fsynced: a transition lost in a power cut only means the row is sent
            # again after the restart, and the broker answers 200 duplicate (R-REC-1).
            await self._outbox.run(op, durable=False)
        except ClaudemeshError:
            log.exception("outbox_update_failed", extra={"mesh": self.mesh,
                                                         "rows": len(transitions)})
