"""Broker benchmark: accepts, topic fan-out and idle-connection memory over real WebSockets.

What is measured
    A real broker is started with ``claudemesh broker up --port 0 --json`` on a fresh
    SQLite file in a temporary directory under ``/tmp``, with the per-member rate limit
    effectively disabled (the hidden ``--rate-per-s``/``--rate-burst`` flags). One mesh is
    created with ``claudemesh mesh create`` and every member of every scenario is joined
    through the real ``join`` exchange (a thread pool of synchronous joins). A prep pass
    then connects each member once, sends ``set_profile {"visible": false}`` and
    disconnects, so that presence events (``peer_joined``/``peer_left``, which go to every
    connected member of the mesh) add no traffic to the scenarios below; it also warms
    the broker up.

    Idle memory (run first, on the fresh broker). ``VmRSS`` of the broker is read from
    ``/proc/<pid>/status`` after the prep pass, then ``--idle`` members (default 500)
    each open one authenticated connection (hello -> hello_ack) and stay silent for
    ``IDLE_HOLD_S`` seconds; ``VmRSS`` is read again. Reported: the broker's RSS before
    and after, and (after - before) / N in KB per idle connection.

    Scenario A, accepts. One extra member subscribes to topic ``bench`` and disconnects,
    so every accept writes a delivery row that simply stays queued in the database and
    nothing is pushed: the measurement is the accept path only. ``--senders`` members
    (default 32) each hold their own connection, split over ``--procs`` client processes.
    After a short warm-up, ``--sends`` sends (default 20,000) to ``#bench`` are spread
    over the connections (a shared counter per process, so a slow connection does not
    leave the others idle at the end); each connection keeps at most ``--pipeline``
    requests in flight (default 8). Latency is from writing a send frame to reading the
    ``send_result`` with its ``req_id``. Per run: accepts/s (201s over the wall time from
    the first send of any process to the last answer), latency p50/p90/p99/max and the
    non-201 answers. ``--runs`` runs (default 3) use the same broker.

    Scenario B, fan-out. ``--receivers`` members (default 100, split over
    ``--recv-procs`` processes) connect and subscribe to topic ``fanout``; one sender in
    the main process sends ``--messages`` messages (default 1,000) to it, ``--pipeline``
    in flight. Each receiver reads its pushes and acks them in batches (every
    ``ACK_BATCH`` pushes, and every ``ACK_INTERVAL_S`` for the rest). Reported: unique
    deliveries (must be receivers x messages), duplicates (a ``client_message_id`` pushed
    twice to one receiver: a re-push after the 30 s delivery lease, not expected here),
    wall time from the first send to the last push, deliveries/s and the latency from
    send to push, p50/p99 (``time.perf_counter`` is ``CLOCK_MONOTONIC``, shared by all
    processes on Linux, so send and receive times from different processes compare).

    For every scenario the broker's CPU seconds are read from ``/proc/<pid>/task/*/stat``
    (utime + stime), split into its event-loop thread (the main thread) and the others
    (the SQLite writer thread), and compared with the clients' CPU seconds, so the report
    can say which side was saturated. The client is deliberately light (``json`` and a
    bare ``websockets`` client, no pydantic): on a 2-core machine it competes with the
    broker. With ``--py-spy FILE`` the broker is sampled by ``py-spy record --format raw``
    during scenario A.

Run::

    .venv/bin/python bench/broker.py [--runs 3] [--sends 20000] [--senders 32]
        [--pipeline 8] [--procs 1] [--receivers 100] [--messages 1000] [--recv-procs 1]
        [--idle 500] [--py-spy /tmp/broker.txt] [--json]

At the end the broker is stopped with SIGTERM and the directory is removed. Exit status 1
when any send was not answered 201, or scenario B's delivery count is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import platform
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from claudemesh.crypto import MemberKey
from claudemesh.joining import join_mesh
from claudemesh.protocol.handshake import hello_frame
from claudemesh.protocol.invite import decode_invite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lib.children import BARRIER_TIMEOUT_S, Children, split
from _lib.procs import Broker, start_py_spy, stop_py_spy
from _lib.procsample import memory_kb, sum_cpu, thread_cpu
from _lib.stats import Percentiles, format_ms, median

TARGET_ACCEPTS_PER_S: Final = 3000.0
TARGET_P99_MS: Final = 20.0
TARGET_IDLE_KB: Final = 100.0
SQLITE_MODE: Final = "WAL, synchronous=FULL, group commit"
MAX_FRAME: Final = 4 * 1024 * 1024
TOPIC_ACCEPT: Final = "bench"
TOPIC_FANOUT: Final = "fanout"
JOIN_THREADS: Final = 16
PREP_CONCURRENCY: Final = 8
IDLE_OPEN_CONCURRENCY: Final = 50
IDLE_SETTLE_S: Final = 1.0
IDLE_HOLD_S: Final = 2.0
WARMUP_PER_CONNECTION: Final = 10
ACK_BATCH: Final = 50
ACK_INTERVAL_S: Final = 0.02
RECEIVE_IDLE_TIMEOUT_S: Final = 40.0  # > the 30 s delivery lease: re-pushes still count
REPLY_TIMEOUT_S: Final = 30.0
MAX_ERROR_SAMPLES: Final = 5
SATURATED: Final = 0.85  # a thread busy for this share of the wall time is the bottleneck


# -- members and a minimal client ------------------------------------------------------


def join_members(invite: str, names: list[str]) -> list[dict[str, str]]:
    """Join ``names`` to the mesh; each member is a plain dict (it crosses processes)."""
    decoded = decode_invite(invite)

    def one(name: str) -> dict[str, str]:
        key = MemberKey.generate()
        result = join_mesh(decoded, key, name)
        return {"mesh_id": str(result.mesh_id), "member_id": str(result.member_id),
                "pubkey": key.pubkey, "secret_key": key.secret_key}

    with ThreadPoolExecutor(JOIN_THREADS) as pool:
        return list(pool.map(one, names))


def hello_text(member: dict[str, str]) -> str:
    key = MemberKey(member["pubkey"], member["secret_key"])
    return json.dumps(hello_frame(mesh_id=member["mesh_id"], member_id=member["member_id"],
                                  pubkey=member["pubkey"], sign=key.sign,
                                  timestamp_ms=time.time_ns() // 1_000_000))


async def open_session(url: str, member: dict[str, str]) -> ClientConnection:
    """Connect and say hello; returns the connection once ``hello_ack`` arrived."""
    ws = await connect(url, max_size=MAX_FRAME)
    try:
        await ws.send(hello_text(member))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S))
            if frame.get("type") == "hello_ack":
                return ws
            if frame.get("type") == "error":
                raise RuntimeError(f"hello refused: {frame}")
    except BaseException:
        await ws.close()
        raise


async def request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send one request and return the answer with its ``req_id`` (other frames skipped)."""
    req_id = "q" + secrets.token_hex(6)
    await ws.send(json.dumps({**frame, "req_id": req_id}))
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while True:
        answer = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if answer.get("req_id") == req_id:
            return dict(answer)


