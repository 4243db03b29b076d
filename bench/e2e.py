"""End-to-end benchmark: alice -> broker -> bob on loopback, through real daemons.

What is measured
    One broker (``claudemesh broker up --port 0 --json``, per-member rate limit lifted
    through the hidden ``--rate-per-s``/``--rate-burst`` flags) on a fresh SQLite file,
    one mesh (``claudemesh mesh create``), and two members, alice and bob, each joined
    with ``claudemesh join`` in its own config directory under ``/tmp`` and each running
    a real daemon (``claudemesh daemon up --json``). Every message is a DM from alice to
    bob's pubkey: ``POST /v1/send`` on alice's Unix socket -> alice's outbox (encrypted,
    durable) -> drain -> broker (stored) -> push -> bob's daemon (decrypted, stored in
    ``inbox.db``, acked) -> one ``message`` event on bob's ``GET /v1/events`` stream.

    One SSE reader holds bob's event stream for the whole run (raw HTTP/1.1 over the
    Unix socket, chunked decoding, no HTTP library). It stamps each ``message`` event
    with ``time.perf_counter()`` when its bytes are read, keyed by
    ``client_message_id``; a second event for the same id is counted as a duplicate. If
    the daemon ends the stream (a subscriber more than 4,096 events behind is cut off)
    the reader reconnects with ``Last-Event-ID`` and the missed events are replayed
    from ``inbox.db``; the reconnects are counted and reported.

    Warm-up: ``WARMUP`` messages, sent one at a time, not measured.

    Scenario 1, latency (``--sequential``, default 2,000). One keep-alive connection
    sends one message at a time: write the POST, read the 202, then wait for the
    matching SSE event on bob's side before sending the next. Latency is the event's
    arrival time minus the time the POST was written. p50/p90/p99/max, plus the 202
    latency alone.

    Scenario 2, throughput (``--messages``, default 20,000, from ``--senders``, default
    32, keep-alive connections that take the next message from a shared counter).
    Delivered/s is messages over the wall time from the first POST to the last SSE
    event; the accept rate is 202s over the time from the first POST to the last 202.
    Latency send -> event per message, p50/p90/p99/max (here it includes the queueing
    that the load itself causes). Then every id must have arrived exactly once on the
    stream, and bob's inbox, paged with ``GET /v1/inbox?order=asc`` and counted, must
    hold exactly the messages sent so far (warm-up + scenario 1 + scenario 2), each once.

    Scenario 3, backlog drain (``--backlog``, default 50,000). The broker is stopped
    with SIGTERM; the backlog is sent to alice with the same sender pool (measured:
    accepts/s with no broker) and ``queue_depth`` from alice's ``/v1/health`` must equal
    it. The broker is restarted on the same SQLite file and the same port, so the
    daemons' configured URL stays valid. Both daemons reconnect on their own, with their
    backoff (500 ms doubling to 30 s, +-25 % jitter), so the drain includes that delay.
    Reported: broker ready -> alice's and bob's links open again (``/v1/health`` polled
    every 100 ms), broker ready -> first SSE event, broker ready -> last SSE event (the
    drain time including the reconnect delay), first -> last event (the drain proper)
    and the delivered/s over both. All backlog ids must arrive exactly once, the inbox
    count is checked again, and alice's ``queue_depth`` must fall back to 0.

    For every scenario the CPU seconds of alice, bob and the broker (all threads, and the
    main thread, which runs the event loop, from ``/proc/<pid>/task/*/stat``) and of
    this process are reported with their share of the wall time, so the report shows
    which process was the bottleneck. At the end: ``VmRSS``/``VmHWM`` of both daemons and
    of the broker (for the broker also before it was stopped in scenario 3).

    The clients share the machine with the three processes under test, so close other
    busy processes before running it. ``time.perf_counter`` is ``CLOCK_MONOTONIC``.

    With ``--py-spy FILE``, ``py-spy record --format raw --threads`` samples one process
    (``--py-spy-target``) during scenario 2 or, with ``--py-spy-scenario 3``, from the
    broker restart to the end of the drain. py-spy pauses the process it samples, so
    the figures of a profiled run are lower; do not quote them as results.

    When messages stop arriving (no event for ``STALL_S`` s, ``RESTART_STALL_S`` after
    the broker restart), the missing ids are located and printed: alice's health and
    outbox rows (status, attempts, last error), whether the broker stored them and
    whether their deliveries to bob are acked (its SQLite file, read-only), bob's
    health, and the last warnings of the three logs.

Targets (from the issue): p50 <= 5 ms and p99 <= 25 ms (scenario 1), >= 2,000 delivered/s
end to end (scenario 2). Each is printed as ``met`` or ``MISSED``.

Run::

    .venv/bin/python bench/e2e.py [--sequential 2000] [--messages 20000] [--senders 32]
        [--backlog 50000] [--json]
        [--py-spy FILE --py-spy-target alice|bob|broker --py-spy-scenario 2|3]

Everything is torn down at the end (``daemon down`` for both daemons, SIGTERM to the
broker, the directory removed). Exit status 1 on any mismatch: a send not answered 202,
a message missing or delivered twice, a wrong inbox count, or a queue that did not empty.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lib.machine import reference_loop_us
from _lib.procs import Broker, Member, start_py_spy, stop_py_spy
from _lib.procsample import Cpu, memory_mib, thread_cpu
from _lib.sse import SseReader, wait_watch
from _lib.stats import Percentiles
from _lib.uds import Connection, ProtocolError, get_json

WARMUP: Final = 50
STALL_S: Final = 60.0  # no new event for this long: the rest is reported missing
RESTART_STALL_S: Final = 120.0  # after the broker restart: reconnect backoff is <= 37.5 s
SEQUENTIAL_TIMEOUT_S: Final = 30.0
HEALTH_POLL_S: Final = 0.1
QUEUE_EMPTY_TIMEOUT_S: Final = 60.0
MAX_SAMPLES: Final = 5
INBOX_PAGE: Final = 1000
SATURATED: Final = 0.85
TARGET_P50_MS: Final = 5.0
TARGET_P99_MS: Final = 25.0
TARGET_DELIVERED_PER_S: Final = 2000.0


# -- the load ------------------------------------------------------------------------


def send_body(to: str, cmid: str, n: int) -> bytes:
    return (b'{"to":"%s","message":"e2e bench message %d","client_message_id":"%s"}'
            % (to.encode(), n, cmid.encode()))


@dataclass(slots=True)
class SendBatch:
    """What a burst of concurrent sends produced."""

    ids: list[str] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    accept_latency: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    first_post: float = 0.0
    last_202: float = 0.0


async def send_many(sock: str, to: str, *, total: int, senders: int, tag: str) -> SendBatch:
    """``total`` sends over ``senders`` keep-alive connections; ids are ``<tag>-<n>``."""
    conns = [Connection(sock) for _ in range(min(senders, total))]
    await asyncio.gather(*(c.open() for c in conns))
    batch = SendBatch(ids=[f"{tag}-{n}" for n in range(total)])
    counter = itertools.count()

    async def sender(conn: Connection) -> None:
        while (n := next(counter)) < total:
            cmid = batch.ids[n]
            body = send_body(to, cmid, n)
            started = time.perf_counter()
            batch.started[cmid] = started
            try:
                status, answer = await conn.request(b"POST", b"/v1/send", body)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ProtocolError) as exc:
                conn.close()
                status, answer = 0, f"{type(exc).__name__}: {exc}".encode()
            done = time.perf_counter()
            batch.accept_latency.append(done - started)
            if status == 202 and b'"client_message_id":"%s"' % cmid.encode() in answer:
                batch.accepted.append(cmid)
                batch.last_202 = max(batch.last_202, done)
            elif len(batch.errors) < MAX_SAMPLES:
                batch.errors.append(f"{cmid}: HTTP {status} "
                                    f"{answer[:300].decode('utf-8', 'replace')}")

    batch.first_post = time.perf_counter()
    try:
        await asyncio.gather(*(sender(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return batch


# -- measurements ----------------------------------------------------------------------


@dataclass(slots=True)
class CpuShare:
    cpu_s: float
    loop_s: float
    share_of_core: float
    loop_share_of_core: float


@dataclass(slots=True)
class Procs:
    """The pids whose CPU is sampled; the broker's changes when it restarts."""

    alice: int
    bob: int
    broker: int

    def sample(self) -> dict[str, Cpu]:
        bench = time.process_time()
        return {"alice": thread_cpu(self.alice), "bob": thread_cpu(self.bob),
                "broker": thread_cpu(self.broker), "bench": Cpu(bench, bench)}


