"""Operator actions against a broker's store: create a mesh, mint invites, revoke members.

They run in the operator's process, straight on the store (a running broker sees the
rows: new meshes and invites at once, revocations within ``revocation_poll_s``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
from dataclasses import dataclass
from typing import Final

from claudemesh.broker.store.base import BrokerStore, Member, Mesh, NewInvite
from claudemesh.crypto import MemberKey, invite_statement
from claudemesh.errors import InvalidRequest
from claudemesh.protocol.destination import NAME_RE
from claudemesh.protocol.ids import new_ulid
from claudemesh.protocol.invite import PIN_RE, Invite, encode_invite

__all__ = ["MeshOptions", "create_mesh", "mint_invite", "revoke"]

HOUR_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class MeshOptions:
    dedupe_mode: str = "retention_scoped"
    dedupe_retention_days: int = 365  # R-BRK-2 default
    message_retention_days: int = 30
    connection_policy: str = "prefer_newest"  # R-ID-14 default


async def create_mesh(store: BrokerStore, name: str, options: MeshOptions, *, now_ms: int) -> Mesh:
    """Raises InvalidRequest for a bad name or option, MeshExists when the name is taken."""
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest("a mesh name is 1-64 letters, digits, '.', '_' or '-',"
                             " starting with a letter or digit")
    if options.dedupe_retention_days < 3:
        raise InvalidRequest("dedupe retention is at least 3 days (R-AGE-1)")
    key = MemberKey.generate()
    mesh = Mesh(new_ulid(now_ms), name, now_ms, options.dedupe_mode,
                options.dedupe_retention_days, options.message_retention_days,
                options.connection_policy, key.pubkey)
    return await store.create_mesh(mesh, key.secret_key)


async def mint_invite(store: BrokerStore, mesh: Mesh, *, broker_url: str, max_uses: int,
                      valid_hours: float, now_ms: int,
                      more_urls: tuple[str, ...] = (), pin: str = "") -> str:
    """A new signed invite for ``mesh``, recorded in the store; returns its text.

    ``more_urls`` are failover brokers on the same store (PostgreSQL, issue 6); ``pin`` is
    the brokers' TLS key (``claudemesh.tls.pin_of_cert_file``), signed with the rest."""
    if max_uses < 1:
        raise InvalidRequest("an invite needs at least one use")
    if not all(u.startswith(("ws://", "wss://")) for u in (broker_url, *more_urls)):
        raise InvalidRequest("--broker-url must be a ws:// or wss:// URL")
    if pin and not PIN_RE.fullmatch(pin):
        raise InvalidRequest("--pin must be sha256/<base64 of 32 bytes>")
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    invite_id = new_ulid(now_ms)
    expires = now_ms + int(valid_hours * HOUR_MS)
    draft = Invite(broker_url, mesh.id, mesh.name, invite_id, expires, secret, "",
                   broker_urls=tuple(u for u in more_urls if u != broker_url), pin=pin)
    signer = MemberKey.from_secret(await store.mesh_invite_key(mesh.id))
    signature = signer.sign(invite_statement(mesh.id, invite_id, draft.signed_broker, expires,
                                             secret))
    await store.create_invite(
        NewInvite(invite_id, mesh.id, secret, expires, max_uses),
        secret_sha256=hashlib.sha256(secret.encode("ascii")).hexdigest(), now_ms=now_ms)
    return encode_invite(dataclasses.replace(draft, signature=signature))


async def revoke(store: BrokerStore, pubkey: str, *, mesh: Mesh | None,
                 now_ms: int) -> list[Member]:
    """Revoke ``pubkey`` (in ``mesh``, or everywhere). Raises InvalidRequest when none."""
    pubkey = pubkey.lower()
    revoked = await store.revoke_member(pubkey, mesh_id=None if mesh is None else mesh.id,
                                        now_ms=now_ms)
    if not revoked:
        where = f" in mesh {mesh.name!r}" if mesh else ""
        raise InvalidRequest(f"no live member{where} has pubkey {pubkey}")
    return revoked