def send_text(req_id: str, cmid: str, topic: str, text: str) -> str:
    return json.dumps({
        "type": "send", "req_id": req_id, "client_message_id": cmid, "envelope_version": "1",
        "destination_kind": "topic", "destination_ref": topic, "priority": "next",
        "reply_to": None, "meta": None,
        "body_hash": hashlib.sha256(text.encode()).hexdigest(),
        "body": {"kind": "plain", "text": text}})


async def drive(conns: list[ClientConnection], total: int, *, pipeline: int, tag: str,
                topic: str, send_times: dict[str, float] | None = None) -> dict[str, Any]:
    """``total`` sends over ``conns``, at most ``pipeline`` unanswered per connection.

    Returns latencies (s), accepted (201) and error counts, a few error samples, and the
    ``perf_counter`` of the first write and of the last answer. When ``send_times`` is
    given, it receives the write time of every ``client_message_id``.
    """
    counter = itertools.count()
    latencies: list[float] = []
    samples: list[str] = []
    tally = {"accepted": 0, "errors": 0}

    async def one(ws: ClientConnection) -> None:
        sent: dict[str, float] = {}
        slots = asyncio.Semaphore(pipeline)
        drained = asyncio.Event()
        failed: list[BaseException] = []

        async def reader() -> None:
            try:
                while True:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") != "send_result":
                        continue  # events; none expected with invisible members
                    started = sent.pop(frame.get("req_id"), None)
                    if started is None:
                        continue
                    latencies.append(time.perf_counter() - started)
                    if frame.get("code") == 201:
                        tally["accepted"] += 1
                    else:
                        tally["errors"] += 1
                        if len(samples) < MAX_ERROR_SAMPLES:
                            samples.append(json.dumps(frame)[:300])
                    slots.release()
                    if not sent:
                        drained.set()
            except (ConnectionClosed, ValueError) as exc:
                failed.append(exc)
                for _ in range(pipeline):
                    slots.release()
                drained.set()

        task = asyncio.create_task(reader())
        try:
            while not failed and (n := next(counter)) < total:
                await slots.acquire()
                if failed:
                    break
                req_id, cmid = f"r{n}", f"{tag}-{n}"
                text = send_text(req_id, cmid, topic, f"bench message {n}")
                drained.clear()
                started = time.perf_counter()
                sent[req_id] = started
                if send_times is not None:
                    send_times[cmid] = started
                await ws.send(text)
            if sent and not failed:
                await asyncio.wait_for(drained.wait(), REPLY_TIMEOUT_S)
        except (ConnectionClosed, TimeoutError) as exc:
            failed.append(exc)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if failed:
            tally["errors"] += len(sent)
            if len(samples) < MAX_ERROR_SAMPLES:
                samples.append(f"connection failed, {len(sent)} unanswered: {failed[0]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(one(ws) for ws in conns))
    return {"latencies": latencies, "accepted": tally["accepted"], "errors": tally["errors"],
            "samples": samples, "started": started, "finished": time.perf_counter()}


# -- client processes -------------------------------------------------------------------


async def _sender_child(job: dict[str, Any], barrier: Any) -> dict[str, Any]:
    """Scenario A in a child process: connect, warm up, wait for "go", run the load."""
    conns = list(await asyncio.gather(*(open_session(job["url"], m) for m in job["members"])))
    try:
        await drive(conns, WARMUP_PER_CONNECTION * len(conns), pipeline=job["pipeline"],
                    tag=job["tag"] + "w", topic=TOPIC_ACCEPT)
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT_S)  # ready
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT_S)  # go
        cpu0 = time.process_time()
        result = await drive(conns, job["sends"], pipeline=job["pipeline"], tag=job["tag"],
                             topic=TOPIC_ACCEPT)
        result["cpu_s"] = time.process_time() - cpu0
        return result
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


