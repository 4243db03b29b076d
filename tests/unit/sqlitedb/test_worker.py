"""The group-commit worker on a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from claudemesh.errors import InvalidRequest, ShuttingDown
from claudemesh.sqlitedb.db import immediate, open_database
from claudemesh.sqlitedb.worker import DbWorker

SCHEMA = ("CREATE TABLE t (k TEXT PRIMARY KEY)",)


def count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as c:
        return int(c.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_concurrent_operations_share_commits_and_one_failure_rolls_back_alone(
        tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    worker = DbWorker(open_database(path, SCHEMA), name="test")
    worker.start()
    try:
        def insert(key: str) -> str:
            def op(conn: sqlite3.Connection) -> str:
                conn.execute("INSERT INTO t VALUES (?)", (key,))
                if key == "bad":
                    raise InvalidRequest("refused after writing")
                return key
            return op  # type: ignore[return-value]

        keys = [f"k{i}" for i in range(200)] + ["bad"]
        results = await asyncio.gather(*(worker.run(insert(k)) for k in keys),  # type: ignore[arg-type]
                                       return_exceptions=True)
        assert results[:200] == keys[:200]
        assert isinstance(results[200], InvalidRequest)
        dup = await asyncio.gather(worker.run(insert("k1")), return_exceptions=True)  # type: ignore[arg-type]
        assert type(dup[0]).__name__ == "StoreError"
    finally:
        worker.stop()
    assert count(path) == 200


async def test_a_stopped_worker_refuses_new_work_and_finished_the_queued_ones(
        tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    worker = DbWorker(open_database(path, SCHEMA), name="test")
    worker.start()
    pending = [asyncio.ensure_future(worker.run(
        lambda c, i=i: c.execute("INSERT INTO t VALUES (?)", (str(i),)).rowcount))
        for i in range(50)]
    await asyncio.sleep(0)
    await asyncio.to_thread(worker.stop)
    assert await asyncio.gather(*pending) == [1] * 50
    with pytest.raises(ShuttingDown):
        await worker.run(lambda c: None)
    assert count(path) == 50


def test_nested_units_roll_back_only_the_inner_one_that_failed(tmp_path: Path) -> None:
    """``immediate`` nests by reusing one savepoint name; each level must still be its own."""
    conn = open_database(tmp_path / "n.db", SCHEMA)
    with immediate(conn):  # BEGIN IMMEDIATE
        conn.execute("INSERT INTO t VALUES ('outer')")
        with immediate(conn):  # savepoint, kept
            conn.execute("INSERT INTO t VALUES ('kept')")
            with pytest.raises(InvalidRequest), immediate(conn):  # savepoint inside it, undone
                conn.execute("INSERT INTO t VALUES ('undone')")
                raise InvalidRequest("inner unit fails")
            conn.execute("INSERT INTO t VALUES ('after')")
        with pytest.raises(InvalidRequest), immediate(conn):  # a sibling, undone
            conn.execute("INSERT INTO t VALUES ('sibling')")
            raise InvalidRequest("second unit fails")
    conn.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "n.db")) as c:
        assert sorted(r[0] for r in c.execute("SELECT k FROM t")) == ["after", "kept", "outer"]
