"""PostgreSQL's ``disk_full`` (SQLSTATE 53100) is the same retryable 507 as SQLite's
SQLITE_FULL; other driver errors keep their classes (the translation at the PG edge)."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest

from claudemesh.broker.store.postgres.connection import store_errors
from claudemesh.errors import InsufficientStorage, StoreCorrupt, StoreError


@pytest.mark.parametrize(("raised", "expected"), [
    (asyncpg.exceptions.DiskFullError("could not extend file"), InsufficientStorage),
    (asyncpg.exceptions.DataCorruptedError("bad page"), StoreCorrupt),
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), StoreError),
])
def test_pg_errors_are_translated_by_their_sqlstate(raised: Exception,
                                                    expected: type[StoreError]) -> None:
    with pytest.raises(StoreError) as caught, store_errors("accepting a message"):
        raise raised
    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised
