"""Invites: what ``mesh create`` prints and ``join`` redeems (issue 3, item 2).

An invite is ``cm1_`` followed by base64url (no padding) of a compact JSON object:
``{v, broker_url, broker_urls?, mesh_id, mesh_name, invite_id, secret, expires_at_ms,
signature, pin?}``; ``broker_urls`` lists failover brokers and ``pin`` the SHA-256 of
the broker's TLS public key (``sha256/<base64>``, issue 14); the signature covers both.
``signature`` is the mesh's invite key's ed25519 signature of
:func:`claudemesh.crypto.invite_statement`; the broker checks it against the key it holds,
then the invite row (expiry, uses left, not revoked) and the secret's hash. The secret is
a bearer credential: whoever holds the invite can join, until it expires or is used up.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Final

__all__ = ["INVITE_PREFIX", "PIN_RE", "Invite", "InviteError", "decode_invite", "encode_invite"]

INVITE_PREFIX: Final = "cm1_"
PIN_RE: Final = re.compile(r"^sha256/[A-Za-z0-9+/]{43}=$")


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
    broker_urls: tuple[str, ...] = ()  # failover brokers after broker_url, when several
    pin: str = ""  # the broker's TLS key (claudemesh.tls): joiners trust it, no CA needed

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.broker_url, *self.broker_urls)))

    @property
    def signed_urls(self) -> str:
        """What the signature covers: every URL, comma-joined (just broker_url if one)."""
        return ",".join(self.urls)

    @property
    def signed_broker(self) -> str:
        """What the invite statement signs about the broker: its URLs, and its pinned key
        when there is one (an invite without a pin signs exactly what it always did)."""
        return f"{self.signed_urls}|pin={self.pin}" if self.pin else self.signed_urls


def encode_invite(invite: Invite) -> str:
    doc = asdict(invite)
    if not invite.pin:
        del doc["pin"]  # the invites of a broker without TLS stay as they were
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
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
    if isinstance(doc.get("broker_urls"), list):
        doc["broker_urls"] = tuple(doc["broker_urls"])
    try:
        invite = Invite(**doc)
    except TypeError as exc:
        raise InviteError(f"the invite is missing fields: {exc}") from exc
    strings = (invite.broker_url, invite.mesh_id, invite.mesh_name, invite.invite_id,
               invite.secret, invite.signature)
    if not all(isinstance(s, str) and s for s in strings) or not isinstance(
            invite.expires_at_ms, int):
        raise InviteError("the invite has fields of the wrong type")
    if not all(isinstance(u, str) and u.startswith(("ws://", "wss://")) for u in invite.urls):
        raise InviteError("the invite's broker URLs must be ws:// or wss:// URLs")
    if invite.pin and not (isinstance(invite.pin, str) and PIN_RE.fullmatch(invite.pin)):
        raise InviteError("the invite's pin is not sha256/<base64 of 32 bytes>")
    return invite