def cpu_shares(before: dict[str, Cpu], after: dict[str, Cpu],
               wall_s: float) -> dict[str, CpuShare]:
    shares: dict[str, CpuShare] = {}
    for name, end in after.items():
        used = end - before.get(name, Cpu())
        shares[name] = CpuShare(
            cpu_s=round(used.total_s, 2), loop_s=round(used.loop_s, 2),
            share_of_core=used.total_s / wall_s if wall_s > 0 else 0.0,
            loop_share_of_core=used.loop_s / wall_s if wall_s > 0 else 0.0)
    return shares


def bottleneck(shares: dict[str, CpuShare]) -> str:
    cores = os.cpu_count() or 1
    busiest = max(shares, key=lambda n: shares[n].share_of_core)
    total = sum(s.share_of_core for s in shares.values())
    if shares[busiest].loop_share_of_core >= SATURATED:
        return f"{busiest} (its event-loop thread is saturated)"
    if shares[busiest].share_of_core >= SATURATED:
        return f"{busiest} (its threads keep one core busy; they share one GIL)"
    if total >= SATURATED * cores:
        return f"the machine's {cores} cores (busiest: {busiest})"
    return f"no process saturated (busiest: {busiest}; waiting on fsync or round trips)"


def format_cpu(shares: dict[str, CpuShare]) -> str:
    return ", ".join(f"{n} {s.cpu_s:.2f} s ({s.share_of_core:.0%}, loop {s.loop_share_of_core:.0%})"
                     for n, s in shares.items())


