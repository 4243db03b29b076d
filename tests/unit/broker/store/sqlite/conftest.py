"""The SQLite broker store on a fresh file, for the unit tests of this package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from claudemesh.broker.store.sqlite import SqliteBrokerStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteBrokerStore]:
    s = SqliteBrokerStore(tmp_path / "broker.db")
    try:
        yield s
    finally:
        await s.close()
