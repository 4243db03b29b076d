"""Topic history benchmark: one page of ``topic_history`` from a big topic (issue 15).

What is measured
    A broker SQLite store in a fresh directory under ``/tmp``, with the broker's own
    migrations and its real ``accept``: one mesh, two members subscribed to ``#big``,
    ``--messages`` posts to ``#big`` (default 10,000) interleaved with as many DMs and
    posts to another topic (so the topic is a third of the messages). Then
    ``--pages`` reads (default 200) of ``topic_history`` through the real store call
    (what the ``topic_history`` frame runs): the newest page, and pages further back
    through the ``before`` cursor, ``--limit`` items each (default 500, the daemon's
    maximum). p50/p99 of a read, per run, and medians over ``--runs`` runs (default 3).

    The reference, in the same process on the same file: the query before migration 8
    (join message to message_history, filter on the message's destination, sort by seq)
    and the store's query now, both as raw SQL on one connection, for the same pages
    (they must fetch the same rows). Reported: both, their p50 ratio, and the whole
    store call (its worker thread and the Delivery objects included).

Run::

    .venv/bin/python bench/history.py [--messages N] [--pages P] [--limit L] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _lib.stats import Percentiles, median
from claudemesh.broker.store.rows import DELIVERY_MESSAGE_COLUMNS
from claudemesh.broker.store.sqlite import SqliteBrokerStore
from storekit import send, setup_mesh  # the tests' own builders of accept inputs

TOPIC: Final = "big"
_NOW: Final = (
    f"SELECT 0, ?, {DELIVERY_MESSAGE_COLUMNS}"
    " FROM message_history h JOIN message m ON m.id = h.message_id"
    " WHERE h.mesh_id = ? AND h.topic = ? AND h.seq < ? ORDER BY h.seq DESC LIMIT ?")
_BEFORE_MIGRATION_8: Final = (
    f"SELECT 0, ?, {DELIVERY_MESSAGE_COLUMNS}"
    " FROM message m JOIN message_history h ON h.message_id = m.id"
    " WHERE m.mesh_id = ? AND m.destination_kind = 'topic'"
    " AND m.destination_ref = ? AND h.seq < ? ORDER BY h.seq DESC LIMIT ?")


async def build(path: Path, messages: int) -> tuple[str, str]:
    store = SqliteBrokerStore(path)
    try:
        mesh, [alice, bob, _] = await setup_mesh(store)
        for member in (alice, bob):
            await store.subscribe(mesh.id, member.id, TOPIC, 1)
            await store.subscribe(mesh.id, member.id, "other", 1)
        for n in range(messages):
            await store.accept(send(mesh, alice, f"b{n}", to=TOPIC, kind="topic"))
            await store.accept(send(mesh, alice, f"d{n}", to=bob.pubkey))
            await store.accept(send(mesh, alice, f"o{n}", to="other", kind="topic"))
        return mesh.id, bob.id
    finally:
        await store.close()


async def one_run(path: Path, mesh_id: str, reader: str, pages: int,
                  limit: int) -> tuple[Percentiles, Percentiles, Percentiles]:
    store = SqliteBrokerStore(path)
    raw = sqlite3.connect(path)
    ours: list[float] = []
    now: list[float] = []
    before: list[float] = []
    try:
        newest = await store.topic_history(mesh_id, reader, TOPIC, before=None, limit=1)
        top = int(str(newest[0].history_id)) + 1
        for n in range(pages):
            cursor = None if n % 4 == 0 else top - (n * 97 % (top // 2))  # some deep pages
            started = time.perf_counter()
            page = await store.topic_history(mesh_id, reader, TOPIC, before=cursor,
                                             limit=limit)
            ours.append(time.perf_counter() - started)
            args = (reader, mesh_id, TOPIC, 2**63 - 1 if cursor is None else cursor, limit)
            started = time.perf_counter()
            fetched = raw.execute(_NOW, args).fetchall()
            now.append(time.perf_counter() - started)
            started = time.perf_counter()
            rows = raw.execute(_BEFORE_MIGRATION_8, args).fetchall()
            before.append(time.perf_counter() - started)
            if fetched != rows:
                raise SystemExit(f"page {n}: the two queries disagree")
            if [d.client_message_id for d in page] != [r[4] for r in rows]:
                raise SystemExit(f"page {n}: the store and the reference disagree")
    finally:
        raw.close()
        await store.close()
    return Percentiles.of(ours), Percentiles.of(now), Percentiles.of(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="cmbh", dir="/tmp"))
    try:
        path = root / "broker.db"
        built = time.perf_counter()
        mesh_id, reader = asyncio.run(build(path, args.messages))
        built_s = time.perf_counter() - built
        runs = [asyncio.run(one_run(path, mesh_id, reader, args.pages, args.limit))
                for _ in range(args.runs)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ours_p50 = median([r[0].p50_ms for r in runs])
    ours_p99 = median([r[0].p99_ms for r in runs])
    sql_p50 = median([r[1].p50_ms for r in runs])
    sql_p99 = median([r[1].p99_ms for r in runs])
    ref_p50 = median([r[2].p50_ms for r in runs])
    ref_p99 = median([r[2].p99_ms for r in runs])
    result: dict[str, Any] = {
        "messages_in_topic": args.messages, "messages_in_store": 3 * args.messages,
        "limit": args.limit, "pages": args.pages, "runs": args.runs, "build_s": built_s,
        "store_p50_ms": ours_p50, "store_p99_ms": ours_p99, "sql_p50_ms": sql_p50,
        "sql_p99_ms": sql_p99, "before_p50_ms": ref_p50, "before_p99_ms": ref_p99,
        "speedup_p50": ref_p50 / sql_p50 if sql_p50 else None}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"#{TOPIC}: {args.messages} of {3 * args.messages} messages; pages of"
              f" {args.limit}, {args.pages} reads x {args.runs} runs (built in {built_s:.0f} s)")
        for n, (mine, sql, ref) in enumerate(runs, 1):
            print(f"  run {n}: store call {mine}; its query {sql}; before migration 8 {ref}")
        print(f"medians: store call p50 {ours_p50:.2f} ms p99 {ours_p99:.2f} ms; its query"
              f" p50 {sql_p50:.2f} ms p99 {sql_p99:.2f} ms; before migration 8 p50"
              f" {ref_p50:.2f} ms p99 {ref_p99:.2f} ms: {result['speedup_p50']:.1f}x at p50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
