"""The frames before OPEN: ``hello`` (an existing member authenticates) and ``join`` (an
invite is redeemed for a new member), and the refusal of either once a connection is open.

Checks run in a fixed order, so the error a client sees is the first that applies; the
order is part of the behaviour. Hello: clock, signature, member (unknown, then revoked),
nonce. Join: invite text, the invite's mesh, the invite's signature, clock, the join
request's signature, then the store's redeem (expiry, reuse). The checks that need no
store are pure functions here; :func:`authenticate` and :func:`redeem` add the store
reads and writes between them. Each failure is a :class:`~claudemesh.errors.ClaudemeshError`
with its code and close code (4001 auth, 4002 revoked); the session answers and closes.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from claudemesh import __version__
from claudemesh.broker.context import BrokerContext
from claudemesh.broker.settings import BrokerSettings
from claudemesh.broker.store.base import Member, Mesh
from claudemesh.crypto import (
    CryptoFailure,
    hello_statement,
    invite_statement,
    join_statement,
    verify,
)
from claudemesh.errors import (
    AlreadyAuthenticated,
    BadSignature,
    InviteRejected,
    MemberRevoked,
    ReplayedNonce,
    StaleTimestamp,
    UnknownMember,
)
from claudemesh.protocol.frames import Hello, Join
from claudemesh.protocol.ids import new_ulid
from claudemesh.protocol.invite import Invite, InviteError, decode_invite

__all__ = [
    "already_authenticated",
    "authenticate",
    "check_clock",
    "check_invite",
    "check_member",
    "hello_ack",
    "join_result",
    "read_invite",
    "redeem",
    "verify_hello",
    "verify_join",
]

log = logging.getLogger(__name__)

# -- pure checks -----------------------------------------------------------------------


def check_clock(timestamp_ms: int, *, now_ms: int, skew_ms: int) -> None:
    """Raises StaleTimestamp when the client's clock is more than ``skew_ms`` away."""
    if abs(now_ms - timestamp_ms) > skew_ms:
        raise StaleTimestamp(f"timestamp is {now_ms - timestamp_ms} ms away from the broker's"
                             " clock (limit ±60000 ms); check this machine's clock")


def verify_hello(frame: Hello) -> None:
    """Raises BadSignature unless ``frame`` is signed by its own ``pubkey``."""
    statement = hello_statement(frame.mesh_id, frame.member_id, frame.pubkey,
                                frame.timestamp_ms, frame.nonce)
    try:
        verify(frame.pubkey, statement, frame.signature)
    except CryptoFailure:
        raise BadSignature() from None


def check_member(frame: Hello, mesh: Mesh | None, member: Member | None) -> tuple[Mesh, Member]:
    """The mesh and member a hello names, as the store found them (None: not found).

    Raises:
        UnknownMember: no such mesh, no member with that key, or another member id.
        MemberRevoked: the member was revoked.
    """
    if mesh is None or member is None or member.id != frame.member_id:
        raise UnknownMember()
    if member.revoked_at is not None:
        raise MemberRevoked()
    return mesh, member


def read_invite(text: str) -> Invite:
    """Raises InviteRejected (with the decoder's reason) for a malformed invite."""
    try:
        return decode_invite(text)
    except InviteError as exc:
        raise InviteRejected(str(exc)) from None


def check_invite(invite: Invite, mesh: Mesh | None) -> Mesh:
    """Raises InviteRejected unless ``mesh`` is the invite's and signed it."""
    if mesh is None or mesh.id != invite.mesh_id:
        raise InviteRejected("this broker has no mesh for that invite")
    try:
        verify(mesh.invite_pubkey, invite_statement(
            invite.mesh_id, invite.invite_id, invite.signed_broker, invite.expires_at_ms,
            invite.secret), invite.signature)
    except CryptoFailure:
        raise InviteRejected("the invite's signature does not verify") from None
    return mesh


