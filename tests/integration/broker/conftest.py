"""Every test in the broker suite runs twice: on the SQLite store and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from brokerkit import using_store
from pgkit import needs_pg, skip_without_pg


@pytest.fixture(autouse=True, params=["sqlite", pytest.param("postgres", marks=needs_pg)])
def store_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "postgres":
        skip_without_pg()
    with using_store(request.param):
        yield request.param