async def read_pushes(ws: ClientConnection, done: Callable[[], bool],
                      on_push: Callable[[dict[str, Any]], None]) -> None:
    """Hand each push to ``on_push`` until ``done()`` or the stream idles, acking in
    batches (every ``ACK_BATCH`` pushes, and every ``ACK_INTERVAL_S`` for the rest)."""
    pending: list[str] = []

    async def flush() -> None:
        if pending:
            ids = pending[:]
            pending.clear()
            await ws.send(json.dumps({"type": "client_ack", "delivery_ids": ids}))

    async def ticker() -> None:
        while True:
            await asyncio.sleep(ACK_INTERVAL_S)
            await flush()

    tick = asyncio.create_task(ticker())
    try:
        while not done():
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), RECEIVE_IDLE_TIMEOUT_S))
            except (TimeoutError, ConnectionClosed):
                break
            if frame.get("type") != "push":
                continue
            on_push(frame)
            pending.append(frame["delivery_id"])
            if len(pending) >= ACK_BATCH:
                await flush()
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    with contextlib.suppress(ConnectionClosed):
        await flush()


async def _receive(ws: ClientConnection, expected: int) -> tuple[list[tuple[str, float]], int]:
    """Read pushes until ``expected`` distinct messages arrived, acking in batches."""
    seen: dict[str, float] = {}
    duplicates = 0

    def on_push(frame: dict[str, Any]) -> None:
        nonlocal duplicates
        now = time.perf_counter()
        cmid = frame["client_message_id"]
        if cmid in seen:
            duplicates += 1
        else:
            seen[cmid] = now

    await read_pushes(ws, lambda: len(seen) >= expected, on_push)
    return list(seen.items()), duplicates


