"""The store contract for issue 15: group roles and rosters, topic history (subscribers
only, newest first, paged, gone with retention) and anycast (one member, online first,
round-robin). Every test runs against SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter

import pytest

from claudemesh.broker.store.base import AcceptKind, GroupMembership
from claudemesh.errors import DestinationNotFound, NotSubscribed
from storekit import DAY, NOW, Backend, attach, send, setup_mesh


async def test_roles_are_set_changed_kept_and_listed(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    assert await store.join_group(mesh.id, alice.id, "ops", NOW, "lead")
    assert not await store.join_group(mesh.id, alice.id, "ops", NOW, "lead")  # same role
    assert not await store.join_group(mesh.id, alice.id, "ops", NOW)  # None keeps it
    assert await store.join_group(mesh.id, bob.id, "ops", NOW)
    assert await store.join_group(mesh.id, bob.id, "ops", NOW, "reviewer")  # a new role
    assert await store.join_group(mesh.id, carol.id, "docs", NOW)
    await store.revoke_member(carol.pubkey, mesh_id=mesh.id, now_ms=NOW)
    assert await store.group_members(mesh.id) == [
        GroupMembership("ops", alice.id, alice.pubkey, "alice", "lead"),
        GroupMembership("ops", bob.id, bob.pubkey, "bob", "reviewer")]


async def test_topic_history_pages_newest_first_for_subscribers_only(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol] = await setup_mesh(store)
    await store.subscribe(mesh.id, alice.id, "news", NOW)
    await store.subscribe(mesh.id, alice.id, "other", NOW)
    history_ids = []
    for n in range(5):
        outcome = await store.accept(send(mesh, alice, f"n{n}", to="news", kind="topic"))
        history_ids.append(outcome.history_id)
    await store.accept(send(mesh, alice, "o1", to="other", kind="topic"))
    await store.accept(send(mesh, alice, "dm", to=bob.pubkey))
    with pytest.raises(NotSubscribed):
        await store.topic_history(mesh.id, bob.id, "news", before=None, limit=10)
    await store.subscribe(mesh.id, bob.id, "news", NOW)  # a late subscriber reads it all
    page = await store.topic_history(mesh.id, bob.id, "news", before=None, limit=3)
    assert [d.client_message_id for d in page] == ["n4", "n3", "n2"]
    assert [d.history_id for d in page] == history_ids[:1:-1]
    assert {(d.delivery_id, d.recipient_member_id, d.destination_ref) for d in page} == {
        (0, bob.id, "news")}
    rest = await store.topic_history(mesh.id, bob.id, "news",
                                     before=int(page[-1].history_id or 0), limit=3)
    assert [d.client_message_id for d in rest] == ["n1", "n0"]
    assert carol.id  # carol never subscribed
    with pytest.raises(NotSubscribed):
        await store.topic_history(mesh.id, carol.id, "news", before=None, limit=10)
    # Retention: pruned messages are gone from history too.
    await store.sweep(NOW + 400 * DAY)
    assert await store.topic_history(mesh.id, bob.id, "news", before=None, limit=10) == []


async def test_anycast_reaches_one_member_online_first_round_robin(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, carol, dave] = await setup_mesh(store, ("alice", "bob", "carol", "dave"))
    for member in (alice, bob, carol, dave):
        await store.join_group(mesh.id, member.id, "ops", NOW)
    await attach(store, mesh, bob, "s-bob")
    await attach(store, mesh, carol, "s-carol")
    got: Counter[str] = Counter()
    for n in range(6):
        outcome = await store.accept(send(mesh, alice, f"a{n}", to="@ops", kind="queue"))
        assert outcome.kind is AcceptKind.CREATED
        [(member_id, _)] = outcome.recipients
        got[member_id] += 1
    assert got == {bob.id: 3, carol.id: 3}  # only online members, alternating
    pending = await store.pending_deliveries(bob.id, after=0, limit=10)
    assert {d.destination_kind for d in pending} == {"queue"}
    # No one online: still queued to one member (nothing lost), rotating.
    await store.presence_drop(mesh.id, bob.id)
    await store.presence_drop(mesh.id, carol.id)
    offline = [(await store.accept(send(mesh, alice, f"b{n}", to="@ops", kind="queue")))
               .recipients[0][0] for n in range(3)]
    assert sorted(offline) == sorted([bob.id, carol.id, dave.id])
    # A group with nobody but the sender has no one to take it.
    await store.join_group(mesh.id, alice.id, "solo", NOW)
    with pytest.raises(DestinationNotFound):
        await store.accept(send(mesh, alice, "c", to="@solo", kind="queue"))
    with pytest.raises(DestinationNotFound):
        await store.accept(send(mesh, alice, "c", to="@nosuch", kind="queue"))
    assert (await store.accept(send(mesh, alice, "c", to=bob.pubkey))).kind is AcceptKind.CREATED
