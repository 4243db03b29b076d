"""The broker's SQLite store when the disk is full (``PRAGMA max_page_count`` makes SQLite
answer SQLITE_FULL as a full disk would): the accept fails with InsufficientStorage and
leaves no dedupe claim, the ``send_result`` the handler builds from it is a 507 the
daemon's drain retries, and the same accept goes through once there is room.

The end-to-end run on a real full tmpfs is tests/integration/test_disk_full.py.
"""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from claudemesh.broker.accept import error_result
from claudemesh.broker.store.base import AcceptKind
from claudemesh.broker.store.sqlite import SqliteBrokerStore
from claudemesh.daemon.drain_rules import VerdictKind, classify_result
from claudemesh.errors import InsufficientStorage
from claudemesh.protocol.replies import parse_reply
from storekit import send, setup_mesh

BIG_BODY = '{"kind":"plain","text":"' + "x" * 300_000 + '"}'  # about 75 pages of 4 KiB


async def room(store: SqliteBrokerStore, extra_pages: int | None) -> None:
    """Let the file grow by ``extra_pages`` (None: SQLite's default, in effect no limit)."""
    def op(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        limit = 1_073_741_823 if extra_pages is None else pages + extra_pages
        conn.execute(f"PRAGMA max_page_count={limit:d}").fetchone()
    await store._worker.run(op)


async def dedupe_rows(store: SqliteBrokerStore) -> int:
    def op(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM client_message_dedupe").fetchone()[0])
    return await store._worker.run(op)


async def test_a_full_disk_refuses_the_accept_with_a_retryable_507_and_keeps_nothing(
        store: SqliteBrokerStore) -> None:
    mesh, [alice, bob, _] = await setup_mesh(store)
    big = dataclasses.replace(send(mesh, alice, "c-full", to=bob.pubkey), body_json=BIG_BODY)
    await room(store, 2)
    with pytest.raises(InsufficientStorage) as refused:
        await store.accept(big)
    assert await dedupe_rows(store) == 0  # the claim went with the rest of the transaction
    frame = error_result("r1", "c-full", refused.value)
    assert (frame["type"], frame["code"], frame["error"]) == (
        "send_result", 507, "insufficient_storage")
    verdict = classify_result(parse_reply(frame))
    assert verdict.kind is VerdictKind.RETRY
    assert verdict.error is not None and verdict.error.startswith("507 insufficient_storage")
    await room(store, None)
    created = await store.accept(big)  # the drain's retry, once there is room
    assert created.kind is AcceptKind.CREATED
    assert [d.client_message_id for d in await store.pending_deliveries(
        bob.id, after=0, limit=10)] == ["c-full"]
