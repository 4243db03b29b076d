"""A full disk on a real SQLite file: the error is InsufficientStorage (507), nothing of the
failed transaction stays, and the same connection and worker go on once there is room.

Two ways to run out of room: ``PRAGMA max_page_count`` (SQLite answers SQLITE_FULL as it
would on a full disk; needs nothing special), and a real 2 MB tmpfs filled to ENOSPC
(needs root to mount; skipped otherwise), where the failure comes at COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from claudemesh.errors import InsufficientStorage, StoreCorrupt, StoreError
from claudemesh.sqlitedb.db import immediate, open_database, store_error, store_errors
from claudemesh.sqlitedb.worker import DbWorker
from diskkit import fill, tmpfs

SCHEMA = ("CREATE TABLE t (k TEXT PRIMARY KEY, blob BLOB)",)
BIG = b"\x01" * 200_000  # about 50 pages of 4 KiB


def rows(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return sorted(r[0] for r in c.execute("SELECT k FROM t"))


def cap(conn: sqlite3.Connection, extra_pages: int | None) -> None:
    """Let the file grow by ``extra_pages`` more pages (None: back to SQLite's default)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    limit = 1_073_741_823 if extra_pages is None else pages + extra_pages
    conn.execute(f"PRAGMA max_page_count={limit:d}").fetchone()


def insert(key: str, blob: bytes = b"") -> Callable[[sqlite3.Connection], str]:
    def op(conn: sqlite3.Connection) -> str:
        with store_errors(f"inserting {key}"), immediate(conn):
            conn.execute("INSERT INTO t VALUES (?, ?)", (key, blob))
        return key
    return op


# -- the one translation ---------------------------------------------------------------


def test_sqlite_full_and_no_space_errors_become_insufficient_storage(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "a.db", SCHEMA)
    cap(conn, 1)
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.execute("INSERT INTO t VALUES ('x', ?)", (BIG,))
    error = store_error(full.value, "inserting")
    assert type(error) is InsufficientStorage
    assert (error.code, error.http_status) == ("insufficient_storage", 507)
    assert "inserting" in error.detail
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        assert type(store_error(OSError(code, "no room"), "writing")) is InsufficientStorage
    conn.close()


def test_other_errors_keep_their_classes(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "a.db", SCHEMA)
    conn.execute("INSERT INTO t VALUES ('x', NULL)")
    with pytest.raises(sqlite3.IntegrityError) as dup:
        conn.execute("INSERT INTO t VALUES ('x', NULL)")
    assert type(store_error(dup.value, "inserting")) is StoreError
    assert type(store_error(OSError(errno.EACCES, "denied"), "opening")) is StoreError
    conn.close()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreCorrupt):
        open_database(junk, SCHEMA)


def test_a_full_disk_inside_immediate_rolls_back_and_the_connection_goes_on(
        tmp_path: Path) -> None:
    """SQLite rolls the whole transaction back on SQLITE_FULL; ``immediate`` must not then
    fail on the savepoint it no longer has (which would hide the real error)."""
    path = tmp_path / "a.db"
    conn = open_database(path, SCHEMA)
    cap(conn, 2)
    with pytest.raises(InsufficientStorage):
        insert("big", BIG)(conn)
    assert not conn.in_transaction
    with pytest.raises(InsufficientStorage), store_errors("outer"), immediate(conn):
        conn.execute("INSERT INTO t VALUES ('kept?', NULL)")
        insert("nested-big", BIG)(conn)  # a savepoint inside the outer transaction
    assert rows(path) == []
    cap(conn, None)
    insert("big", BIG)(conn)
    assert rows(path) == ["big"]
    conn.close()


# -- the worker ------------------------------------------------------------------------


