"""Member keys, signed statements, and DM encryption (PyNaCl).

Keys are ed25519, written as lower-case hex: a 32-byte public key, and a 64-byte secret
key (``seed ‖ public``, libsodium's form). Every signed statement starts with a domain
tag (``claudemesh/<what>/v1``) so a signature made for one purpose can never be replayed
as another; the fields follow, joined by ``|``.

DMs are ``crypto_box`` (X25519 + XSalsa20-Poly1305) with both ed25519 keys converted to
X25519 and a random 24-byte nonce (original-implementation-notes §2); nonce and
ciphertext travel as standard base64. Topic posts are ``crypto_secretbox`` (XSalsa20-
Poly1305) under a random 32-byte key per topic epoch (docs/protocol.md, Encrypted topics).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils

from claudemesh.protocol.handshake import hello_statement  # the statement is protocol

__all__ = [
    "BoxedBody",
    "CryptoFailure",
    "MemberKey",
    "box_decrypt",
    "box_encrypt",
    "hello_statement",
    "invite_statement",
    "join_statement",
    "new_topic_key",
    "secretbox_decrypt",
    "secretbox_encrypt",
    "verify",
]

NONCE_BYTES: Final = 24


class CryptoFailure(ValueError):
    """A signature did not verify, or a ciphertext did not open."""


@dataclass(frozen=True, slots=True)
class MemberKey:
    """An ed25519 keypair; the secret never appears in a repr."""

    pubkey: str
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> MemberKey:
        key = nacl.signing.SigningKey.generate()
        public = key.verify_key.encode().hex()
        return cls(public, key.encode().hex() + public)

    @classmethod
    def from_secret(cls, secret_key_hex: str) -> MemberKey:
        raw = bytes.fromhex(secret_key_hex)
        key = nacl.signing.SigningKey(raw[:32])
        public = key.verify_key.encode().hex()
        if len(raw) != 64 or raw[32:].hex() != public:
            raise CryptoFailure("secret key does not end with its public key")
        return cls(public, secret_key_hex)

    def sign(self, statement: str) -> str:
        key = nacl.signing.SigningKey(bytes.fromhex(self.secret_key)[:32])
        return key.sign(statement.encode("utf-8")).signature.hex()


def verify(pubkey_hex: str, statement: str, signature_hex: str) -> None:
    """Raises CryptoFailure unless ``signature_hex`` is ``pubkey``'s signature of it."""
    try:
        nacl.signing.VerifyKey(bytes.fromhex(pubkey_hex)).verify(
            statement.encode("utf-8"), bytes.fromhex(signature_hex))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise CryptoFailure("signature does not verify") from exc


def join_statement(mesh_id: str, invite_id: str, pubkey: str, display_name: str,
                   timestamp_ms: int) -> str:
    return f"claudemesh/join/v1|{mesh_id}|{invite_id}|{pubkey}|{display_name}|{timestamp_ms}"


def invite_statement(mesh_id: str, invite_id: str, broker_url: str, expires_at_ms: int,
                     secret: str) -> str:
    digest = hashlib.sha256(secret.encode("ascii")).hexdigest()
    return f"claudemesh/invite/v1|{mesh_id}|{invite_id}|{broker_url}|{expires_at_ms}|{digest}"


@dataclass(frozen=True, slots=True)
class BoxedBody:
    nonce: str  # base64
    ciphertext: str  # base64


@functools.lru_cache(maxsize=4096)
def _shared_key(own_secret_hex: str, peer_pubkey_hex: str) -> bytes:
    """The precomputed crypto_box key for one pair (``crypto_box_beforenm``).

    Converting both ed25519 keys to X25519 and the scalar multiplication cost far more
    than sealing a message; a daemon talks to few peers, so it does them once per pair
    (about a quarter of each daemon's event loop in bench/e2e.py before this cache).
    """
    x_pk = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(bytes.fromhex(peer_pubkey_hex))
    x_sk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(bytes.fromhex(own_secret_hex))
    return bytes(nacl.bindings.crypto_box_beforenm(x_pk, x_sk))


def box_encrypt(plaintext: bytes, *, sender_secret_hex: str, recipient_pubkey_hex: str,
                nonce: bytes | None = None) -> BoxedBody:
    """Raises CryptoFailure when a key is malformed (not a valid ed25519 point)."""
    nonce = nonce if nonce is not None else nacl.utils.random(NONCE_BYTES)
    try:
        key = _shared_key(sender_secret_hex, recipient_pubkey_hex)
        sealed = nacl.bindings.crypto_box_afternm(plaintext, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoFailure("cannot encrypt to that key") from exc
    return BoxedBody(base64.b64encode(nonce).decode(), base64.b64encode(sealed).decode())


def box_decrypt(body: BoxedBody, *, recipient_secret_hex: str, sender_pubkey_hex: str) -> bytes:
    """Raises CryptoFailure when the box does not open with these keys."""
    try:
        nonce = base64.b64decode(body.nonce, validate=True)
        sealed = base64.b64decode(body.ciphertext, validate=True)
        key = _shared_key(recipient_secret_hex, sender_pubkey_hex)
        return bytes(nacl.bindings.crypto_box_open_afternm(sealed, nonce, key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoFailure("the message does not open with these keys") from exc


TOPIC_KEY_BYTES: Final = 32


def new_topic_key() -> bytes:
    return bytes(nacl.utils.random(TOPIC_KEY_BYTES))


def secretbox_encrypt(plaintext: bytes, key: bytes, *, nonce: bytes | None = None) -> BoxedBody:
    """A topic post under its epoch's key. Raises CryptoFailure for a malformed key."""
    nonce = nonce if nonce is not None else nacl.utils.random(NONCE_BYTES)
    try:
        sealed = nacl.bindings.crypto_secretbox(plaintext, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoFailure("cannot encrypt with that key") from exc
    return BoxedBody(base64.b64encode(nonce).decode(), base64.b64encode(sealed).decode())


def secretbox_decrypt(body: BoxedBody, key: bytes) -> bytes:
    """Raises CryptoFailure when the box does not open with ``key``."""
    try:
        nonce = base64.b64decode(body.nonce, validate=True)
        sealed = base64.b64decode(body.ciphertext, validate=True)
        return bytes(nacl.bindings.crypto_secretbox_open(sealed, nonce, key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoFailure("the post does not open with this epoch's key") from exc
