"""The SQLite broker store on a real file: retention, history flips, nonces, atomic accept."""

from __future__ import annotations

import sqlite3

import pytest

from claudemesh.broker.admin import MeshOptions, create_mesh
from claudemesh.broker.store.base import AcceptInput, AcceptKind, Member, Mesh
from claudemesh.broker.store.sqlite import SqliteBrokerStore
from claudemesh.errors import DestinationNotFound, MeshExists
from claudemesh.protocol.ids import new_ulid

NOW = 1_800_000_000_000
DAY = 86_400_000


async def setup_mesh(store: SqliteBrokerStore, mode: str = "retention_scoped",
                     days: int = 3) -> tuple[Mesh, Member, Member]:
    mesh = await create_mesh(store, f"m{new_ulid()[-6:].lower()}",
                             MeshOptions(mode, days, message_retention_days=7), now_ms=NOW)
    members = []
    for name in ("alice", "bob"):
        member = Member(new_ulid(), mesh.id, new_ulid().lower().ljust(64, "0")[:64], name, NOW,
                        None)
        members.append(member)

    def add(conn: sqlite3.Connection) -> None:
        for m in members:
            conn.execute("INSERT INTO member (id, mesh_id, pubkey, display_name, joined_at)"
                         " VALUES (?, ?, ?, ?, ?)", (m.id, mesh.id, m.pubkey, m.display_name, NOW))
    await store._worker.run(add)
    return mesh, members[0], members[1]


def request(mesh: Mesh, sender: Member, to: Member, cmid: str, *, now: int = NOW,
            fingerprint: bytes = b"\x01" * 32, expires: int | None = None) -> AcceptInput:
    return AcceptInput(mesh.id, sender.id, sender.pubkey, sender.display_name, new_ulid(now),
                       cmid, fingerprint, "dm", to.pubkey, "next", None, None,
                       '{"kind":"crypto_box","nonce":"x","ciphertext":"y"}', "00" * 32, now,
                       expires)


async def test_accept_duplicate_conflict_and_no_leftover_on_b2(store: SqliteBrokerStore) -> None:
    mesh, alice, bob = await setup_mesh(store)
    created = await store.accept(request(mesh, alice, bob, "c1"))
    assert created.kind is AcceptKind.CREATED
    [(member_id, delivery_id)] = created.recipients
    assert member_id == bob.id
    dup = await store.accept(request(mesh, alice, bob, "c1"))
    assert (dup.kind, dup.broker_message_id, dup.history_id) == (
        AcceptKind.DUPLICATE, created.broker_message_id, created.history_id)
    conflict = await store.accept(request(mesh, alice, bob, "c1", fingerprint=b"\x02" * 32))
    assert conflict.kind is AcceptKind.CONFLICT
    stranger = Member("x", mesh.id, "ee" * 32, "eve", NOW, None)
    with pytest.raises(DestinationNotFound):
        await store.accept(request(mesh, alice, stranger, "c2"))
    again = await store.accept(request(mesh, alice, bob, "c2"))
    assert again.kind is AcceptKind.CREATED
    [first, second] = await store.pending_deliveries(bob.id, after=0, limit=10)
    assert (first.delivery_id, first.client_message_id, second.client_message_id) == (
        delivery_id, "c1", "c2")
    assert await store.ack_deliveries(alice.id, [delivery_id], NOW) == 0  # not alice's
    assert await store.ack_deliveries(bob.id, [delivery_id], NOW) == 1
    assert [d.client_message_id for d in await store.pending_deliveries(
        bob.id, after=0, limit=10)] == ["c2"]


async def test_retention_scoped_dedupe_rows_expire_and_permanent_ones_do_not(
        store: SqliteBrokerStore) -> None:
    scoped, a1, b1 = await setup_mesh(store, days=3)
    forever, a2, b2 = await setup_mesh(store, mode="permanent", days=3)
    await store.accept(request(scoped, a1, b1, "s1", expires=NOW + 3 * DAY))
    await store.accept(request(forever, a2, b2, "p1", expires=None))
    result = await store.sweep(NOW + 3 * DAY - 1)
    assert result.dedupe_rows_expired == 0
    result = await store.sweep(NOW + 3 * DAY)
    assert result.dedupe_rows_expired == 1
    # The scoped id is free again (R-AGE-6); the permanent one still deduplicates.
    assert (await store.accept(request(scoped, a1, b1, "s1", now=NOW + 3 * DAY))).kind is (
        AcceptKind.CREATED)
    assert (await store.accept(request(forever, a2, b2, "p1"))).kind is AcceptKind.DUPLICATE


async def test_the_retention_sweep_prunes_messages_and_flips_history_available(
        store: SqliteBrokerStore) -> None:
    mesh, alice, bob = await setup_mesh(store, days=30)
    created = await store.accept(request(mesh, alice, bob, "h1", expires=NOW + 30 * DAY))
    assert (await store.sweep(NOW + 7 * DAY - 1)).messages_pruned == 0
    assert (await store.sweep(NOW + 7 * DAY)).messages_pruned == 1
    dup = await store.accept(request(mesh, alice, bob, "h1", now=NOW + 8 * DAY))
    assert (dup.kind, dup.broker_message_id) == (AcceptKind.DUPLICATE, created.broker_message_id)
    assert (dup.history_available, dup.history_id) == (False, None)
    assert await store.pending_deliveries(bob.id, after=0, limit=10) == []


async def test_nonces_are_single_use_until_they_expire(store: SqliteBrokerStore) -> None:
    assert await store.remember_nonce("pk", "n1", expires_at_ms=NOW)
    assert not await store.remember_nonce("pk", "n1", expires_at_ms=NOW)
    assert await store.remember_nonce("other", "n1", expires_at_ms=NOW)
    assert (await store.sweep(NOW)).nonces_expired == 2


async def test_mesh_names_are_unique(store: SqliteBrokerStore) -> None:
    await create_mesh(store, "one", MeshOptions(), now_ms=NOW)
    with pytest.raises(MeshExists):
        await create_mesh(store, "one", MeshOptions(), now_ms=NOW)
