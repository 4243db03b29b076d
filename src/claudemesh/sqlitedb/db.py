"""SQLite plumbing for our databases (daemon and broker): open, pragmas, migrations, transactions.

Every ``sqlite3`` (and OS) error is turned into a :class:`~claudemesh.errors.StoreError` by
:func:`store_error`, here and in the worker, so no other package imports ``sqlite3``
(STYLE (b)7). A full disk or a failed fsync becomes
:class:`~claudemesh.errors.InsufficientStorage` (507): nothing was written, and the same
connection works again once there is room. SQLite may roll a whole transaction back on
such an error (SQLITE_FULL, SQLITE_IOERR); :func:`immediate` and the worker check
``in_transaction`` rather than assume their savepoint survived.

Durability (R-DLV-2, A-24): WAL with ``synchronous=FULL``, so a COMMIT returns only after
the WAL is fsynced. The worker groups the accepts that arrive together into one
transaction and answers each of them only after that COMMIT, which keeps the promise
"durable before the answer" even against power loss, at the cost of one fsync per group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from claudemesh.errors import InsufficientStorage, StoreCorrupt, StoreError

__all__ = ["immediate", "integrity_check", "open_database", "store_error", "store_errors"]

_DB_FILE_MODE: Final = 0o600
_CORRUPT_CODES: Final = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
# The disk is full, or would not take the write or the sync (SQLite reports ENOSPC as
# SQLITE_FULL; EIO on write or fsync as these extended SQLITE_IOERR codes).
_NO_ROOM_CODES: Final = frozenset({
    "SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_DIR_FSYNC",
    "SQLITE_IOERR_SHMSIZE"})
_NO_ROOM_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def open_database(path: Path, migrations: Sequence[str]) -> sqlite3.Connection:
    """Open (creating 0600 if needed) and migrate a database; ``user_version`` is its schema.

    ``migrations[i]`` brings the schema from version ``i`` to ``i + 1``.
    """
    with store_errors(f"opening {path.name}"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _DB_FILE_MODE)
        os.close(fd)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")
            _migrate(conn, migrations)
        except BaseException:
            conn.close()
            raise
    _tighten_modes(path)
    return conn


def _migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> None:
    with immediate(conn):
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > len(migrations):
            raise StoreError(
                f"database schema {version} is newer than this build knows ({len(migrations)})"
            )
        for target, script in enumerate(migrations[version:], start=version + 1):
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target:d}")


def _statements(script: str) -> list[str]:
    """Split a migration into statements. A piece joins the next until SQLite calls it
    complete, so a ``CREATE TRIGGER ... BEGIN ...; ...; END`` stays one statement."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \t\n;"):
        statements.append(pending.strip())
    return statements


def _tighten_modes(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).chmod(_DB_FILE_MODE)


def integrity_check(conn: sqlite3.Connection, name: str) -> None:
    """R-REC-2: refuse to run on a database SQLite itself reports as damaged."""
    with store_errors(f"checking {name}"):
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    if rows != [("ok",)]:
        problems = "; ".join(str(r[0]) for r in rows[:3])
        raise StoreCorrupt(f"{name} failed its integrity check: {problems}")


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """An atomic unit: ``BEGIN IMMEDIATE`` at top level, a SAVEPOINT when nested.

    ``BEGIN IMMEDIATE`` takes the RESERVED lock up front, so two accepts of one id run one
    after the other (R-ACC-1 step 3). Nested inside the worker's group transaction, a
    savepoint lets one failing operation roll back alone.
    """
    if conn.in_transaction:
        # One name for every level: RELEASE and ROLLBACK TO act on the innermost savepoint
        # of that name, and a constant statement stays in sqlite3's statement cache (a new
        # name per call was compiled anew each time, about 3 us per unit).
        conn.execute("SAVEPOINT unit")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # else SQLite already rolled it all back (SQLITE_FULL)
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
            raise
        conn.execute("RELEASE unit")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:  # a COMMIT that failed may leave it open: nothing half-kept
            conn.execute("ROLLBACK")
        raise


def store_error(exc: sqlite3.Error | OSError, action: str) -> StoreError:
    """The one translation of a ``sqlite3`` or OS error into the store's error (raise it
    ``from exc``): a damaged file, no room on the disk, or anything else."""
    if isinstance(exc, OSError):
        cls = InsufficientStorage if exc.errno in _NO_ROOM_ERRNOS else StoreError
        return cls(f"{action}: {exc.strerror or exc}")
    name = getattr(exc, "sqlite_errorname", None)
    if name in _CORRUPT_CODES:
        return StoreCorrupt(f"{action}: {exc}")
    if name in _NO_ROOM_CODES:
        return InsufficientStorage(f"{action}: {exc}")
    return StoreError(f"{action}: {exc}")


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Translate ``sqlite3`` (and OS) errors into StoreError at the store's edge."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise store_error(exc, action) from exc