async def _receiver_child(job: dict[str, Any], barrier: Any) -> dict[str, Any]:
    """Scenario B in a child process: connect and subscribe, then collect pushes."""
    conns = list(await asyncio.gather(*(open_session(job["url"], m) for m in job["members"])))
    try:
        for ws in conns:
            answer = await request(ws, {"type": "subscribe", "topic": TOPIC_FANOUT})
            if answer.get("type") != "result":
                raise RuntimeError(f"subscribe failed: {answer}")
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT_S)  # ready
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT_S)  # go
        cpu0 = time.process_time()
        per_receiver = await asyncio.gather(*(_receive(ws, job["expected"]) for ws in conns))
        return {"arrivals": [a for arrivals, _ in per_receiver for a in arrivals],
                "counts": [len(arrivals) for arrivals, _ in per_receiver],
                "duplicates": sum(d for _, d in per_receiver),
                "cpu_s": time.process_time() - cpu0}
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


# -- the scenarios -----------------------------------------------------------------------


@dataclass(slots=True)
class AcceptRun:
    sends: int
    accepted: int
    errors: int
    wall_s: float
    accepts_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    broker_cpu_s: float
    broker_loop_cpu_s: float
    client_cpu_s: float
    error_samples: list[str]


@dataclass(slots=True)
class FanoutResult:
    receivers: int
    messages: int
    send_errors: int
    deliveries: int
    expected: int
    duplicates: int
    short_receivers: int
    wall_s: float
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    broker_cpu_s: float
    broker_loop_cpu_s: float
    client_cpu_s: float
    error_samples: list[str]


@dataclass(slots=True)
class IdleResult:
    connections: int
    rss_before_kb: int
    rss_after_kb: int
    kb_per_connection: float
    open_s: float


async def make_invisible(url: str, members: list[dict[str, str]]) -> None:
    """Prep pass: hello, ``set_profile visible=false``, close (a few at a time)."""
    gate = asyncio.Semaphore(PREP_CONCURRENCY)

    async def one(member: dict[str, str]) -> None:
        async with gate:
            ws = await open_session(url, member)
            try:
                answer = await request(ws, {"type": "set_profile", "visible": False})
                if answer.get("type") != "result":
                    raise RuntimeError(f"set_profile failed: {answer}")
            finally:
                await ws.close()

    await asyncio.gather(*(one(m) for m in members))


async def subscribe_and_leave(url: str, member: dict[str, str], topic: str) -> None:
    ws = await open_session(url, member)
    try:
        answer = await request(ws, {"type": "subscribe", "topic": topic})
        if answer.get("type") != "result":
            raise RuntimeError(f"subscribe failed: {answer}")
    finally:
        await ws.close()


