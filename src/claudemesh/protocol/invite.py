"""Invites: what ``mesh create`` prints and ``join`` redeems (issue 3, item 2).

An invite is ``cm1_`` followed by base64url (no padding) of a compact JSON object:
``{v, broker_url, mesh_id, mesh_name, invite_id, secret, expires_at_ms, signature}``.
``signature`` is the mesh's invite key's ed25519 signature of
:func:`claudemesh.crypto.invite_statement`; the broker checks it against the key it holds,
then the invite row (expiry, uses left, not revoked) and the secret's hash. The secret is
a bearer credential: whoever holds the invite can join, until it expires or is used up.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, field
from typing import Final

__all__ = ["INVITE_PREFIX", "Invite", "InviteError", "decode_invite", "encode_invite"]

INVITE_PREFIX: Final = "cm1_"


class InviteError(ValueError):
    """The text is not a well-formed invite."""


@dataclass(frozen=True, slots=True)
class Invite:
    broker_url: str
    mesh_id: str
    mesh_name: str
    invite_id: str
    expires_at_ms: int
    secret: str = field(repr=False)
    signature: str = field(repr=False)
    v: int = 1


def encode_invite(invite: Invite) -> str:
    raw = json.dumps(asdict(invite), separators=(",", ":"), sort_keys=True).encode()
    return INVITE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_invite(text: str) -> Invite:
    """Raises InviteError with a reason a user can act on."""
    text = text.strip()
    if not text.startswith(INVITE_PREFIX):
        raise InviteError(f"an invite starts with {INVITE_PREFIX!r}")
    payload = text[len(INVITE_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InviteError("the invite is damaged (not base64url JSON); copy it again") from exc
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise InviteError("unsupported invite version")
    try:
        invite = Invite(**doc)
    except TypeError as exc:
        raise InviteError(f"the invite is missing fields: {exc}") from exc
    strings = (invite.broker_url, invite.mesh_id, invite.mesh_name, invite.invite_id,
               invite.secret, invite.signature)
    if not all(isinstance(s, str) and s for s in strings) or not isinstance(
            invite.expires_at_ms, int):
        raise InviteError("the invite has fields of the wrong type")
    if not invite.broker_url.startswith(("ws://", "wss://")):
        raise InviteError("the invite's broker_url is not a ws:// or wss:// URL")
    return invite
