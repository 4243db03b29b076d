"""The store contract for operations: ``ping`` (GET /readyz) and ``pending_by_mesh``
(the queue depth of GET /metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from claudemesh.broker.store.sqlite import SqliteBrokerStore
from claudemesh.errors import StoreError
from storekit import Backend, send, setup_mesh


async def test_ping_answers_on_a_working_store(backend: Backend) -> None:
    await backend.store.ping()


async def test_pending_by_mesh_counts_unacked_deliveries_deepest_first(
        backend: Backend) -> None:
    store = backend.store
    deep, [a1, b1, c1] = await setup_mesh(store)
    shallow, [a2, b2, _] = await setup_mesh(store)
    await setup_mesh(store)  # a mesh with nothing pending is not listed
    for i in range(3):
        await store.accept(send(deep, a1, f"d{i}", to=b1.pubkey))
    await store.accept(send(deep, a1, "c", to=c1.pubkey))
    await store.accept(send(shallow, a2, "s", to=b2.pubkey))
    acked = await store.accept(send(deep, a1, "gone", to=b1.pubkey))
    await store.ack_deliveries(b1.id, [acked.recipients[0][1]], now_ms=1)
    assert await store.pending_by_mesh(limit=10) == {deep.name: 4, shallow.name: 1}
    assert await store.pending_by_mesh(limit=1) == {deep.name: 4}


@pytest.mark.parametrize("how", ["removed", "replaced"])
async def test_sqlite_ping_fails_once_the_file_is_gone_or_replaced(
        tmp_path: Path, how: str) -> None:
    path = tmp_path / "broker.db"
    store = SqliteBrokerStore(path)
    try:
        await store.ping()
        path.rename(tmp_path / "moved.db")
        if how == "replaced":
            path.write_bytes(b"")
        with pytest.raises(StoreError, match="gone" if how == "removed" else "replaced"):
            await store.ping()
    finally:
        await store.close()
