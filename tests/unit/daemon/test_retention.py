"""The inbox retention sweep on a real inbox.db through the real DbWorker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from claudemesh.daemon.retention import InboxRetention
from claudemesh.daemon.store.inbox import INBOX_MIGRATIONS, InboxStore, NewInboxItem
from claudemesh.sqlitedb.db import open_database
from claudemesh.sqlitedb.worker import DbWorker


def item(n: int) -> NewInboxItem:
    return NewInboxItem(f"i{n}", f"c{n}", f"b{n}", "m", "cd" * 32, None, "ab" * 32, "bob",
                        f"word{n} common", None, None, "next", None, None, None)


def test_the_sweep_deletes_what_is_older_than_the_retention_in_batches(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "inbox.db", INBOX_MIGRATIONS)
    InboxStore(conn).insert_new([item(n) for n in range(12)], 1_000)
    InboxStore(conn).insert_new([item(n) for n in range(12, 15)], 9_000)
    worker = DbWorker(conn, name="inbox")
    worker.start()
    try:
        now = 10_000
        sweep = InboxRetention(worker, retention_s=5, clock=lambda: now, batch=5)
        assert asyncio.run(sweep.sweep()) == 12
        assert asyncio.run(sweep.sweep()) == 0
        left = [r[0] for r in conn.execute("SELECT client_message_id FROM inbox ORDER BY seq")]
        assert left == ["c12", "c13", "c14"]
        assert conn.execute("SELECT count(*) FROM inbox_fts_docsize").fetchone() == (3,)
        assert asyncio.run(InboxRetention(worker, retention_s=0, clock=lambda: 10**12).sweep()) == 0
    finally:
        worker.stop()


def test_the_interval_follows_the_retention() -> None:
    def every(retention_s: float) -> float:
        return InboxRetention(None, retention_s=retention_s, clock=lambda: 0).interval_s  # type: ignore[arg-type]
    assert (every(1), every(100), every(30 * 86400)) == (1.0, 10.0, 3600.0)
