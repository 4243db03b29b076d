"""Accept-path benchmark: durable ``POST /v1/send`` over the daemon's Unix socket.

What is measured
    A real daemon is started with ``claudemesh daemon up --json`` in a fresh, private
    config directory (one joined mesh, a throw-away Ed25519 key). After a warm-up of a
    few hundred sends, ``--sends`` sends (default 20,000) are spread over ``--clients``
    concurrent clients (default 32), each holding one keep-alive HTTP/1.1 connection to
    the Unix socket; clients pull the next send from a shared counter, so a slow
    connection does not leave the others idle at the end. Every send has a unique
    ``client_message_id`` and must be answered ``202`` naming that id; anything else is
    an error. The whole load runs ``--runs`` times against the same daemon.

    Per run: accepted sends/s (202s over wall time, connections opened beforehand),
    latency p50/p90/p99/max from writing the request to having read the whole response,
    and the CPU seconds of the daemon (all threads, ``/proc/<pid>/stat``) and of this
    process. Daemon memory: ``VmRSS`` right after start-up and after the warm-up (the
    "idle RSS"), then ``VmRSS`` and the peak ``VmHWM`` after the last run. Finally the
    rows of ``outbox.db`` are counted with ``sqlite3`` after the daemon has stopped,
    which must equal the number of 202s (a ``MISMATCH`` line says otherwise).

How durability is kept (by the daemon; this script only checks it)
    ``outbox.db`` runs in WAL mode with ``synchronous=FULL``. One writer thread takes
    whatever accepts are queued, runs them in one ``BEGIN IMMEDIATE`` transaction and
    COMMITs (an fsync of the WAL) before any of their answers is sent: concurrent
    accepts share one fsync (group commit), and a 202 is never sent for a row that is
    not on disk.

The client is deliberately minimal (raw HTTP/1.1 on ``asyncio.open_unix_connection``,
no HTTP library) because on a 2-core machine it competes with the daemon for CPU.

Run::

    .venv/bin/python bench/accept.py [--sends N] [--clients C] [--runs R] [--json]

Exit status 0 when every send got its 202 and the row count matches, 1 otherwise.
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
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lib.procs import Member
from _lib.procsample import memory_mib, process_cpu_s
from _lib.stats import Percentiles, format_ms, median
from _lib.uds import Connection, ProtocolError

WARMUP_SENDS: Final = 200
IDLE_SETTLE_S: Final = 0.5
MAX_ERROR_BODIES: Final = 5
SQLITE_MODE: Final = "WAL, synchronous=FULL, group commit"
TARGET_SENDS_PER_S: Final = 3000.0
TARGET_P99_MS: Final = 20.0
TARGET_IDLE_RSS_MIB: Final = 60.0


# -- the daemon under test -------------------------------------------------------------


def write_config(config_dir: Path) -> None:
    """``config.json`` (0600) with one joined mesh and a fresh signing key."""
    key = nacl.signing.SigningKey.generate()
    pubkey = key.verify_key.encode().hex()
    doc = {"version": 1, "meshes": [{
        "slug": "bench", "mesh_id": "m-bench", "member_id": "mem-1",
        "display_name": "alice", "broker_url": "ws://127.0.0.1:7900/ws",
        "pubkey": pubkey, "secret_key": key.encode().hex() + pubkey,
    }]}
    fd = os.open(config_dir / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f)


def count_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM outbox").fetchone()
    return int(rows)


# -- one measured load ---------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    sends: int
    accepted: int
    errors: int
    wall_s: float
    sends_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    daemon_cpu_s: float
    bench_cpu_s: float
    error_samples: list[str]


async def run_load(sock: str, *, sends: int, clients: int, tag: str,
                   cpu: Callable[[], float]) -> RunResult:
    """``sends`` sends over ``clients`` keep-alive connections; ids are ``<tag>-<n>``."""
    conns = [Connection(sock) for _ in range(min(clients, sends))]
    await asyncio.gather(*(c.open() for c in conns))
    counter = itertools.count()
    latencies: list[float] = []
    samples: list[str] = []
    errors = 0
    prefix = tag.encode()

    async def client(conn: Connection) -> None:
        nonlocal errors
        while (n := next(counter)) < sends:
            cmid = b"%s-%d" % (prefix, n)
            body = (b'{"to":"#bench","message":"bench message %d","client_message_id":"%s"}'
                    % (n, cmid))
            started = time.perf_counter()
            try:
                status, answer = await conn.request(b"POST", b"/v1/send", body)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ProtocolError) as exc:
                conn.close()
                status, answer = 0, f"{type(exc).__name__}: {exc}".encode()
            latencies.append(time.perf_counter() - started)
            if status != 202 or b'"client_message_id":"%s"' % cmid not in answer:
                errors += 1
                if len(samples) < MAX_ERROR_BODIES:
                    samples.append(f"{cmid.decode()}: HTTP {status} "
                                   f"{answer[:300].decode('utf-8', 'replace')}")

    daemon_cpu0, bench_cpu0 = cpu(), time.process_time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        wall = time.perf_counter() - started
        for conn in conns:
            conn.close()
    accepted = sends - errors
    latency = Percentiles.of(latencies)
    return RunResult(
        sends=sends, accepted=accepted, errors=errors, wall_s=wall,
        sends_per_s=accepted / wall if wall > 0 else 0.0,
        p50_ms=latency.p50_ms, p90_ms=latency.p90_ms, p99_ms=latency.p99_ms,
        max_ms=latency.max_ms,
        daemon_cpu_s=cpu() - daemon_cpu0, bench_cpu_s=time.process_time() - bench_cpu0,
        error_samples=samples,
    )


async def queue_depth(sock: str) -> int | None:
    conn = Connection(sock)
    try:
        status, body = await conn.request(b"GET", b"/v1/health")
    finally:
        conn.close()
    return int(json.loads(body)["queue_depth"]) if status == 200 else None


# -- the whole benchmark --------------------------------------------------------------


@dataclass(slots=True)
class Report:
    python: str
    sqlite_version: str
    sqlite_mode: str
    sends_per_run: int
    clients: int
    runs: list[RunResult] = field(default_factory=list)
    warmup: RunResult | None = None
    startup_rss_mib: float = 0.0
    idle_rss_mib: float = 0.0
    final_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    queue_depth: int | None = None
    outbox_rows: int | None = None
    expected_rows: int = 0

    @property
    def median_sends_per_s(self) -> float:
        return median(r.sends_per_s for r in self.runs)

    @property
    def median_p99_ms(self) -> float:
        return median(r.p99_ms for r in self.runs)

    @property
    def total_errors(self) -> int:
        return sum(r.errors for r in self.runs) + (self.warmup.errors if self.warmup else 0)

    @property
    def rows_match(self) -> bool:
        return self.outbox_rows == self.expected_rows

    def targets(self) -> dict[str, bool]:
        return {
            f"accepted sends/s >= {TARGET_SENDS_PER_S:.0f}":
                self.median_sends_per_s >= TARGET_SENDS_PER_S,
            f"p99 <= {TARGET_P99_MS:.0f} ms": self.median_p99_ms <= TARGET_P99_MS,
            f"idle RSS <= {TARGET_IDLE_RSS_MIB:.0f} MiB":
                self.idle_rss_mib <= TARGET_IDLE_RSS_MIB,
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(median_sends_per_s=self.median_sends_per_s,
                    median_p99_ms=self.median_p99_ms, total_errors=self.total_errors,
                    rows_match=self.rows_match, targets_met=self.targets())
        return data


def format_run(label: str, r: RunResult) -> str:
    return (f"{label}: {r.sends} sends, {r.errors} errors, wall {r.wall_s:.2f} s,"
            f" {r.sends_per_s:,.0f} accepted sends/s | latency ms"
            f" {format_ms(r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms)}"
            f" | CPU s daemon {r.daemon_cpu_s:.2f} bench {r.bench_cpu_s:.2f}")


async def measure(daemon: Member, report: Report, *, runs: int, out: TextIO) -> None:
    report.startup_rss_mib = memory_mib(daemon.pid)["VmRSS"]
    tag = secrets.token_hex(4)

    def daemon_cpu() -> float:
        return process_cpu_s(daemon.pid)

    report.warmup = await run_load(daemon.sock, sends=WARMUP_SENDS, clients=report.clients,
                                   tag=f"w{tag}", cpu=daemon_cpu)
    print(format_run("warm-up", report.warmup), file=out)
    await asyncio.sleep(IDLE_SETTLE_S)
    report.idle_rss_mib = memory_mib(daemon.pid)["VmRSS"]
    print(f"daemon RSS: start-up {report.startup_rss_mib:.1f} MiB,"
          f" idle after warm-up {report.idle_rss_mib:.1f} MiB", file=out)
    for i in range(1, runs + 1):
        result = await run_load(daemon.sock, sends=report.sends_per_run,
                                clients=report.clients, tag=f"r{i}{tag}",
                                cpu=daemon_cpu)
        report.runs.append(result)
        print(format_run(f"run {i}", result), file=out)
        for sample in result.error_samples:
            print(f"  error: {sample}", file=out)
    memory = memory_mib(daemon.pid)
    report.final_rss_mib, report.peak_rss_mib = memory["VmRSS"], memory["VmHWM"]
    report.queue_depth = await queue_depth(daemon.sock)


def print_summary(report: Report, out: TextIO) -> None:
    if report.warmup is None:
        return
    total = report.sends_per_run * len(report.runs)
    print("", file=out)
    print(f"python {report.python}; sqlite {report.sqlite_version} ({report.sqlite_mode})",
          file=out)
    print(f"load: {len(report.runs)} run(s) x {report.sends_per_run} sends,"
          f" {report.clients} clients, one keep-alive UDS connection each", file=out)
    print(f"total sends: {total} (+{WARMUP_SENDS} warm-up), errors: {report.total_errors}",
          file=out)
    print(f"median accepted sends/s: {report.median_sends_per_s:,.0f}", file=out)
    print(f"median p99 latency: {report.median_p99_ms:.2f} ms", file=out)
    print(f"daemon RSS: idle {report.idle_rss_mib:.1f} MiB, after runs"
          f" {report.final_rss_mib:.1f} MiB, peak (VmHWM) {report.peak_rss_mib:.1f} MiB",
          file=out)
    print(f"health queue_depth after runs: {report.queue_depth}", file=out)
    print(f"outbox.db rows (sqlite3, after daemon down): {report.outbox_rows},"
          f" 202s answered: {report.expected_rows}", file=out)
    if not report.rows_match:
        print(f"MISMATCH: outbox.db holds {report.outbox_rows} rows but"
              f" {report.expected_rows} sends were answered 202", file=out)
    for name, met in report.targets().items():
        print(f"target {name}: {'met' if met else 'MISSED'}", file=out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=20_000, help="sends per run")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument("--runs", type=int, default=3, help="measured runs, same daemon")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout (progress goes to stderr)")
    args = parser.parse_args(argv)
    for name in ("sends", "clients", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    report = Report(python=f"{platform.python_implementation()} {platform.python_version()}",
                    sqlite_version=sqlite3.sqlite_version, sqlite_mode=SQLITE_MODE,
                    sends_per_run=args.sends, clients=args.clients)
    workdir = Path(tempfile.mkdtemp(prefix="cmb", dir="/tmp"))
    try:
        write_config(workdir)
        daemon = Member("alice", workdir)
        daemon.start()
        print(f"daemon pid {daemon.pid} on {daemon.sock}", file=out)
        try:
            asyncio.run(measure(daemon, report, runs=args.runs, out=out))
        finally:
            if (error := daemon.stop()) is not None:
                raise SystemExit(error)
        report.expected_rows = sum(r.accepted for r in report.runs) + (
            report.warmup.accepted if report.warmup else 0)
        report.outbox_rows = count_rows(daemon.daemon_dir / "outbox.db")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_summary(report, out)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    return 0 if report.rows_match and report.total_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
