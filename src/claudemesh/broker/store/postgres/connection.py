"""The PostgreSQL store's connections: one lazy pool, one way to run an operation on it.

*Opening.* ``open_store`` is synchronous, so the store cannot connect when it is made:
:meth:`PgPool.get` creates the pool (2-10 connections by default) on first use, under an
``asyncio.Lock``, and runs ``prepare`` (the schema migration) on one of its connections
before anyone else gets it. ``PostgresBrokerStore.connect`` calls it at once instead.

*Operations.* Every store method is one call of :meth:`PgPool.run`: take a pooled
connection, run the operation in a transaction (READ COMMITTED), and translate driver
errors into :class:`~claudemesh.errors.StoreError` at this edge (:func:`store_errors`);
typed errors raised inside roll the transaction back and pass through. Deadlocks and
serialization failures are retried, and so is an operation that raises :class:`Retry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]

from claudemesh.broker.store import redact_location
from claudemesh.broker.store.rows import Row
from claudemesh.errors import InsufficientStorage, ShuttingDown, StoreCorrupt, StoreError

__all__ = ["Conn", "PgPool", "Retry", "count", "describe", "store_errors"]

T = TypeVar("T")
log = logging.getLogger(__name__)

_ATTEMPTS: Final = 4  # a transaction that hit a deadlock or serialization failure
_CORRUPT_STATES: Final = frozenset({"XX001", "XX002"})  # data_corrupted, index_corrupted
_NO_ROOM_STATES: Final = frozenset({"53100"})  # disk_full: a retryable 507, nothing kept


class Conn(Protocol):
    """What we use of an ``asyncpg.Connection``."""

    async def execute(self, query: str, *args: Any) -> str: ...

    async def fetch(self, query: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: Any) -> Row | None: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


class Retry(Exception):
    """Raised inside an operation: roll back and run the whole operation again."""


@contextlib.contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Translate asyncpg and OS errors into StoreError at the store's edge."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) in _CORRUPT_STATES:
            raise StoreCorrupt(f"{action}: {exc}") from exc
        if getattr(exc, "sqlstate", None) in _NO_ROOM_STATES:
            raise InsufficientStorage(f"{action}: {describe(exc)}") from exc
        raise StoreError(f"{action}: {describe(exc)}") from exc
    except (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError) as exc:
        raise StoreError(f"{action}: {describe(exc)}") from exc
    except OSError as exc:  # includes TimeoutError
        raise StoreError(f"{action}: {exc.strerror or exc or type(exc).__name__}") from exc


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def count(status: str) -> int:
    """The row count of a command tag: ``UPDATE 3``, ``INSERT 0 1``, ``DELETE 0``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


class PgPool:
    """The store's ``asyncpg.Pool``, opened on first use; refuses work once shut."""

    def __init__(self, dsn: str, *, prepare: Callable[[Conn], Awaitable[None]],
                 min_size: int = 2, max_size: int = 10) -> None:
        self.dsn = dsn
        self._prepare = prepare
        self._min_size = min_size
        self._max_size = max_size
        self._handle: Any = None  # asyncpg.Pool, created by get()
        self._lock = asyncio.Lock()
        self._closed = False

    async def get(self) -> Any:
        """The connection pool, created and prepared (migrated) on first use.

        Raises:
            ShuttingDown: :meth:`shut` was called.
            StoreError: the database cannot be reached, or the DSN is malformed.
        """
        if self._closed:
            raise ShuttingDown("the broker store is closed")
        if self._handle is not None:
            return self._handle
        async with self._lock:
            if self._closed:
                raise ShuttingDown("the broker store is closed")
            if self._handle is None:
                self._handle = await self._open()
        return self._handle

    async def _open(self) -> Any:
        where = redact_location(self.dsn)
        with store_errors(f"opening the PostgreSQL store at {where}"):
            try:
                pool = await asyncpg.create_pool(
                    self.dsn, min_size=self._min_size, max_size=self._max_size, timeout=10,
                    server_settings={"application_name": "claudemesh-broker"})
            except ValueError as exc:  # a malformed DSN
                raise StoreError(f"invalid PostgreSQL location {where}: {exc}") from exc
            try:
                async with pool.acquire() as conn:
                    await self._prepare(conn)
            except BaseException:
                pool.terminate()
                raise
        return pool

    async def run(self, action: str, fn: Callable[[Conn], Awaitable[T]], *,
                  tx: bool = True) -> T:
        """Run ``fn`` on a pooled connection, in a transaction unless ``tx`` is False."""
        pool = await self.get()
        for attempt in range(_ATTEMPTS):
            try:
                with store_errors(action):
                    async with pool.acquire() as conn:
                        if not tx:
                            return await fn(conn)
                        async with conn.transaction():
                            return await fn(conn)
            except Retry:
                pass
            except StoreError as exc:
                if not isinstance(exc.__cause__, asyncpg.exceptions.TransactionRollbackError):
                    raise
                if attempt == _ATTEMPTS - 1:
                    raise
            log.info("store_retry", extra={"action": action, "attempt": attempt + 1})
            await asyncio.sleep(0.005 * (attempt + 1))
        raise StoreError(f"{action}: still conflicting after {_ATTEMPTS} attempts")

    def shut(self) -> None:
        """Refuse new work (ShuttingDown) from now on; :meth:`close` then closes the pool."""
        self._closed = True

    async def close(self) -> None:
        """Shut, and close the pool (terminate it if it does not close within 5 s)."""
        self._closed = True
        async with self._lock:
            pool, self._handle = self._handle, None
        if pool is not None:
            try:
                async with asyncio.timeout(5):
                    await pool.close()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):  # incl. timeout
                pool.terminate()