def verify_join(frame: Join, *, mesh_id: str, invite_id: str) -> None:
    """Raises BadSignature unless the join request is signed by the key it registers."""
    try:
        verify(frame.pubkey, join_statement(mesh_id, invite_id, frame.pubkey,
                                            frame.display_name, frame.timestamp_ms),
               frame.signature)
    except CryptoFailure:
        raise BadSignature("the join request's signature does not verify") from None


# -- answers ---------------------------------------------------------------------------


def hello_ack(session_id: str, mesh: Mesh, member: Member, *, features: dict[str, Any],
              settings: BrokerSettings, now_ms: int) -> dict[str, Any]:
    return {
        "type": "hello_ack", "session_id": session_id, "mesh_id": mesh.id,
        "mesh_name": mesh.name, "member_id": member.id,
        "display_name": member.display_name, "features": features,
        "server": {"name": "claudemesh-broker", "version": __version__, "time_ms": now_ms},
        "heartbeat": {"ping_interval_s": settings.ping_interval_s,
                      "idle_timeout_s": settings.ping_interval_s + settings.ping_timeout_s},
        "limits": {"frame_bytes": settings.frame_soft_limit_bytes,
                   "inline_bytes": settings.inline_bytes},
    }


def join_result(mesh: Mesh, member: Member) -> dict[str, Any]:
    return {"type": "join_result", "mesh_id": mesh.id, "mesh_name": mesh.name,
            "member_id": member.id, "display_name": member.display_name,
            "pubkey": member.pubkey}


# -- with the store --------------------------------------------------------------------


async def authenticate(ctx: BrokerContext, frame: Hello) -> tuple[Mesh, Member]:
    """Every check of a hello, its nonce remembered last; returns who said it.

    Raises:
        ClaudemeshError: StaleTimestamp, BadSignature, UnknownMember, MemberRevoked,
            ReplayedNonce (see :func:`check_clock`, :func:`verify_hello`,
            :func:`check_member`).
    """
    now = ctx.clock()
    skew_ms = ctx.settings.clock_skew_ms
    check_clock(frame.timestamp_ms, now_ms=now, skew_ms=skew_ms)
    verify_hello(frame)
    found = await ctx.store.get_mesh(frame.mesh_id)
    member = None if found is None or found.id != frame.mesh_id else (
        await ctx.store.get_member(found.id, frame.pubkey))
    mesh, member = check_member(frame, found, member)
    if not await ctx.store.remember_nonce(frame.pubkey, frame.nonce,
                                          expires_at_ms=now + 2 * skew_ms):
        raise ReplayedNonce()
    return mesh, member


async def redeem(ctx: BrokerContext, frame: Join) -> tuple[Mesh, Member]:
    """Every check of a join, then the store's redeem; returns the new member.

    Raises:
        ClaudemeshError: InviteRejected, StaleTimestamp, BadSignature, and the store's
            refusals of an expired or used invite.
    """
    invite = read_invite(frame.invite)
    mesh = check_invite(invite, await ctx.store.get_mesh(invite.mesh_id))
    now = ctx.clock()
    check_clock(frame.timestamp_ms, now_ms=now, skew_ms=ctx.settings.clock_skew_ms)
    verify_join(frame, mesh_id=mesh.id, invite_id=invite.invite_id)
    secret_sha256 = hashlib.sha256(invite.secret.encode("ascii")).hexdigest()
    member = await ctx.store.redeem_invite(
        invite_id=invite.invite_id, mesh_id=mesh.id, secret_sha256=secret_sha256,
        member=Member(new_ulid(now), mesh.id, frame.pubkey, frame.display_name, now, None),
        now_ms=now)
    log.info("member_joined", extra={"mesh_id": mesh.id, "member_id": member.id})
    return mesh, member


async def already_authenticated(session: object, frame: Hello | Join) -> None:
    """An OPEN connection's hello or join (a frame handler; see handlers.py)."""
    raise AlreadyAuthenticated()