@dataclass(slots=True)
class LatencyResult:
    messages: int
    delivered: int
    errors: int
    wall_s: float
    end_to_end: Percentiles
    accept: Percentiles
    cpu: dict[str, CpuShare]
    bottleneck: str
    error_samples: list[str]


@dataclass(slots=True)
class ThroughputResult:
    messages: int
    senders: int
    accepted: int
    errors: int
    delivered: int
    missing: int
    duplicates: int
    accept_wall_s: float
    accepts_per_s: float
    wall_s: float
    delivered_per_s: float
    end_to_end: Percentiles
    accept: Percentiles
    cpu: dict[str, CpuShare]
    bottleneck: str
    error_samples: list[str]
    reference_us: tuple[float, float] = (0.0, 0.0)  # reference_loop_us before, after


@dataclass(slots=True)
class BacklogResult:
    messages: int
    accepted: int
    errors: int
    accept_wall_s: float
    accepts_per_s: float
    queue_depth_before_restart: int | None
    broker_down_s: float
    alice_reconnect_s: float | None
    bob_reconnect_s: float | None
    restart_to_first_event_s: float | None
    restart_to_last_event_s: float | None
    first_to_last_event_s: float | None
    delivered: int
    missing: int
    duplicates: int
    delivered_per_s_from_restart: float
    delivered_per_s_first_to_last: float
    queue_depth_after: int | None
    cpu_accept: dict[str, CpuShare]
    cpu_drain: dict[str, CpuShare]
    bottleneck_drain: str
    error_samples: list[str]


@dataclass(slots=True)
class InboxCheck:
    after: str
    rows: int
    unique: int
    expected: int
    missing: int
    unexpected: int

    @property
    def ok(self) -> bool:
        return self.rows == self.unique == self.expected and not self.missing \
            and not self.unexpected


