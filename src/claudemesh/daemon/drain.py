"""Outbox -> broker for one mesh: claim due rows, send them, apply the broker's answers.

A driver over :mod:`.drain_rules`. While the link is OPEN, the drain claims due ``pending``
rows (oldest ``next_attempt_at`` first), marks them ``inflight``, and sends their frozen
envelopes, keeping up to ``window`` sends awaiting answers. Each answer moves its row to
``done``, ``dead`` or back to ``pending`` with a backoff (daemon-spec §4.8). It never
polls: it sleeps until a send is queued (``notify``), the link opens, a send finishes, or
the earliest retry or scheduled send (issue 15: a ``scheduled`` row's ``next_attempt_at``
is its ``deliver_at``) falls due; accepting a scheduled send notifies it, so the timer is
re-armed to the new earliest time. When the link drops, the answers still awaited fail, and
those rows go back to ``pending``, due at once; the reconnect's own backoff paces them.
Each answer settles its row from a future's callback, with no task per send; one timer
per claimed batch turns what is still unanswered after ``request_timeout_s`` into retries.

A failing store (a full disk: :class:`~claudemesh.errors.InsufficientStorage`) stops
nothing: a claim that fails is tried again after a backoff, and answers that could not be
written are kept and written again after a backoff, so no row is left ``inflight`` and the
drain carries on by itself once there is room.

Ordering. Rows of one mesh go out in enqueue order, and the broker accepts frames of one
connection in arrival order (a batch's frames too), so the first attempts of sends to one
destination reach their recipient in the order they were accepted here. A row that had to
be retried can land after rows queued later, and a scheduled row goes out at its time,
after rows queued later for earlier; nothing stronger is promised (recipients
dedupe and sort by time if they need to).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
from claudemesh.errors import BrokerRejected, BrokerUnavailable, ClaudemeshError, StoreError
from claudemesh.protocol.replies import BrokerReply
from claudemesh.sending import wire_bytes
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["Drain", "DrainCounters"]

log = logging.getLogger(__name__)

HOUR_MS: Final = 3_600_000
IDLE_WAKE_S: Final = 3600.0  # with nothing due, look again hourly (max-age expiry)
EXPIRY_CHECK_S: Final = 60.0  # the pending-row expiry scan runs at most this often
# The timer to the next due row (a retry, or a scheduled send's deliver_at) is a monotonic
# sleep toward a wall-clock time; re-reading the schedule at least this often bounds how
# late a clock step or a suspend can make a scheduled send.
DUE_RECHECK_S: Final = 60.0
# The link dropped before the answer: due again at once; the reconnect's backoff paces it.
LINK_DROPPED: Final = Verdict(VerdictKind.RETRY, error="link dropped before the answer",
                              retry_after_ms=0)


@dataclass(slots=True)
class DrainCounters:
    delivered: int = 0
    retries: int = 0
    dead: int = 0
    resealed: int = 0  # topic posts sealed again after a stale_epoch
    history_pruned: int = 0
    last_rtt_ms: float | None = None  # the last send -> send_result round trip


@dataclass(slots=True)
class _Awaited:
    """A claimed batch's sends still awaiting answers, and the one timer for them all."""

    started: float  # perf_counter when the batch was sent
    futures: dict[str, asyncio.Future[BrokerReply]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


Resealer = Callable[[bytes], Awaitable[bytes | None]]


class Drain:
    def __init__(self, link: BrokerLink, outbox: DbWorker, *, clock: Callable[[], int],
                 window: int = 256, rng: random.Random | None = None,
                 reseal: Resealer | None = None) -> None:
        self.link = link
        self.mesh = link.mesh.slug
        self._outbox = outbox
        self._clock = clock
        self._window = window
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._wake = asyncio.Event()
        self._in_flight = 0  # rows sent and not answered yet
        self._stopped = False
        self.counters = DrainCounters()
        self._answered: list[Transition] = []
        self._writer: asyncio.Task[None] | None = None
        self._next_expiry_check = 0.0  # monotonic seconds
        self._reseal = reseal  # daemon.topic_keys.TopicSender.reseal
        self._resealing: set[asyncio.Task[None]] = set()

    def notify(self) -> None:
        """Something became due (a new send, a requeue, the link opening)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def run(self) -> None:
        failures = 0  # claims in a row the store refused
        try:
            while True:
                await self.link.wait_open()
                self._wake.clear()
                if self._in_flight >= self._window:
                    await self._wake.wait()  # only an answer can make room
                    continue
                try:
                    claimed, room = await self._claim()
                    due_s = None if claimed and claimed == room else await self._next_due_s()
                except StoreError as exc:
                    failures += 1
                    log.warning("outbox_claim_failed", extra={"mesh": self.mesh,
                                                              "error": str(exc)})
                    await self._sleep(retry_delay_ms(failures, self._rng) / 1000)
                    continue
                failures = 0
                if due_s is not None:  # else the window filled: there may be more due rows
                    await self._sleep(due_s)
        finally:
            # Rows still awaiting answers stay inflight; the next start puts them back
            # to pending (R-REC-1), so a late answer must not write anything now.
            self._stopped = True
            for task in self._resealing:  # the row stays inflight: resent after a restart
                task.cancel()
            await asyncio.gather(*self._resealing, return_exceptions=True)
            if self._writer is not None:
                self._writer.cancel()
                await asyncio.gather(self._writer, return_exceptions=True)

    async def _sleep(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()

    def _max_age_ms(self) -> int:
        negotiated = self.link.negotiated
        return max_age_hours(None if negotiated is None else negotiated.dedupe) * HOUR_MS

    async def _claim(self) -> tuple[int, int]:
        """Claim up to the free room and send what was claimed; returns (rows claimed,
        room)."""
        room = self._window - self._in_flight
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
            return store.claim_due(now, limit=room, mesh=self.mesh)

        # Not fsynced: a claim lost in a power cut leaves the row pending, as recovery would.
        claimed = await self._outbox.run(op, durable=False)
        await self._send(claimed)
        return len(claimed), room

    async def _send(self, claimed: list[tuple[OutboxRow, bytes]]) -> None:
        """Send the claimed rows in order; each answer settles its row as it comes, and
        one timer gives up on whatever the batch still awaits."""
        batch = _Awaited(time.perf_counter())
        for row, payload in claimed:
            self._in_flight += 1
            frame = wire_bytes(row.client_message_id, row.mesh, payload)  # no re-encoding
            try:
                req_id, future = await self.link.submit(frame)
            except BrokerUnavailable:
                self._settle(row, LINK_DROPPED)
                continue
            batch.futures[req_id] = future
            future.add_done_callback(functools.partial(self._on_answer, batch, req_id, row,
                                                       payload))
        if batch.futures:
            batch.timer = asyncio.get_running_loop().call_later(
                self.link.timings.request_timeout_s, self._give_up, batch)

    def _give_up(self, batch: _Awaited) -> None:
        for req_id, future in list(batch.futures.items()):
            self.link.forget(req_id)
            future.set_exception(TimeoutError())

    def _on_answer(self, batch: _Awaited, req_id: str, row: OutboxRow, payload: bytes,
                   future: asyncio.Future[BrokerReply]) -> None:
        del batch.futures[req_id]
        if not batch.futures and batch.timer is not None:
            batch.timer.cancel()
        exc = BrokerUnavailable("cancelled") if future.cancelled() else future.exception()
        if exc is None:
            self.counters.last_rtt_ms = (time.perf_counter() - batch.started) * 1000
            verdict = classify_result(future.result())
        elif isinstance(exc, TimeoutError):
            verdict = Verdict(VerdictKind.RETRY, error="no answer from the broker in time")
        elif isinstance(exc, BrokerRejected):  # an answer the link could not read
            verdict = Verdict(VerdictKind.RETRY, error=exc.detail)
        else:  # BrokerUnavailable: the link dropped before the answer
            verdict = LINK_DROPPED
        if verdict.kind is VerdictKind.RESEAL and self._reseal is not None:
            self._in_flight -= 1
            self._wake.set()
            if not self._stopped:
                task = asyncio.create_task(self._resealed(row, payload, verdict))
                self._resealing.add(task)
                task.add_done_callback(self._resealing.discard)
            return
        self._settle(row, verdict)

    def _settle(self, row: OutboxRow, verdict: Verdict) -> None:
        """Queue the row's transition; one writer task writes them in batches."""
        self._in_flight -= 1
        self._wake.set()
        if not self._stopped:
            self._queue(self._final(row, verdict))

    def _queue(self, transition: Transition) -> None:
        self._answered.append(transition)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_answered())

    async def _resealed(self, row: OutboxRow, payload: bytes, verdict: Verdict) -> None:
        """A ``stale_epoch``: the post sealed under the topic's current epoch goes back to
        pending, due at once; a failure to get that epoch retries it with a backoff (it is
        refused, and re-sealed, again), and a post that cannot be re-sealed is dead."""
        assert self._reseal is not None
        error = str(verdict.error)
        try:
            fresh = await self._reseal(payload)
        except (ClaudemeshError, TimeoutError) as exc:
            verdict = Verdict(VerdictKind.RETRY, error=f"{error}; re-sealing: {exc}")
        else:
            if fresh is not None:
                self.counters.resealed += 1
                log.info("outbox_row_resealed", extra={
                    "mesh": self.mesh, "client_message_id": row.client_message_id})
                resealed = Transition.resealed(row.id, payload=fresh, error=error,
                                               next_attempt_at=self._clock())
                if not await self._write([resealed]):
                    self._queue(resealed)  # the writer keeps trying
                self._wake.set()  # due now: claim it (the drain may be asleep till later)
                return
            verdict = Verdict(VerdictKind.DEAD, error=f"{error}; its epoch key is gone")
        if not self._stopped:
            self._queue(self._final(row, verdict))

    async def _next_due_s(self) -> float:
        def op(conn: sqlite3.Connection) -> int | None:
            return OutboxStore(conn).next_due_ms(self.mesh)

        due = await self._outbox.run(op)
        if due is None:
            return IDLE_WAKE_S
        return min(DUE_RECHECK_S, max(0.0, (due - self._clock()) / 1000))

    async def _write_answered(self) -> None:
        failures = 0  # writes in a row the store refused
        try:
            while self._answered:
                batch, self._answered = self._answered, []
                if await self._write(batch):
                    if failures:  # written late: a re-sealed row among them is due now
                        self._wake.set()
                    failures = 0
                    continue
                failures += 1
                self._answered = batch + self._answered  # kept, in order, for the next try
                await asyncio.sleep(retry_delay_ms(failures, self._rng) / 1000)
        finally:
            self._writer = None

    def _final(self, row: OutboxRow, verdict: Verdict) -> Transition:
        """Count and log the answer, and turn it into the row's transition; a retry past
        the max age becomes dead (R-AGE-5, recorded as EXPIRED)."""
        now = self._clock()
        counters = self.counters
        event = OutboxEvent.PERMANENT_FAILURE  # what a DEAD verdict records
        if verdict.kind is VerdictKind.RETRY and row.age_from < now - self._max_age_ms():
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
            case VerdictKind.DEAD | VerdictKind.RESEAL:  # RESEAL here: nothing to re-seal with
                counters.dead += 1
                log.error("outbox_row_dead", extra={"mesh": self.mesh, "row": row.id,
                                                    "client_message_id": row.client_message_id,
                                                    "error": verdict.error})
                return Transition.dead(row.id, error=str(verdict.error), event=event)

    async def _write(self, transitions: list[Transition]) -> bool:
        """Apply the answers' transitions; False when the store refused (try again)."""
        def op(conn: sqlite3.Connection) -> None:
            OutboxStore(conn).apply(transitions)

        try:
            # Not fsynced: a transition lost in a power cut only means the row is sent
            # again after the restart, and the broker answers 200 duplicate (R-REC-1).
            await self._outbox.run(op, durable=False)
        except StoreError as exc:
            log.warning("outbox_update_failed; retrying", extra={
                "mesh": self.mesh, "rows": len(transitions), "error": str(exc)})
            return False
        except ClaudemeshError:
            log.exception("outbox_update_failed", extra={"mesh": self.mesh,
                                                         "rows": len(transitions)})
        return True
