"""One thread owns a database connection; operations that queue up together share a COMMIT.

Group commit. The event loop submits operations (``fn(conn) -> T``) and awaits them. The
thread takes whatever is queued (up to ``max_batch``), opens ``BEGIN IMMEDIATE``, runs each
operation in its own savepoint (one failing operation rolls back alone), COMMITs once, and
only then resolves the futures. With ``synchronous=FULL`` that COMMIT is an fsync, so an
answer never goes out before its row is on disk, and the fsync is paid once per group
rather than once per send. Under light load a group is a single operation.

Durability per group. An operation says whether its result must survive power loss
(``durable``, the default). A group holding at least one durable operation commits with
``synchronous=FULL`` (an fsync); a group of only non-durable ones (bookkeeping whose loss
a restart repairs, e.g. marking a row done: the row is just sent again and deduplicated)
commits with ``synchronous=NORMAL``, which is still crash-safe for the process.

A full disk. SQLite may answer an operation or the COMMIT with SQLITE_FULL (or an I/O
error on write or fsync) and roll the whole group back by itself. Then every operation of
the group fails with :class:`~claudemesh.errors.InsufficientStorage` (nothing of it was
kept, so none may be answered as done), and the thread carries on: the next group runs
on the same connection and succeeds once there is room again. An operation that changed
no row (a read: health, a listing) or that the group never reached runs again alone, so
a full disk fails the writes that shared its group, not a read beside them.

The thread is the only writer of its database: sqlite3 objects never cross threads, and
SQLite's own lock is never contended inside the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from claudemesh.errors import ClaudemeshError, InsufficientStorage, ShuttingDown, StoreError
from claudemesh.sqlitedb.db import store_error

__all__ = ["DbWorker"]

T = TypeVar("T")
log = logging.getLogger(__name__)

_STOP: Final = object()


@dataclass(slots=True)
class _Op(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    durable: bool = True
    ran: bool = False
    changed: bool = False  # it inserted, updated or deleted a row
    result: Any = None
    error: BaseException | None = field(default=None)


class DbWorker:
    """Runs operations on ``conn`` in a dedicated thread, committing in groups."""

    def __init__(self, conn: sqlite3.Connection, *, name: str, max_batch: int = 256) -> None:
        self._conn = conn
        self._name = name
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"db-{name}", daemon=True)
        self._accepting = False
        self._durable = True  # open_database sets synchronous=FULL

    def start(self) -> None:
        self._accepting = True
        self._thread.start()

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in the writer thread inside a transaction; its errors are re-raised.

        ``durable=False``: the answer may come before an fsync (see the module docstring).
        """
        if not self._accepting:
            raise ShuttingDown(f"the {self._name} store is closed")
        loop = asyncio.get_running_loop()
        op: _Op[T] = _Op(fn, loop, loop.create_future(), durable)
        self._queue.put(op)
        return await op.future

    def stop(self) -> None:
        """Finish every queued operation, then close the connection (blocking)."""
        if not self._accepting:
            return
        self._accepting = False
        self._queue.put(_STOP)
        self._thread.join()

    # -- thread side ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch, stop = self._take_batch()
                if batch:
                    self._execute(batch)
                if stop:
                    return
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    def _take_batch(self) -> tuple[list[_Op[Any]], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _execute(self, batch: list[_Op[Any]]) -> None:
        lost = self._commit(batch)
        if lost is not None:
            again = [op for op in batch if len(batch) > 1 and self._may_run_again(op)]
            self._fail(batch, lost)
            for op in again:
                self._run_alone(op)
        self._resolve(batch)

    @staticmethod
    def _may_run_again(op: _Op[Any]) -> bool:
        """Not reached before the group was lost, or a read that went well: running it
        alone writes nothing twice (what it read may have held the rolled-back rows)."""
        return not op.ran or (not op.changed and op.error is None)

    def _run_alone(self, op: _Op[Any]) -> None:
        op.error = op.result = None
        lost = self._commit([op])
        if lost is not None:
            self._fail([op], lost)

    def _commit(self, batch: list[_Op[Any]]) -> BaseException | None:
        """Run the group in one transaction; None once it committed, else what lost it."""
        try:
            durable = any(op.durable for op in batch)
            if durable is not self._durable:
                self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            self._conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                self._run_one(op)
                if not self._conn.in_transaction:  # SQLite rolled the whole group back
                    return op.error or StoreError(f"{self._name}: the transaction was lost")
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return exc
        return None

    def _fail(self, batch: list[_Op[Any]], cause: BaseException) -> None:
        """Nothing of the group was kept: every operation gets the group's error."""
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        if isinstance(cause, StoreError):
            failure = cause
        elif isinstance(cause, sqlite3.Error):
            failure = store_error(cause, f"{self._name} commit failed")
        else:
            failure = StoreError(f"{self._name} commit failed: {cause}")
        no_room = isinstance(failure, InsufficientStorage)  # expected: no traceback
        log.error("group commit failed; every operation in it is rolled back: %s", failure,
                  exc_info=None if no_room else cause,
                  extra={"store": self._name, "size": len(batch)})
        for op in batch:
            op.error = failure

    def _run_one(self, op: _Op[Any]) -> None:
        self._conn.execute("SAVEPOINT op")
        before = self._conn.total_changes
        op.ran = True
        try:
            op.result = op.fn(self._conn)
        except ClaudemeshError as exc:
            op.error = exc
        except sqlite3.Error as exc:
            op.error = store_error(exc, self._name)
        except Exception as exc:  # a bug in an operation must not kill the writer
            log.exception("store operation raised", extra={"store": self._name})
            op.error = exc
        op.changed = self._conn.total_changes != before
        if not self._conn.in_transaction:
            return  # the savepoint went with the transaction; _execute fails the group
        if op.error is None:
            self._conn.execute("RELEASE op")
        else:
            self._conn.execute("ROLLBACK TO op")
            self._conn.execute("RELEASE op")

    @staticmethod
    def _resolve(batch: list[_Op[Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Op[Any]]] = {}
        for op in batch:
            by_loop.setdefault(op.loop, []).append(op)
        for loop, ops in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(_settle, ops)


def _settle(ops: list[_Op[Any]]) -> None:
    for op in ops:
        if op.future.done():
            continue
        if op.error is not None:
            op.future.set_exception(op.error)
        else:
            op.future.set_result(op.result)