async def idle_memory(broker: Broker, members: list[dict[str, str]]) -> IdleResult:
    await asyncio.sleep(IDLE_SETTLE_S)
    before = memory_kb(broker.pid)["VmRSS"]
    gate = asyncio.Semaphore(IDLE_OPEN_CONCURRENCY)

    async def one(member: dict[str, str]) -> ClientConnection:
        async with gate:
            return await open_session(broker.url, member)

    async def drain(ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    started = time.perf_counter()
    conns = list(await asyncio.gather(*(one(m) for m in members)))
    open_s = time.perf_counter() - started
    drains = [asyncio.create_task(drain(ws)) for ws in conns]
    try:
        await asyncio.sleep(IDLE_HOLD_S)
        after = memory_kb(broker.pid)["VmRSS"]
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
        await asyncio.gather(*drains, return_exceptions=True)
    return IdleResult(len(conns), before, after, (after - before) / len(conns), open_s)


def accept_run(broker: Broker, senders: list[dict[str, str]], *, sends: int, pipeline: int,
               procs: int, tag: str, others: tuple[Broker, ...] = ()) -> AcceptRun:
    """Scenario A; with ``others``, client process i talks to broker i mod (1 + others)."""
    brokers = (broker, *others)
    groups = split(senders, procs)
    shares = [sends * len(g) // len(senders) for g in groups]
    shares[0] += sends - sum(shares)
    jobs = [{"url": brokers[i % len(brokers)].url, "members": g, "sends": s,
             "pipeline": pipeline,
             "tag": f"{tag}p{i}"} for i, (g, s) in enumerate(zip(groups, shares, strict=True))]
    children = Children(_sender_child, jobs)
    try:
        children.meet()  # every process connected and warmed up
        cpu0 = [thread_cpu(b.pid) for b in brokers]
        children.meet()  # go
        results = children.results()
        cpu = sum_cpu(thread_cpu(b.pid) - c for b, c in zip(brokers, cpu0, strict=True))
    finally:
        children.close()
    latency = Percentiles.of(x for r in results for x in r["latencies"])
    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
    accepted = sum(r["accepted"] for r in results)
    return AcceptRun(
        sends=sends, accepted=accepted, errors=sum(r["errors"] for r in results), wall_s=wall,
        accepts_per_s=accepted / wall if wall > 0 else 0.0,
        p50_ms=latency.p50_ms, p90_ms=latency.p90_ms, p99_ms=latency.p99_ms,
        max_ms=latency.max_ms,
        broker_cpu_s=cpu.total_s, broker_loop_cpu_s=cpu.loop_s,
        client_cpu_s=sum(r["cpu_s"] for r in results),
        error_samples=[s for r in results for s in r["samples"]][:MAX_ERROR_SAMPLES])


async def fanout(broker: Broker, sender: dict[str, str], receivers: list[dict[str, str]], *,
                 messages: int, pipeline: int, procs: int,
                 receivers_on: Broker | None = None) -> FanoutResult:
    """Scenario B; the receivers connect to ``receivers_on`` (default: the sender's broker)."""
    target = receivers_on or broker
    jobs = [{"url": target.url, "members": g, "expected": messages}
            for g in split(receivers, procs)]
    children = Children(_receiver_child, jobs)
    send_times: dict[str, float] = {}
    try:
        ws = await open_session(broker.url, sender)
        try:
            await asyncio.to_thread(children.meet)  # receivers connected and subscribed
            brokers = [broker] if target is broker else [broker, target]
            cpu0 = [thread_cpu(b.pid) for b in brokers]
            await asyncio.to_thread(children.meet)  # go
            client0 = time.process_time()
            sent = await drive([ws], messages, pipeline=pipeline, tag="f" + secrets.token_hex(3),
                               topic=TOPIC_FANOUT, send_times=send_times)
            sender_cpu = time.process_time() - client0
        finally:
            await ws.close()
        results = await asyncio.to_thread(children.results)
        cpu = sum_cpu(thread_cpu(b.pid) - c for b, c in zip(brokers, cpu0, strict=True))
    finally:
        children.close()
    arrivals = [a for r in results for a in r["arrivals"]]
    latency = Percentiles.of(t - send_times[cmid] for cmid, t in arrivals if cmid in send_times)
    counts = [c for r in results for c in r["counts"]]
    wall = (max(t for _, t in arrivals) - sent["started"]) if arrivals else 0.0
    return FanoutResult(
        receivers=len(receivers), messages=messages, send_errors=sent["errors"],
        deliveries=len(arrivals), expected=len(receivers) * messages,
        duplicates=sum(r["duplicates"] for r in results),
        short_receivers=sum(1 for c in counts if c < messages), wall_s=wall,
        deliveries_per_s=len(arrivals) / wall if wall > 0 else 0.0,
        p50_ms=latency.p50_ms, p99_ms=latency.p99_ms, max_ms=latency.max_ms,
        broker_cpu_s=cpu.total_s,
        broker_loop_cpu_s=cpu.loop_s,
        client_cpu_s=sender_cpu + sum(r["cpu_s"] for r in results),
        error_samples=sent["samples"])


# -- the report ---------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    python: str
    sqlite_version: str
    sqlite_mode: str
    cpus: int | None
    settings: dict[str, Any]
    broker_pid: int = 0
    setup_s: float = 0.0
    idle: IdleResult | None = None
    accept_runs: list[AcceptRun] = field(default_factory=list)
    fanout: FanoutResult | None = None
    broker_rss_kb: int = 0
    broker_peak_rss_kb: int = 0
    broker_exit: int | None = None
    py_spy: str | None = None

    @property
    def median_accepts_per_s(self) -> float:
        return median(r.accepts_per_s for r in self.accept_runs)

    @property
    def median_p99_ms(self) -> float:
        return median(r.p99_ms for r in self.accept_runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.accept_runs) + (
            self.fanout.send_errors if self.fanout else 0)

    @property
    def deliveries_ok(self) -> bool:
        return self.fanout is None or self.fanout.deliveries == self.fanout.expected

    def targets(self) -> dict[str, bool]:
        targets = {
            f"accepts/s >= {TARGET_ACCEPTS_PER_S:,.0f}":
                self.median_accepts_per_s >= TARGET_ACCEPTS_PER_S,
            f"accept p99 <= {TARGET_P99_MS:.0f} ms": self.median_p99_ms <= TARGET_P99_MS,
        }
        if self.idle is not None:
            targets[f"<= {TARGET_IDLE_KB:.0f} KB per idle connection"] = (
                self.idle.kb_per_connection <= TARGET_IDLE_KB)
        return targets

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(median_accepts_per_s=self.median_accepts_per_s,
                    median_p99_ms=self.median_p99_ms, errors=self.errors,
                    deliveries_ok=self.deliveries_ok, targets_met=self.targets())
        return data


def bottleneck(wall_s: float, broker_loop_s: float, broker_s: float, client_s: float,
               client_procs: int) -> str:
    """Which side was saturated: the broker's loop thread, the clients, or the machine."""
    if wall_s <= 0:
        return "n/a"
    loop, broker, client = broker_loop_s / wall_s, broker_s / wall_s, client_s / wall_s
    cores = os.cpu_count() or 1
    shares = (f"broker loop thread {loop:.0%} of a core, broker total {broker:.0%},"
              f" clients {client:.0%} over {client_procs} process(es), {cores} cores")
    if loop >= SATURATED:
        verdict = "broker-bound (its event-loop thread is saturated)"
    elif broker >= SATURATED:
        verdict = ("broker-bound (its threads together keep one core busy, and they share"
                   " one GIL)")
    elif client >= SATURATED * client_procs:
        verdict = "client-bound (the client processes are saturated)"
    elif broker + client >= SATURATED * cores:
        verdict = "CPU-bound (broker and clients together fill the machine)"
    else:
        verdict = "no CPU saturated (waiting: fsync, scheduling or round trips)"
    return f"{verdict}; {shares}"


def format_accept(label: str, r: AcceptRun, procs: int) -> str:
    return (f"{label}: {r.sends} sends, {r.accepted} accepted, {r.errors} errors,"
            f" wall {r.wall_s:.2f} s, {r.accepts_per_s:,.0f} accepts/s | latency ms"
            f" {format_ms(r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms)}"
            f" | CPU s broker {r.broker_cpu_s:.2f} (loop thread {r.broker_loop_cpu_s:.2f})"
            f" clients {r.client_cpu_s:.2f}\n    "
            + bottleneck(r.wall_s, r.broker_loop_cpu_s, r.broker_cpu_s, r.client_cpu_s, procs))


def format_fanout(f: FanoutResult, procs: int) -> str:
    lines = [
        f"fan-out: {f.receivers} receivers x {f.messages} messages on #{TOPIC_FANOUT}:"
        f" {f.deliveries} deliveries (expected {f.expected}), {f.duplicates} duplicates,"
        f" {f.send_errors} send errors",
        f"    wall {f.wall_s:.2f} s (first send to last push), {f.deliveries_per_s:,.0f}"
        f" deliveries/s | send->push latency ms p50 {f.p50_ms:.2f} p99 {f.p99_ms:.2f}"
        f" max {f.max_ms:.2f}",
        f"    CPU s broker {f.broker_cpu_s:.2f} (loop thread {f.broker_loop_cpu_s:.2f})"
        f" clients {f.client_cpu_s:.2f}",
        "    " + bottleneck(f.wall_s, f.broker_loop_cpu_s, f.broker_cpu_s, f.client_cpu_s,
                            procs + 1)]
    if f.deliveries != f.expected:
        lines.append(f"    WRONG DELIVERY COUNT: {f.deliveries} != {f.expected}"
                     f" ({f.short_receivers} receivers short)")
    if f.duplicates:
        lines.append(f"    DUPLICATES: {f.duplicates} pushes repeated a client_message_id")
    lines += [f"    error: {s}" for s in f.error_samples]
    return "\n".join(lines)


def format_idle(i: IdleResult) -> str:
    return (f"idle connections: {i.connections} opened in {i.open_s:.2f} s, broker RSS"
            f" {i.rss_before_kb / 1024:.1f} MiB -> {i.rss_after_kb / 1024:.1f} MiB,"
            f" {i.kb_per_connection:.1f} KB per idle connection")


def print_summary(report: Report, out: TextIO) -> None:
    s = report.settings
    print("", file=out)
    print(f"python {report.python}; sqlite {report.sqlite_version} ({report.sqlite_mode});"
          f" {report.cpus} CPUs", file=out)
    print(f"settings: {s['runs']} run(s) x {s['sends']} sends over {s['senders']} sender"
          f" connections in {s['procs']} process(es), pipeline {s['pipeline']} per connection;"
          f" fan-out {s['receivers']} receivers x {s['messages']} messages"
          f" ({s['recv_procs']} receiver process(es)); {s['idle']} idle connections;"
          " rate limit off", file=out)
    if report.idle is not None:
        print(format_idle(report.idle), file=out)
    for i, run in enumerate(report.accept_runs, 1):
        print(format_accept(f"accept run {i}", run, s["procs"]), file=out)
        for sample in run.error_samples:
            print(f"    error: {sample}", file=out)
    if report.accept_runs:
        print(f"median accepts/s: {report.median_accepts_per_s:,.0f};"
              f" median p99: {report.median_p99_ms:.2f} ms", file=out)
    if report.fanout is not None:
        print(format_fanout(report.fanout, s["recv_procs"]), file=out)
    print(f"broker RSS at the end: {report.broker_rss_kb / 1024:.1f} MiB, peak (VmHWM)"
          f" {report.broker_peak_rss_kb / 1024:.1f} MiB; exit status after SIGTERM:"
          f" {report.broker_exit}", file=out)
    if report.py_spy:
        print(f"py-spy profile of scenario A: {report.py_spy}", file=out)
    for name, met in report.targets().items():
        print(f"target {name}: {'met' if met else 'MISSED'}", file=out)


# -- main -----------------------------------------------------------------------------


async def measure(broker: Broker, report: Report, args: argparse.Namespace,
                  out: TextIO) -> None:
    started = time.perf_counter()
    invite = broker.create_mesh("bench", max_uses=args.senders + args.receivers + args.idle + 2)
    names = ([f"sender-{i}" for i in range(args.senders)] + ["sink"]
             + [f"receiver-{i}" for i in range(args.receivers)] + ["fanout-sender"]
             + [f"idle-{i}" for i in range(args.idle)])
    members = await asyncio.to_thread(join_members, invite, names)
    senders, sink = members[:args.senders], members[args.senders]
    rest = members[args.senders + 1:]
    receivers, fan_sender = rest[:args.receivers], rest[args.receivers]
    idle = rest[args.receivers + 1:]
    await make_invisible(broker.url, members)
    report.setup_s = time.perf_counter() - started
    print(f"setup: {len(members)} members joined and made invisible in {report.setup_s:.1f} s",
          file=out)

    if idle:
        report.idle = await idle_memory(broker, idle)
        print(format_idle(report.idle), file=out)

    await subscribe_and_leave(broker.url, sink, TOPIC_ACCEPT)
    spy = start_py_spy(broker.pid, args.py_spy) if args.py_spy else None
    try:
        for i in range(1, args.runs + 1):
            run = await asyncio.to_thread(
                accept_run, broker, senders, sends=args.sends, pipeline=args.pipeline,
                procs=args.procs, tag=f"a{i}{secrets.token_hex(3)}")
            report.accept_runs.append(run)
            print(format_accept(f"accept run {i}", run, args.procs), file=out)
    finally:
        if spy is not None:
            stop_py_spy(spy)
            report.py_spy = args.py_spy

    if args.receivers and args.messages:
        report.fanout = await fanout(broker, fan_sender, receivers, messages=args.messages,
                                     pipeline=args.pipeline, procs=args.recv_procs)
        print(format_fanout(report.fanout, args.recv_procs), file=out)
    memory = memory_kb(broker.pid)
    report.broker_rss_kb, report.broker_peak_rss_kb = memory["VmRSS"], memory["VmHWM"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="scenario A runs, same broker")
    parser.add_argument("--sends", type=int, default=20_000, help="scenario A sends per run")
    parser.add_argument("--senders", type=int, default=32, help="scenario A connections")
    parser.add_argument("--pipeline", type=int, default=8,
                        help="requests in flight per sending connection")
    parser.add_argument("--procs", type=int, default=1,
                        help="client processes for scenario A's senders")
    parser.add_argument("--receivers", type=int, default=100, help="scenario B receivers")
    parser.add_argument("--messages", type=int, default=1000, help="scenario B messages")
    parser.add_argument("--recv-procs", type=int, default=1,
                        help="client processes for scenario B's receivers")
    parser.add_argument("--idle", type=int, default=500, help="idle connections to measure")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="sample the broker with py-spy (raw format) during scenario A")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (progress goes to stderr)")
    args = parser.parse_args(argv)
    for name in ("runs", "sends", "senders", "pipeline", "procs", "recv_procs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("receivers", "messages", "idle"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must not be negative")
    args.procs = min(args.procs, args.senders)
    args.recv_procs = max(1, min(args.recv_procs, args.receivers))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    report = Report(
        python=f"{platform.python_implementation()} {platform.python_version()}",
        sqlite_version=sqlite3.sqlite_version, sqlite_mode=SQLITE_MODE, cpus=os.cpu_count(),
        settings={k: v for k, v in vars(args).items() if k not in ("json", "py_spy")})
    workdir = Path(tempfile.mkdtemp(prefix="cmbb", dir="/tmp"))
    broker = Broker(workdir)
    try:
        broker.start()
        report.broker_pid = broker.pid
        print(f"broker pid {broker.pid} at {broker.url}", file=out)
        try:
            asyncio.run(measure(broker, report, args, out))
        finally:
            report.broker_exit = broker.stop()
    except BaseException:
        tail = broker.log_tail()
        if tail:
            print(f"broker log (tail):\n{tail}", file=sys.stderr)
        raise
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_summary(report, out)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    return 0 if report.errors == 0 and report.deliveries_ok else 1


if __name__ == "__main__":
    sys.exit(main())
