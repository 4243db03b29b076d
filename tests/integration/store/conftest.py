"""The BrokerStore contract, run against every store: SQLite on a file, PostgreSQL on a
fresh database of a throwaway cluster (tests/pgkit.py).

Every test that takes ``backend`` is parametrized over both stores and makes the same
assertions; where the contract lets a store choose (delivery claims, which a
single-process store may ignore), the assertion branches on ``backend.claims``. The
tests that take ``pg`` exercise what only PostgreSQL has: real row locks between
connections, LISTEN/NOTIFY between store instances, reconnects, concurrent migrations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pgkit import needs_pg, skip_without_pg
from storekit import Backend, PostgresBackend, SqliteBackend, fresh_pg_dsn


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_pg)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made: Backend = (SqliteBackend(tmp_path / "broker.db") if request.param == "sqlite"
                     else PostgresBackend(fresh_pg_dsn()))
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def pg() -> AsyncIterator[PostgresBackend]:
    skip_without_pg()
    made = PostgresBackend(fresh_pg_dsn())
    try:
        yield made
    finally:
        await made.close()