@dataclass(slots=True)
class Report:
    python: str
    cpus: int
    sequential: int
    messages: int
    senders: int
    backlog: int
    warmup: int = WARMUP
    latency: LatencyResult | None = None
    throughput: ThroughputResult | None = None
    backlog_drain: BacklogResult | None = None
    inbox_checks: list[InboxCheck] = field(default_factory=list)
    sse_events: int = 0
    sse_duplicates: int = 0
    sse_reconnects: int = 0
    sse_errors: list[str] = field(default_factory=list)
    memory_mib: dict[str, dict[str, float]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)

    def targets(self) -> dict[str, bool]:
        lat = self.latency
        thr = self.throughput
        return {
            f"p50 <= {TARGET_P50_MS:.0f} ms (scenario 1)":
                lat is not None and lat.delivered > 0 and lat.end_to_end.p50_ms <= TARGET_P50_MS,
            f"p99 <= {TARGET_P99_MS:.0f} ms (scenario 1)":
                lat is not None and lat.delivered > 0 and lat.end_to_end.p99_ms <= TARGET_P99_MS,
            f"delivered/s >= {TARGET_DELIVERED_PER_S:,.0f} (scenario 2)":
                thr is not None and thr.delivered_per_s >= TARGET_DELIVERED_PER_S,
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets_met"] = self.targets()
        data["inbox_checks_ok"] = [c.ok for c in self.inbox_checks]
        return data


class Bench:
    def __init__(self, alice: Member, bob: Member, broker: Broker, report: Report,
                 out: TextIO, spy: tuple[str, str, int] | None) -> None:
        self.alice, self.bob, self.broker = alice, bob, broker
        self.report = report
        self.out = out
        self.spy = spy
        self.procs = Procs(alice.pid, bob.pid, broker.pid)
        self.sent: set[str] = set()  # every id answered 202, for the inbox check
        self.tag = secrets.token_hex(3)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def mismatch(self, text: str) -> None:
        self.report.mismatches.append(text)
        self.say(f"MISMATCH: {text}")

    async def run(self) -> None:
        reader = SseReader(self.bob.sock)
        await reader.start()
        try:
            await self.warmup(reader)
            self.report.latency = await self.scenario_latency(reader)
            self.report.throughput = await self.scenario_throughput(reader)
            await self.check_inbox("scenario 2")
            self.report.backlog_drain = await self.scenario_backlog(reader)
            await self.check_inbox("scenario 3")
        finally:
            self.report.sse_events = reader.events
            self.report.sse_duplicates = sum(reader.duplicates.values())
            self.report.sse_reconnects = reader.reconnects
            self.report.sse_errors = reader.errors
            await reader.close()
        self.report.memory_mib = {
            "alice": memory_mib(self.alice.pid),
            "bob": memory_mib(self.bob.pid),
            "broker": memory_mib(self.broker.pid),
            **self.report.memory_mib,
        }

    async def warmup(self, reader: SseReader) -> None:
        conn = Connection(self.alice.sock)
        try:
            for n in range(WARMUP):
                cmid = f"w{self.tag}-{n}"
                status, body = await conn.request(b"POST", b"/v1/send",
                                                  send_body(self.bob.pubkey, cmid, n))
                if status != 202:
                    raise SystemExit(f"warm-up send refused: HTTP {status} {body[:300]!r}")
                self.sent.add(cmid)
                await asyncio.wait_for(reader.wait_for(cmid), SEQUENTIAL_TIMEOUT_S)
        except TimeoutError:
            raise SystemExit(f"warm-up: no SSE event on bob's side within"
                             f" {SEQUENTIAL_TIMEOUT_S:.0f} s; broker log:\n"
                             + self.broker.log_tail()) from None
        finally:
            conn.close()
        self.say(f"warm-up: {WARMUP} messages delivered")

    async def scenario_latency(self, reader: SseReader) -> LatencyResult:
        n_total = self.report.sequential
        conn = Connection(self.alice.sock)
        await conn.open()
        e2e: list[float] = []
        accept: list[float] = []
        errors: list[str] = []
        n_errors = 0
        cpu0 = self.procs.sample()
        started = time.perf_counter()
        try:
            for n in range(n_total):
                cmid = f"s{self.tag}-{n}"
                body = send_body(self.bob.pubkey, cmid, n)
                t0 = time.perf_counter()
                try:
                    status, answer = await conn.request(b"POST", b"/v1/send", body)
                except (OSError, asyncio.IncompleteReadError, ProtocolError) as exc:
                    conn.close()
                    status, answer = 0, f"{type(exc).__name__}: {exc}".encode()
                accept.append(time.perf_counter() - t0)
                if status != 202:
                    n_errors += 1
                    if len(errors) < MAX_SAMPLES:
                        errors.append(f"{cmid}: HTTP {status} {answer[:300]!r}")
                    continue
                self.sent.add(cmid)
                try:
                    arrived = await asyncio.wait_for(reader.wait_for(cmid), SEQUENTIAL_TIMEOUT_S)
                except TimeoutError:
                    n_errors += 1
                    if len(errors) < MAX_SAMPLES:
                        errors.append(f"{cmid}: no SSE event within {SEQUENTIAL_TIMEOUT_S:.0f} s")
                    continue
                e2e.append(arrived - t0)
        finally:
            conn.close()
        wall = time.perf_counter() - started
        shares = cpu_shares(cpu0, self.procs.sample(), wall)
        result = LatencyResult(
            messages=n_total, delivered=len(e2e), errors=n_errors, wall_s=round(wall, 3),
            end_to_end=Percentiles.of(e2e), accept=Percentiles.of(accept), cpu=shares,
            bottleneck=bottleneck(shares), error_samples=errors)
        self.say(f"scenario 1, latency: {n_total} sequential messages, {len(e2e)} delivered,"
                 f" {n_errors} errors, wall {wall:.2f} s\n"
                 f"  send -> SSE event: {result.end_to_end}\n"
                 f"  send -> 202:       {result.accept}\n"
                 f"  CPU: {format_cpu(shares)}\n"
                 f"  bottleneck: {result.bottleneck}")
        for sample in errors:
            self.say(f"  error: {sample}")
        if n_errors:
            self.mismatch(f"scenario 1: {n_errors} of {n_total} messages not sent or not"
                          " delivered")
        return result

    def _delivery(self, reader: SseReader, batch: SendBatch,
                  label: str) -> tuple[list[str], int, float]:
        """Missing ids, duplicated ids and the last arrival time of a batch."""
        missing = [c for c in batch.accepted if c not in reader.arrivals]
        duplicates = sum(reader.duplicates[c] for c in batch.ids)
        last = max((reader.arrivals[c] for c in batch.accepted if c in reader.arrivals),
                   default=0.0)
        if missing:
            self.mismatch(f"{label}: {len(missing)} of {len(batch.accepted)} accepted"
                          f" messages never arrived on bob's SSE stream, e.g. {missing[:3]}")
        if duplicates:
            self.mismatch(f"{label}: {duplicates} duplicate SSE events")
        return missing, duplicates, last

    async def scenario_throughput(self, reader: SseReader) -> ThroughputResult:
        total, senders = self.report.messages, self.report.senders
        tag = f"t{self.tag}"
        w = reader.watch(f"{tag}-{n}" for n in range(total))
        reference_before = reference_loop_us()
        spy = self.start_spy(2)
        cpu0 = self.procs.sample()
        batch = await send_many(self.alice.sock, self.bob.pubkey, total=total,
                                senders=senders, tag=tag)
        self.sent.update(batch.accepted)
        w.pending.intersection_update(batch.accepted)
        if not w.pending and not w.done.done():
            w.done.set_result(None)
        complete = await wait_watch(reader, w, since=time.perf_counter(), stall_s=STALL_S)
        end = time.perf_counter()
        self.stop_spy(spy)
        if not complete:
            await self.diagnose("scenario 2", w.pending)
        missing, duplicates, last = self._delivery(reader, batch, "scenario 2")
        wall = (last or end) - batch.first_post
        shares = cpu_shares(cpu0, self.procs.sample(), end - batch.first_post)
        accept_wall = batch.last_202 - batch.first_post
        e2e = [reader.arrivals[c] - batch.started[c] for c in batch.accepted
               if c in reader.arrivals]
        delivered = len(batch.accepted) - len(missing)
        result = ThroughputResult(
            messages=total, senders=senders, accepted=len(batch.accepted),
            errors=total - len(batch.accepted), delivered=delivered, missing=len(missing),
            duplicates=duplicates, accept_wall_s=round(accept_wall, 3),
            accepts_per_s=len(batch.accepted) / accept_wall if accept_wall > 0 else 0.0,
            wall_s=round(wall, 3), delivered_per_s=delivered / wall if wall > 0 else 0.0,
            end_to_end=Percentiles.of(e2e), accept=Percentiles.of(batch.accept_latency),
            cpu=shares, bottleneck=bottleneck(shares), error_samples=batch.errors,
            reference_us=(round(reference_before, 2), round(reference_loop_us(), 2)))
        self.say(f"scenario 2, throughput: {total} messages from {senders} senders,"
                 f" {result.accepted} accepted, {result.delivered} delivered,"
                 f" {result.missing} missing, {result.duplicates} duplicates\n"
                 f"  accepts: {result.accepts_per_s:,.0f}/s (last 202 after"
                 f" {accept_wall:.2f} s); 202 latency {result.accept}\n"
                 f"  delivered: {result.delivered_per_s:,.0f}/s (first POST -> last SSE event"
                 f" {wall:.2f} s)\n"
                 f"  send -> SSE event: {result.end_to_end}\n"
                 f"  CPU: {format_cpu(shares)}\n"
                 f"  bottleneck: {result.bottleneck}\n"
                 f"  machine speed: reference loop {result.reference_us[0]:.2f} us before,"
                 f" {result.reference_us[1]:.2f} us after (idle system; lower is faster)")
        for sample in batch.errors:
            self.say(f"  error: {sample}")
        if result.errors:
            self.mismatch(f"scenario 2: {result.errors} sends not answered 202")
        return result

    async def diagnose(self, label: str, pending: set[str]) -> None:
        """After a stall: where are the ids that did not arrive? (alice, broker, bob)"""
        stuck = sorted(pending, key=lambda c: int(c.rpartition("-")[2]))
        lines = [f"STALL in {label}: {len(stuck)} ids missing after {STALL_S:.0f} s without"
                 f" an event; first {stuck[:1]}, last {stuck[-1:]}"]
        for member in (self.alice, self.bob):
            with contextlib.suppress(OSError, ProtocolError, asyncio.IncompleteReadError,
                                     ValueError):
                health = await get_json(member.sock, "/v1/health")
                meshes = [{k: m.get(k) for k in ("link", "connected", "queue_depth",
                                                  "inflight", "dead", "lag_ms", "last_error")}
                          for m in health.get("meshes", [])]
                lines.append(f"  {member.name} health: queue_depth"
                             f" {health.get('queue_depth')}, meshes {meshes}")
        for status in ("pending", "inflight"):
            with contextlib.suppress(OSError, ProtocolError, asyncio.IncompleteReadError,
                                     ValueError):
                items = (await get_json(self.alice.sock,
                                        f"/v1/outbox?status={status}&limit=500"))["items"]
                ours = [i for i in items if i["client_message_id"] in pending]
                summary = Counter((i["attempts"], i["last_error"]) for i in ours)
                lines.append(f"  alice outbox {status}: {len(items)} rows (<= 500 listed),"
                             f" {len(ours)} of the missing ids; (attempts, last_error):"
                             f" {dict(summary)}")
                if ours:
                    lines.append(f"    e.g. {json.dumps(ours[0])[:400]}")
        try:
            uri = f"file:{self.broker.db}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
                conn.execute("CREATE TEMP TABLE missing (cmid TEXT PRIMARY KEY)")
                conn.executemany("INSERT INTO missing VALUES (?)", ((c,) for c in stuck))
                (stored,) = conn.execute(
                    "SELECT count(*) FROM message JOIN missing"
                    " ON message.client_message_id = missing.cmid").fetchone()
                queued = conn.execute(
                    "SELECT acked_at IS NULL, count(*) FROM delivery_queue d"
                    " JOIN message m ON m.id = d.message_id"
                    " JOIN missing ON m.client_message_id = missing.cmid"
                    " GROUP BY acked_at IS NULL").fetchall()
                (unacked_all,) = conn.execute(
                    "SELECT count(*) FROM delivery_queue WHERE acked_at IS NULL").fetchone()
            lines.append(f"  broker db: {stored} of the missing ids stored as messages;"
                         f" their deliveries (unacked?, count): {queued};"
                         f" unacked deliveries in all: {unacked_all}")
        except sqlite3.Error as exc:
            lines.append(f"  broker db: not readable ({exc})")
        with contextlib.suppress(OSError, ProtocolError, asyncio.IncompleteReadError,
                                 ValueError):
            newest = (await get_json(self.bob.sock, "/v1/inbox?limit=1"))["items"]
            lines.append(f"  bob inbox newest: {[i.get('client_message_id') for i in newest]}")
        logs = [(m.name, m.daemon_dir / "daemon.log") for m in (self.alice, self.bob)]
        for name, path in [*logs, ("broker", self.broker.root / "broker.log")]:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()
                notable = [t for t in text if "warn" in t.lower() or "error" in t.lower()]
                lines.append(f"  {name} log: {len(text)} lines, {len(notable)} warnings/errors")
                lines.extend(f"    {t[:300]}" for t in notable[-5:])
        for line in lines:
            self.say(line)
        self.report.stalls.append("\n".join(lines))

    async def poll_link(self, member: Member, since: float) -> float | None:
        """Seconds from ``since`` until ``member``'s link is open again."""
        deadline = since + RESTART_STALL_S
        while time.perf_counter() < deadline:
            with contextlib.suppress(OSError, ProtocolError, asyncio.IncompleteReadError,
                                     ValueError):
                health = await get_json(member.sock, "/v1/health")
                if all(m.get("connected") for m in health.get("meshes", [])):
                    return time.perf_counter() - since
            await asyncio.sleep(HEALTH_POLL_S)
        return None

    async def queue_depth(self) -> int | None:
        with contextlib.suppress(OSError, ProtocolError, asyncio.IncompleteReadError,
                                 ValueError, KeyError):
            return int((await get_json(self.alice.sock, "/v1/health"))["queue_depth"])
        return None

    async def scenario_backlog(self, reader: SseReader) -> BacklogResult:
        total, senders = self.report.backlog, self.report.senders
        tag = f"b{self.tag}"
        self.report.memory_mib["broker before stop"] = memory_mib(self.broker.pid)
        self.say(f"scenario 3, backlog: stopping the broker (pid {self.broker.pid},"
                 f" port {self.broker.port})")
        await asyncio.to_thread(self.broker.stop)
        down_at = time.perf_counter()
        self.procs.broker = 0
        w = reader.watch(f"{tag}-{n}" for n in range(total))
        cpu0 = self.procs.sample()
        batch = await send_many(self.alice.sock, self.bob.pubkey, total=total,
                                senders=senders, tag=tag)
        accept_wall = batch.last_202 - batch.first_post
        cpu_accept = cpu_shares(cpu0, self.procs.sample(), accept_wall)
        cpu_accept.pop("broker", None)
        self.sent.update(batch.accepted)
        w.pending.intersection_update(batch.accepted)
        depth_before = await self.queue_depth()
        accepts_per_s = len(batch.accepted) / accept_wall if accept_wall > 0 else 0.0
        self.say(f"  {len(batch.accepted)} of {total} accepted with the broker down:"
                 f" {accepts_per_s:,.0f}/s ({accept_wall:.2f} s); alice queue_depth"
                 f" {depth_before}\n  CPU: {format_cpu(cpu_accept)}")
        if depth_before != len(batch.accepted):
            self.mismatch(f"scenario 3: alice's queue_depth is {depth_before}, expected"
                          f" {len(batch.accepted)} while the broker is down")
        early = sum(1 for c in batch.accepted if c in reader.arrivals)
        if early:
            self.mismatch(f"scenario 3: {early} messages arrived while the broker was down")

        await asyncio.to_thread(self.broker.start)
        restarted = time.perf_counter()
        broker_down = restarted - down_at
        self.procs.broker = self.broker.pid
        cpu1 = self.procs.sample()
        self.say(f"  broker restarted on port {self.broker.port} (pid {self.broker.pid})"
                 f" after {broker_down:.1f} s down; draining")
        spy = self.start_spy(3)
        links = asyncio.gather(self.poll_link(self.alice, restarted),
                               self.poll_link(self.bob, restarted))
        if not w.pending and not w.done.done():
            w.done.set_result(None)
        complete = await wait_watch(reader, w, since=restarted, stall_s=RESTART_STALL_S)
        end = time.perf_counter()
        self.stop_spy(spy)
        if not complete:
            await self.diagnose("scenario 3", w.pending)
        cpu_drain = cpu_shares(cpu1, self.procs.sample(), end - restarted)
        alice_up, bob_up = await links
        missing, duplicates, last = self._delivery(reader, batch, "scenario 3")
        arrived = [reader.arrivals[c] for c in batch.accepted if c in reader.arrivals]
        first = min(arrived, default=None)
        delivered = len(arrived)
        to_last = (last - restarted) if arrived else None
        first_to_last = (last - first) if first is not None else None
        depth_after = await self.wait_queue_empty()
        result = BacklogResult(
            messages=total, accepted=len(batch.accepted), errors=total - len(batch.accepted),
            accept_wall_s=round(accept_wall, 3), accepts_per_s=accepts_per_s,
            queue_depth_before_restart=depth_before, broker_down_s=round(broker_down, 3),
            alice_reconnect_s=alice_up, bob_reconnect_s=bob_up,
            restart_to_first_event_s=None if first is None else first - restarted,
            restart_to_last_event_s=to_last, first_to_last_event_s=first_to_last,
            delivered=delivered, missing=len(missing), duplicates=duplicates,
            delivered_per_s_from_restart=delivered / to_last if to_last else 0.0,
            delivered_per_s_first_to_last=(delivered / first_to_last
                                           if first_to_last else 0.0),
            queue_depth_after=depth_after, cpu_accept=cpu_accept, cpu_drain=cpu_drain,
            bottleneck_drain=bottleneck(cpu_drain), error_samples=batch.errors)

        def secs(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f} s"

        self.say(f"  links open again after restart: alice {secs(alice_up)},"
                 f" bob {secs(bob_up)}\n"
                 f"  delivered {delivered} of {len(batch.accepted)}, {len(missing)} missing,"
                 f" {duplicates} duplicates\n"
                 f"  restart -> first SSE event {secs(result.restart_to_first_event_s)},"
                 f" restart -> last {secs(to_last)}"
                 f" ({result.delivered_per_s_from_restart:,.0f}/s),"
                 f" first -> last {secs(first_to_last)}"
                 f" ({result.delivered_per_s_first_to_last:,.0f}/s)\n"
                 f"  alice queue_depth after the drain: {depth_after}\n"
                 f"  CPU (restart -> end): {format_cpu(cpu_drain)}\n"
                 f"  bottleneck: {result.bottleneck_drain}")
        for sample in batch.errors:
            self.say(f"  error: {sample}")
        if result.errors:
            self.mismatch(f"scenario 3: {result.errors} sends not answered 202")
        if depth_after != 0:
            self.mismatch(f"scenario 3: alice's queue_depth is {depth_after} after the drain")
        return result

    async def wait_queue_empty(self) -> int | None:
        deadline = time.perf_counter() + QUEUE_EMPTY_TIMEOUT_S
        depth = await self.queue_depth()
        while depth != 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.2)
            depth = await self.queue_depth()
        return depth

    async def check_inbox(self, after: str) -> None:
        """Page bob's inbox (ascending) and compare it with every id answered 202."""
        conn = Connection(self.bob.sock)
        seen: Counter[str] = Counter()
        rows = 0
        cursor = ""
        try:
            while True:
                path = f"/v1/inbox?limit={INBOX_PAGE}&order=asc" + (
                    f"&cursor={cursor}" if cursor else "")
                status, body = await conn.request(b"GET", path.encode())
                if status != 200:
                    raise ProtocolError(f"GET {path}: HTTP {status} {body[:200]!r}")
                page = json.loads(body)
                for item in page["items"]:
                    rows += 1
                    seen[str(item.get("client_message_id"))] += 1
                if not page.get("next_cursor"):
                    break
                cursor = str(page["next_cursor"])
        finally:
            conn.close()
        check = InboxCheck(after=after, rows=rows, unique=len(seen), expected=len(self.sent),
                           missing=len(self.sent - seen.keys()),
                           unexpected=len(seen.keys() - self.sent))
        self.report.inbox_checks.append(check)
        self.say(f"bob's inbox after {after}: {rows} rows, {check.unique} distinct ids,"
                 f" {check.expected} expected")
        if not check.ok:
            self.mismatch(f"inbox after {after}: {rows} rows ({check.unique} distinct),"
                          f" expected {check.expected}; missing {check.missing},"
                          f" unexpected {check.unexpected}")

    def start_spy(self, scenario: int) -> subprocess.Popen[bytes] | None:
        if self.spy is None or self.spy[2] != scenario:
            return None
        target, path, _ = self.spy
        pid = {"alice": self.alice.pid, "bob": self.bob.pid, "broker": self.broker.pid}[target]
        self.say(f"py-spy: sampling {target} (pid {pid}) during scenario {scenario}"
                 f" into {path}")
        return start_py_spy(pid, path, gil=True)

    @staticmethod
    def stop_spy(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            stop_py_spy(proc)


# -- main -------------------------------------------------------------------------------


def print_summary(report: Report, out: TextIO) -> None:
    print("", file=out)
    print(f"python {report.python}, {report.cpus} CPUs; warm-up {report.warmup},"
          f" sequential {report.sequential}, messages {report.messages} from"
          f" {report.senders} senders, backlog {report.backlog}", file=out)
    print(f"SSE stream: {report.sse_events} message events, {report.sse_duplicates}"
          f" duplicates, {report.sse_reconnects} reconnects", file=out)
    for error in report.sse_errors:
        print(f"  SSE error: {error}", file=out)
    for name, mem in report.memory_mib.items():
        print(f"RSS {name}: {mem.get('VmRSS', 0):.1f} MiB (peak {mem.get('VmHWM', 0):.1f} MiB)",
              file=out)
    for name, met in report.targets().items():
        print(f"target {name}: {'met' if met else 'MISSED'}", file=out)
    if report.mismatches:
        print(f"{len(report.mismatches)} MISMATCH(es):", file=out)
        for text in report.mismatches:
            print(f"  MISMATCH: {text}", file=out)
    else:
        print("all messages delivered exactly once; inbox counts match", file=out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=2000,
                        help="scenario 1: messages sent one at a time")
    parser.add_argument("--messages", type=int, default=20_000,
                        help="scenario 2: messages from concurrent senders")
    parser.add_argument("--senders", type=int, default=32,
                        help="scenarios 2 and 3: concurrent keep-alive connections")
    parser.add_argument("--backlog", type=int, default=50_000,
                        help="scenario 3: messages queued while the broker is down")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="record a py-spy raw profile (--threads) of one process")
    parser.add_argument("--py-spy-target", choices=("alice", "bob", "broker"),
                        default="alice", help="the process --py-spy samples")
    parser.add_argument("--py-spy-scenario", type=int, choices=(2, 3), default=2,
                        help="when --py-spy samples: scenario 2 (the concurrent sends and"
                             " their delivery) or 3 (from the broker restart to the end of"
                             " the drain)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (progress goes to stderr)")
    parser.add_argument("--tls", action="store_true",
                        help="the broker serves wss:// with a self-signed key the invite pins"
                             " (A/B against plain ws://: bench/ab.py e2e --with=--tls)")
    args = parser.parse_args(argv)
    for name in ("sequential", "messages", "senders", "backlog"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    report = Report(python=f"{platform.python_implementation()} {platform.python_version()}",
                    cpus=os.cpu_count() or 1, sequential=args.sequential,
                    messages=args.messages, senders=args.senders, backlog=args.backlog)
    root = Path(tempfile.mkdtemp(prefix="cme", dir="/tmp"))
    broker = Broker(root)
    alice, bob = Member("alice", root / "a"), Member("bob", root / "b")
    teardown: list[str] = []
    try:
        if args.tls:
            broker.make_cert()
        broker.start()
        invite = broker.create_mesh("demo", max_uses=10)
        alice.join(invite)
        bob.join(invite)
        for member in (alice, bob):
            info = member.start()
            print(f"{member.name}: daemon pid {member.pid}, links {info.get('links')}",
                  file=out, flush=True)
        print(f"broker pid {broker.pid} at {broker.url}", file=out, flush=True)
        spy = None if args.py_spy is None else (args.py_spy_target, args.py_spy,
                                                args.py_spy_scenario)
        bench = Bench(alice, bob, broker, report, out, spy)
        asyncio.run(bench.run())
    finally:
        for member in (alice, bob):
            if (error := member.stop()) is not None:
                teardown.append(error)
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    for error in teardown:
        print(f"teardown: {error}", file=out)
    print_summary(report, out)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
