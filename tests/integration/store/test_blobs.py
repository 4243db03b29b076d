"""The store contract for blobs (shared files' metadata), on both stores."""

from __future__ import annotations

from claudemesh.broker.store.base import Blob
from claudemesh.broker.store.rows import BLOB_ABANDONED_MS
from storekit import DAY, NOW, Backend, setup_mesh


async def test_blob_rows_begin_once_complete_list_and_expire(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store, retention_days=7)
    first = Blob("F" * 20, mesh.id, alice.id, alice.pubkey, (bob.pubkey,), 1000, NOW)
    assert await store.blob_begin(first) == first
    other = Blob("F" * 20, mesh.id, carol.id, carol.pubkey, (carol.pubkey,), 5, NOW + 1)
    assert await store.blob_begin(other) == first  # the row that was there wins
    await store.blob_completed(first.file_id, NOW + 2)
    done = await store.get_blob(first.file_id)
    assert done is not None and done.completed_at == NOW + 2
    assert done.readable_by(bob.pubkey) and not done.readable_by(carol.pubkey)
    stale = Blob("G" * 20, mesh.id, bob.id, bob.pubkey, (alice.pubkey,), 9, NOW + 3)
    await store.blob_begin(stale)  # never completed
    assert [b.file_id for b in await store.list_blobs(mesh.id, alice.pubkey)] == [
        "G" * 20, "F" * 20]
    assert [b.file_id for b in await store.list_blobs(mesh.id, carol.pubkey)] == []
    assert await store.get_blob("H" * 20) is None
    assert await store.expire_blobs(NOW + 4, abandoned_after_ms=BLOB_ABANDONED_MS) == []
    assert await store.expire_blobs(NOW + 3 + BLOB_ABANDONED_MS,
                                    abandoned_after_ms=BLOB_ABANDONED_MS) == ["G" * 20]
    assert await store.expire_blobs(NOW + 7 * DAY, abandoned_after_ms=BLOB_ABANDONED_MS) == [
        "F" * 20]  # with the mesh's message retention
    assert await store.list_blobs(mesh.id, alice.pubkey) == []


async def test_a_topic_blob_is_listed_for_the_topics_subscribers(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    await store.subscribe(mesh.id, bob.id, "news", NOW)
    blob = Blob("T" * 20, mesh.id, alice.id, alice.pubkey, (), 500, NOW, topic="news")
    assert await store.blob_begin(blob) == blob
    assert await store.get_blob(blob.file_id) == blob
    assert not blob.readable_by(bob.pubkey)  # the handler asks the topic's subscribers
    for member, seen in ((alice, ["T" * 20]), (bob, ["T" * 20]), (carol, [])):
        assert [b.file_id for b in await store.list_blobs(mesh.id, member.pubkey)] == seen
    await store.unsubscribe(mesh.id, bob.id, "news")
    assert await store.list_blobs(mesh.id, bob.pubkey) == []