async def _group(worker: DbWorker, ops: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
    """Run ``ops`` as one group: a blocking operation holds the thread while they queue."""
    release = threading.Event()
    blocker = asyncio.ensure_future(worker.run(lambda _c: release.wait(10)))
    await asyncio.sleep(0.05)  # the thread is now inside the blocker
    waiting = [asyncio.ensure_future(worker.run(op)) for op in ops]
    await asyncio.sleep(0)  # every run() has queued its operation
    release.set()
    await blocker
    return await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_full_disk_fails_the_whole_group_and_the_worker_recovers(
        tmp_path: Path) -> None:
    """1. A group of small inserts with one too big for the room left.
    2. The big one fails with InsufficientStorage; every answer matches the file: what was
       answered as done is there, what failed is not (SQLite drops the whole group).
    3. Room again: the same worker commits the next operation."""
    path = tmp_path / "w.db"
    worker = DbWorker(open_database(path, SCHEMA), name="test")
    worker.start()
    try:
        await worker.run(lambda c: cap(c, 3))
        results = await _group(worker, [insert("a"), insert("b"), insert("big", BIG),
                                        insert("c")])
        assert isinstance(results[2], InsufficientStorage)
        done = sorted(r for r in results if isinstance(r, str))
        for result in results:
            assert isinstance(result, str | InsufficientStorage), result
        assert rows(path) == done
        await worker.run(lambda c: cap(c, None))
        assert await worker.run(insert("big", BIG)) == "big"
        assert await worker.run(insert("after")) == "after"
    finally:
        worker.stop()
    assert rows(path) == sorted(["after", "big", *done])


async def test_a_bare_sqlite_error_from_an_operation_is_translated_too(tmp_path: Path) -> None:
    """An operation without ``store_errors`` of its own still gets the 507."""
    worker = DbWorker(open_database(tmp_path / "w.db", SCHEMA), name="test")
    worker.start()
    try:
        await worker.run(lambda c: cap(c, 1))
        with pytest.raises(InsufficientStorage):
            await worker.run(lambda c: c.execute("INSERT INTO t VALUES ('x', ?)", (BIG,)))
        await worker.run(lambda c: cap(c, None))
        assert await worker.run(lambda c: c.execute(
            "INSERT INTO t VALUES ('x', ?)", (BIG,)).rowcount) == 1
    finally:
        worker.stop()


async def test_a_really_full_tmpfs_fails_at_commit_and_recovers_when_space_returns() -> None:
    """On a real filesystem the pages fit in the cache and the WAL write at COMMIT gets
    ENOSPC: the answer is 507, the file stays sound, and deleting the filler is enough."""
    with tmpfs("2m") as root:
        path = root / "w.db"
        worker = DbWorker(open_database(path, SCHEMA), name="test")
        worker.start()
        try:
            assert await worker.run(insert("before")) == "before"
            filler = fill(root)
            with pytest.raises(InsufficientStorage):
                await worker.run(insert("big", BIG))
            results = await _group(worker, [insert("a"), insert("big", BIG)])
            assert all(isinstance(r, InsufficientStorage) for r in results), results
            assert rows(path) == ["before"]
            filler.unlink()
            assert await worker.run(insert("big", BIG)) == "big"
        finally:
            worker.stop()
        assert rows(path) == ["before", "big"]


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_a_read_beside_writes_that_find_no_room_still_gets_its_answer() -> None:
    """A read (health, a listing) shares a group with writes whose COMMIT gets ENOSPC: the
    writes fail, the read answers, and it counts what is on disk, not the rolled-back
    rows it saw inside the group."""
    with tmpfs("2m") as root:
        path = root / "r.db"
        worker = DbWorker(open_database(path, SCHEMA), name="test")
        worker.start()
        try:
            assert await worker.run(insert("before")) == "before"
            filler = fill(root)
            first, seen, big = await _group(worker, [insert("a"), count, insert("big", BIG)])
            assert isinstance(first, InsufficientStorage), first
            assert isinstance(big, InsufficientStorage), big
            assert seen == 1
            assert rows(path) == ["before"]
            filler.unlink()
        finally:
            worker.stop()


async def test_operations_the_lost_group_never_reached_run_alone(tmp_path: Path) -> None:
    """SQLite drops the group at the oversize insert; the insert queued after it has not
    run yet, so it runs in a group of its own and is kept."""
    path = tmp_path / "w.db"
    worker = DbWorker(open_database(path, SCHEMA), name="test")
    worker.start()
    try:
        await worker.run(lambda c: cap(c, 3))
        early, big, late = await _group(worker, [insert("a"), insert("big", BIG),
                                                 insert("c")])
        assert isinstance(early, InsufficientStorage), early
        assert isinstance(big, InsufficientStorage), big
        assert late == "c"
    finally:
        worker.stop()
    assert rows(path) == ["c"]


def test_a_commit_that_finds_no_room_leaves_no_transaction_open() -> None:
    """``immediate`` at top level (no worker): the COMMIT gets ENOSPC; the connection is
    left with no transaction, nothing kept, and commits again once there is room."""
    with tmpfs("2m") as root:
        path = root / "c.db"
        conn = open_database(path, SCHEMA)
        try:
            filler = fill(root)
            with pytest.raises(InsufficientStorage):
                insert("big", BIG)(conn)
            assert not conn.in_transaction
            assert rows(path) == []
            filler.unlink()
            insert("big", BIG)(conn)
        finally:
            conn.close()
        assert rows(path) == ["big"]
