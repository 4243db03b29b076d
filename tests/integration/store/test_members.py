"""The store contract for meshes, invites, members, profiles, groups, topics and
hello nonces (conftest.py: every test runs on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from claudemesh.broker.admin import MeshOptions, create_mesh
from claudemesh.broker.store.base import Member, SessionProfile
from claudemesh.errors import (
    DisplayNameTaken,
    InviteRejected,
    MemberRevoked,
    MeshExists,
    StoreError,
)
from storekit import BUILD, NOW, REVIEW, Backend, join, new_invite, setup_mesh

# -- meshes, invites, members --------------------------------------------------------------


async def test_meshes_are_found_by_id_or_name_and_names_are_unique(backend: Backend) -> None:
    store = backend.store
    mesh, _ = await setup_mesh(store, ())
    assert await store.get_mesh(mesh.id) == mesh
    assert await store.get_mesh(mesh.name) == mesh
    assert await store.get_mesh("nope") is None
    with pytest.raises(MeshExists):
        await create_mesh(store, mesh.name, MeshOptions(), now_ms=NOW)
    assert len(await store.mesh_invite_key(mesh.id)) == 128
    with pytest.raises(InviteRejected):
        await store.mesh_invite_key("no-such-mesh")


async def test_invite_redeem_rules(backend: Backend) -> None:
    store = backend.store
    mesh, _ = await setup_mesh(store, ())
    once = await new_invite(store, mesh, max_uses=1)
    with pytest.raises(InviteRejected):
        await join(store, mesh, once, "alice", secret_sha="0" * 64)  # wrong secret
    with pytest.raises(InviteRejected):
        await join(store, mesh, "no-such-invite", "alice")
    alice = await join(store, mesh, once, "alice")
    assert (alice.display_name, alice.revoked_at, alice.groups) == ("alice", None, ())
    # The same key joining again gets its membership back, even on a used-up invite.
    again = await join(store, mesh, once, "other-name", pubkey=alice.pubkey)
    assert (again.id, again.display_name) == (alice.id, "alice")
    with pytest.raises(InviteRejected, match="used up"):
        await join(store, mesh, once, "bob")
    expired = await new_invite(store, mesh, expires=NOW)
    with pytest.raises(InviteRejected, match="expired"):
        await join(store, mesh, expired, "bob", now=NOW)
    # A re-join does not use the invite up: two uses, one re-join, two new members fit.
    twice = await new_invite(store, mesh, max_uses=2)
    await join(store, mesh, twice, "x", pubkey=alice.pubkey)
    bob = await join(store, mesh, twice, "bob")
    with pytest.raises(DisplayNameTaken):  # names are unique case-insensitively (ASCII)
        await join(store, mesh, twice, "ALICE")
    await join(store, mesh, twice, "Émile")
    many = await new_invite(store, mesh, max_uses=10)
    await join(store, mesh, many, "émile")  # folding is ASCII-only, as in SQLite
    # A revoked key cannot come back; its name is free again.
    [revoked] = await store.revoke_member(bob.pubkey, mesh_id=mesh.id, now_ms=NOW + 5)
    assert (revoked.id, revoked.revoked_at) == (bob.id, NOW + 5)
    with pytest.raises(MemberRevoked):
        await join(store, mesh, many, "bob2", pubkey=bob.pubkey)
    new_bob = await join(store, mesh, many, "bob")
    assert new_bob.id != bob.id
    assert [m.id for m in await store.revoked_since(NOW + 5)] == [bob.id]
    assert await store.revoked_since(NOW + 6) == []
    assert bob.id not in {m.id for m in await store.list_members(mesh.id)}
    assert await store.revoke_member(bob.pubkey, mesh_id=mesh.id, now_ms=NOW + 6) == []


async def test_concurrent_joins(backend: Backend) -> None:
    """One use left means one joiner; one name means one holder; one key, one member."""
    store, other = backend.store, backend.another()
    mesh, _ = await setup_mesh(store, ())
    once = await new_invite(store, mesh, max_uses=1)
    results = await asyncio.gather(*(join(s, mesh, once, f"n{i}")
                                     for i, s in enumerate([store, other] * 4)),
                                   return_exceptions=True)
    assert sum(isinstance(r, Member) for r in results) == 1
    assert all(isinstance(r, InviteRejected) for r in results if not isinstance(r, Member))
    many = await new_invite(store, mesh, max_uses=100)
    results = await asyncio.gather(*(join(s, mesh, many, "same") for s in [store, other] * 4),
                                   return_exceptions=True)
    assert sum(isinstance(r, Member) for r in results) == 1
    assert all(isinstance(r, DisplayNameTaken) for r in results if not isinstance(r, Member))
    key = secrets.token_hex(32)
    joined = await asyncio.gather(*(join(s, mesh, many, f"k{i}", pubkey=key)
                                    for i, s in enumerate([store, other] * 4)))
    assert len({m.id for m in joined}) == 1
    assert len({m.display_name for m in joined}) == 1


async def test_revoking_everywhere(backend: Backend) -> None:
    store = backend.store
    one, _ = await setup_mesh(store, ())
    two, _ = await setup_mesh(store, ())
    key = secrets.token_hex(32)
    for mesh in (one, two):
        await join(store, mesh, await new_invite(store, mesh), "dual", pubkey=key)
    revoked = await store.revoke_member(key, mesh_id=None, now_ms=NOW + 1)
    assert sorted(m.mesh_id for m in revoked) == sorted([one.id, two.id])
    assert all(m.revoked_at == NOW + 1 for m in revoked)
    still = await store.get_member(one.id, key)
    assert still is not None and still.revoked_at == NOW + 1


async def test_profiles_groups_and_topics(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _carol] = await setup_mesh(store)
    updated = await store.set_profile(alice.id, {
        "summary": "on it", "status": "working", "visible": False, "avatar": "🦊",
        "title": "t", "bio": "b", "capabilities": ["x", "y"], "not_a_field": 1})
    assert (updated.summary, updated.status, updated.visible, updated.avatar, updated.title,
            updated.bio, updated.capabilities) == ("on it", "working", False, "🦊", "t", "b",
                                                   ("x", "y"))
    assert await store.get_member_by_id(alice.id) == updated
    assert await store.get_member(mesh.id, alice.pubkey) == updated
    assert await store.get_member_by_id("nobody") is None
    assert await store.get_member(mesh.id, "ff" * 32) is None
    with pytest.raises(StoreError):
        await store.set_profile(alice.id, {"status": "asleep"})  # a CHECK constraint
    assert (await store.set_profile(alice.id, {"visible": 1})).visible is True
    with pytest.raises(StoreError, match="no member nobody"):
        await store.set_profile("nobody", {"status": "working"})
    assert await store.join_group(mesh.id, alice.id, "zeta", NOW)
    assert await store.join_group(mesh.id, alice.id, "Zeta", NOW)
    assert await store.join_group(mesh.id, alice.id, "alpha", NOW)
    assert not await store.join_group(mesh.id, alice.id, "alpha", NOW)
    members = await store.list_members(mesh.id)
    assert [m.display_name for m in members] == ["alice", "bob", "carol"]  # join order
    assert members[0].groups == ("Zeta", "alpha", "zeta")  # byte order, as in SQLite
    fetched = await store.get_member_by_id(alice.id)
    assert fetched is not None and fetched.groups == ("Zeta", "alpha", "zeta")
    assert await store.leave_group(mesh.id, alice.id, "zeta")
    assert not await store.leave_group(mesh.id, alice.id, "zeta")
    assert await store.subscribe(mesh.id, alice.id, "news", NOW)
    assert not await store.subscribe(mesh.id, alice.id, "news", NOW)
    assert await store.subscribe(mesh.id, bob.id, "news", NOW)
    assert await store.subscribe(mesh.id, bob.id, "Alpha", NOW)
    assert await store.list_topics(mesh.id, alice.id) == [
        {"topic": "Alpha", "subscribers": 1, "subscribed": False},
        {"topic": "news", "subscribers": 2, "subscribed": True}]
    assert await store.unsubscribe(mesh.id, bob.id, "Alpha")
    assert not await store.unsubscribe(mesh.id, bob.id, "Alpha")
    assert await store.list_topics(mesh.id, bob.id) == [
        {"topic": "Alpha", "subscribers": 0, "subscribed": False},
        {"topic": "news", "subscribers": 2, "subscribed": True}]


async def test_profile_sessions_are_set_replaced_and_cleared(backend: Backend) -> None:
    store = backend.store
    mesh, [alice, bob, _carol] = await setup_mesh(store)
    assert (alice.sessions, bob.sessions) == ((), ())
    assert [m.sessions for m in await store.list_members(mesh.id)] == [(), (), ()]
    updated = await store.set_profile(alice.id, {"summary": "two windows",
                                                 "sessions": (BUILD, REVIEW)})
    assert updated.sessions == (BUILD, REVIEW)
    assert (updated.summary, updated.status) == ("two windows", "idle")
    for seen in (await store.get_member_by_id(alice.id),
                 await store.get_member(mesh.id, alice.pubkey),
                 (await store.list_members(mesh.id))[0]):
        assert seen is not None and seen.sessions == (BUILD, REVIEW)
    # Other fields leave the list alone; a new list replaces it whole, in its order.
    assert (await store.set_profile(alice.id, {"status": "dnd"})).sessions == (BUILD, REVIEW)
    other = SessionProfile("other", None, "dnd", None)
    assert (await store.set_profile(alice.id, {"sessions": [other, BUILD]})).sessions == (
        other, BUILD)
    many = tuple(SessionProfile(f"s{i:02}", "x" * 512, "idle", "h" * 64) for i in range(32))
    assert (await store.set_profile(alice.id, {"sessions": list(many)})).sessions == many
    assert (await store.set_profile(alice.id, {"sessions": []})).sessions == ()
    fetched = await store.get_member_by_id(alice.id)
    assert fetched is not None and (fetched.sessions, fetched.status) == ((), "dnd")
    # One member's list is its own.
    await store.set_profile(bob.id, {"sessions": [REVIEW]})
    await store.set_profile(alice.id, {"sessions": [BUILD]})
    assert [m.sessions for m in await store.list_members(mesh.id)] == [(BUILD,), (REVIEW,), ()]
    # A revocation keeps the stored list on the record it returns.
    [revoked] = await store.revoke_member(bob.pubkey, mesh_id=mesh.id, now_ms=NOW + 1)
    assert (revoked.sessions, revoked.revoked_at) == ((REVIEW,), NOW + 1)
    assert [m.sessions for m in await store.revoked_since(NOW + 1)] == [(REVIEW,)]


async def test_sessions_that_are_not_records_are_refused_before_any_write(
        backend: Backend) -> None:
    store = backend.store
    _, [alice, *_] = await setup_mesh(store)
    await store.set_profile(alice.id, {"summary": "before", "sessions": [BUILD]})
    with pytest.raises(StoreError, match="SessionProfile"):
        await store.set_profile(alice.id, {"summary": "half", "sessions": [{"name": "x"}]})
    fetched = await store.get_member_by_id(alice.id)
    assert fetched is not None and (fetched.summary, fetched.sessions) == ("before", (BUILD,))


async def test_nonces_are_single_use_until_they_expire(backend: Backend) -> None:
    store = backend.store
    assert await store.remember_nonce("pk", "n1", expires_at_ms=NOW)
    assert not await store.remember_nonce("pk", "n1", expires_at_ms=NOW)
    assert await store.remember_nonce("other", "n1", expires_at_ms=NOW)
    assert await store.remember_nonce("pk", "n2", expires_at_ms=NOW + 1)
    assert (await store.sweep(NOW)).nonces_expired == 2
    assert await store.remember_nonce("pk", "n1", expires_at_ms=NOW + 5)
    assert not await store.remember_nonce("pk", "n2", expires_at_ms=NOW + 5)
