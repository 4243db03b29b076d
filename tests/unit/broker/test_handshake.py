"""The pure checks of hello and join (src/claudemesh/broker/handshake.py), with no store."""

from __future__ import annotations

import pytest

from claudemesh.broker.handshake import check_clock, check_member, read_invite, verify_hello
from claudemesh.broker.store.base import Member, Mesh
from claudemesh.crypto import MemberKey, hello_statement
from claudemesh.errors import (
    BadSignature,
    InviteRejected,
    MemberRevoked,
    StaleTimestamp,
    UnknownMember,
)
from claudemesh.protocol.frames import Hello

KEY = MemberKey.generate()
MESH = Mesh("mesh1", "demo", 0, "retention_scoped", 7, 30, "prefer_newest", "ab" * 32)
MEMBER = Member("member1", "mesh1", KEY.pubkey, "alice", 0, None)


def hello(*, key: MemberKey = KEY, member_id: str = "member1", ts: int = 1_000) -> Hello:
    nonce = "0" * 32
    signature = key.sign(hello_statement("mesh1", member_id, key.pubkey, ts, nonce))
    return Hello(type="hello", mesh_id="mesh1", member_id=member_id, pubkey=KEY.pubkey,
                 timestamp_ms=ts, nonce=nonce, signature=signature)


def test_a_timestamp_exactly_at_the_skew_limit_passes_either_way() -> None:
    check_clock(0, now_ms=60_000, skew_ms=60_000)
    check_clock(120_000, now_ms=60_000, skew_ms=60_000)


def test_a_timestamp_past_the_skew_limit_is_stale_and_says_by_how_much() -> None:
    with pytest.raises(StaleTimestamp, match="60001 ms away"):
        check_clock(0, now_ms=60_001, skew_ms=60_000)
    with pytest.raises(StaleTimestamp, match="-60001 ms away"):
        check_clock(120_001, now_ms=60_000, skew_ms=60_000)


def test_a_hello_signed_by_its_key_verifies_and_one_signed_by_another_does_not() -> None:
    verify_hello(hello())
    with pytest.raises(BadSignature):
        verify_hello(hello(key=MemberKey.generate()))


def test_member_checks_refuse_unknown_before_revoked() -> None:
    assert check_member(hello(), MESH, MEMBER) == (MESH, MEMBER)
    revoked = Member("member1", "mesh1", KEY.pubkey, "alice", 0, 5)
    with pytest.raises(UnknownMember):
        check_member(hello(), None, None)
    with pytest.raises(UnknownMember):
        check_member(hello(), MESH, None)
    with pytest.raises(UnknownMember):
        check_member(hello(member_id="someone_else"), MESH, revoked)
    with pytest.raises(MemberRevoked):
        check_member(hello(), MESH, revoked)


def test_a_malformed_invite_is_rejected_with_the_decoders_reason() -> None:
    with pytest.raises(InviteRejected, match="an invite starts with"):
        read_invite("not an invite")
