"""Scale-out benchmark: the same workload on SQLite (1 broker), PostgreSQL (1 broker) and
PostgreSQL (2 brokers sharing one database), run one after the other in one process.

What is measured
    A throwaway PostgreSQL cluster is started the way the tests start it
    (``tests/pgkit.py``: ``initdb`` + ``pg_ctl`` in a temporary directory, loopback only,
    ``fsync=off`` and ``synchronous_commit=off`` because the data is disposable). Each
    configuration gets a fresh store: a new SQLite file, or a new database on that
    cluster. Its brokers are real ``claudemesh broker up`` processes (bench/broker.py's
    ``Broker``) with the per-member rate limit lifted; the mesh lists every broker's URL.
    Members join through the real invite exchange and are made invisible, so presence
    events add no traffic.

    Accepts (bench/broker.py's scenario A). ``--senders`` connections (default 32) in
    ``--procs`` client processes (default 2) send ``--sends`` topic messages (default
    10,000) with ``--pipeline`` requests in flight per connection (default 1). With two
    brokers, client process i talks to broker i mod 2, so the load is split evenly. The
    topic has one offline subscriber: every accept writes its delivery row, nothing is
    pushed. Reported per run: accepts/s, latency p50/p99, broker CPU seconds (all
    brokers), and how busy the whole machine was (``/proc/stat``), which says whether the
    two cores were the limit. ``--repeats`` runs (default 3) per configuration; medians.

    End to end (bench/broker.py's scenario B). One sender on the first broker sends
    ``--messages`` topic messages (default 2,000, ``--e2e-pipeline`` in flight, default
    4) to ``--receivers`` subscribers (default 4) connected to the *last* broker: with two
    brokers every push crosses brokers through LISTEN/NOTIFY. Latency is from writing
    the send frame to reading the push, per delivery; reported p50/p99 and deliveries/s.

    Ratios are computed between the configurations of this one run: PostgreSQL 2 brokers /
    1 broker (the scaling ratio) and PostgreSQL 1 broker / SQLite. On a 2-core machine,
    two brokers, PostgreSQL's backends and the client processes all share the same two
    cores, so the scaling ratio here says what sharing a database costs, not what a second
    machine would add.

Run::

    .venv/bin/python bench/cluster.py [--repeats 3] [--sends 10000] [--senders 32]
        [--pipeline 1] [--procs 2] [--receivers 4] [--messages 2000] [--json]

Exit status 1 when an accept was not answered 201 or a delivery was missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import broker as bb
from _lib.machine import machine_jiffies
from _lib.procs import Broker
from _lib.stats import median
from pgkit import PgCluster, pg_unavailable_reason

CONFIGS: Final = (("sqlite", 1), ("postgres", 1), ("postgres", 2))


@dataclass(slots=True)
class ConfigResult:
    store: str
    brokers: int
    accept_runs: list[dict[str, Any]] = field(default_factory=list)
    e2e: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.store} x{self.brokers}"

    def median(self, key: str) -> float:
        return median(r[key] for r in self.accept_runs)

    @property
    def ok(self) -> bool:
        return (all(r["errors"] == 0 for r in self.accept_runs)
                and self.e2e.get("deliveries") == self.e2e.get("expected")
                and self.e2e.get("duplicates") == 0)


async def run_config(store: str, count: int, cluster: PgCluster | None,
                     args: argparse.Namespace, out: TextIO) -> ConfigResult:
    root = Path(tempfile.mkdtemp(prefix="cmclu", dir="/tmp"))
    dsn = ""
    if store == "postgres":
        assert cluster is not None
        dsn = cluster.create_database(f"bench_{secrets.token_hex(4)}")
    brokers = []
    for i in range(count):
        (root / f"b{i}").mkdir()
        brokers.append(Broker(root / f"b{i}", store=dsn))
    result = ConfigResult(store, count)
    try:
        for b in brokers:
            b.start()
        first, last = brokers[0], brokers[-1]
        names = ([f"sender-{i}" for i in range(args.senders)] + ["sink", "e2e-sender"]
                 + [f"receiver-{i}" for i in range(args.receivers)])
        invite = first.create_mesh("bench", max_uses=len(names) + 1, urls=[b.url for b in brokers])
        members = await asyncio.to_thread(bb.join_members, invite, names)
        senders, sink, e2e_sender = (members[:args.senders], members[args.senders],
                                     members[args.senders + 1])
        receivers = members[args.senders + 2:]
        await bb.make_invisible(first.url, members)
        await bb.subscribe_and_leave(first.url, sink, bb.TOPIC_ACCEPT)
        for i in range(args.repeats):
            busy0, total0 = machine_jiffies()
            run = await asyncio.to_thread(
                bb.accept_run, first, senders, sends=args.sends, pipeline=args.pipeline,
                procs=args.procs, tag=f"c{i}{secrets.token_hex(3)}", others=tuple(brokers[1:]))
            busy1, total1 = machine_jiffies()
            row = asdict(run)
            row["machine_busy"] = (busy1 - busy0) / max(1, total1 - total0)
            result.accept_runs.append(row)
            print(f"{result.label}: accept run {i + 1}: {run.accepts_per_s:,.0f}/s"
                  f"  p50 {run.p50_ms:.1f} ms  p99 {run.p99_ms:.1f} ms"
                  f"  errors {run.errors}  broker CPU {run.broker_cpu_s:.1f} s"
                  f" in {run.wall_s:.1f} s  machine {row['machine_busy']:.0%} busy", file=out)
        if args.receivers and args.messages:
            busy0, total0 = machine_jiffies()
            fan = await bb.fanout(first, e2e_sender, receivers, messages=args.messages,
                                  pipeline=args.e2e_pipeline, procs=1, receivers_on=last)
            busy1, total1 = machine_jiffies()
            result.e2e = asdict(fan)
            result.e2e["machine_busy"] = (busy1 - busy0) / max(1, total1 - total0)
            print(f"{result.label}: end to end ({'across brokers' if count > 1 else 'one broker'})"
                  f": {fan.deliveries:,}/{fan.expected:,} deliveries, {fan.deliveries_per_s:,.0f}/s"
                  f"  p50 {fan.p50_ms:.1f} ms  p99 {fan.p99_ms:.1f} ms"
                  f"  duplicates {fan.duplicates}", file=out)
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(root, ignore_errors=True)
    return result


def ratios(results: list[ConfigResult]) -> dict[str, float]:
    by = {(r.store, r.brokers): r for r in results}
    sqlite, pg1, pg2 = by[("sqlite", 1)], by[("postgres", 1)], by[("postgres", 2)]

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    return {
        "pg2_over_pg1_accepts": ratio(pg2.median("accepts_per_s"), pg1.median("accepts_per_s")),
        "pg2_over_pg1_accept_p99": ratio(pg2.median("p99_ms"), pg1.median("p99_ms")),
        "pg1_over_sqlite_accepts": ratio(pg1.median("accepts_per_s"),
                                         sqlite.median("accepts_per_s")),
        "pg1_over_sqlite_accept_p99": ratio(pg1.median("p99_ms"), sqlite.median("p99_ms")),
        "pg2_over_pg1_e2e_p99": ratio(pg2.e2e.get("p99_ms", 0.0), pg1.e2e.get("p99_ms", 0.0)),
        "pg1_over_sqlite_e2e_p99": ratio(pg1.e2e.get("p99_ms", 0.0),
                                         sqlite.e2e.get("p99_ms", 0.0)),
    }


def print_summary(results: list[ConfigResult], rates: dict[str, float], out: TextIO) -> None:
    print("\nsummary (medians over accept runs)", file=out)
    print(f"{'store':<14}{'accepts/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'busy':>7}"
          f"{'e2e/s':>9}{'e2e p50':>9}{'e2e p99':>9}", file=out)
    for r in results:
        print(f"{r.label:<14}{r.median('accepts_per_s'):>11,.0f}{r.median('p50_ms'):>9.1f}"
              f"{r.median('p99_ms'):>9.1f}{r.median('machine_busy'):>7.0%}"
              f"{r.e2e.get('deliveries_per_s', 0.0):>9,.0f}{r.e2e.get('p50_ms', 0.0):>9.1f}"
              f"{r.e2e.get('p99_ms', 0.0):>9.1f}", file=out)
    for name, value in rates.items():
        print(f"{name}: {value:.2f}", file=out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="accept runs per configuration")
    parser.add_argument("--sends", type=int, default=10_000, help="sends per accept run")
    parser.add_argument("--senders", type=int, default=32, help="sending connections")
    parser.add_argument("--pipeline", type=int, default=1, help="in flight per connection")
    parser.add_argument("--procs", type=int, default=2, help="sending client processes")
    parser.add_argument("--receivers", type=int, default=4, help="end-to-end receivers")
    parser.add_argument("--messages", type=int, default=2000, help="end-to-end messages")
    parser.add_argument("--e2e-pipeline", type=int, default=4,
                        help="end-to-end sends in flight")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    for name in ("repeats", "sends", "senders", "pipeline", "procs", "e2e_pipeline"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.procs % 2:
        parser.error("--procs must be even, so two brokers get the same load")
    return args


async def amain(args: argparse.Namespace) -> int:
    reason = pg_unavailable_reason()
    if reason is not None:
        raise SystemExit(f"PostgreSQL is needed: {reason}")
    out = sys.stderr if args.json else sys.stdout
    cluster = PgCluster().start()
    results: list[ConfigResult] = []
    try:
        print(f"PostgreSQL test cluster on port {cluster.port}; {os.cpu_count()} CPUs", file=out)
        for store, count in CONFIGS:
            results.append(await run_config(store, count, cluster, args, out))
    finally:
        cluster.stop()
    rates = ratios(results)
    print_summary(results, rates, out)
    if args.json:
        json.dump({"settings": vars(args), "results": [asdict(r) for r in results],
                   "ratios": rates, "at": time.time()}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
