"""Shared files, end to end: a random key per file, the file sealed in fixed-size chunks.

Each chunk of :data:`CHUNK_BYTES` plaintext (the last one shorter, an empty file one empty
chunk) is ``crypto_secretbox`` (XSalsa20-Poly1305) under the file's 32-byte key, with the
nonce ``nonce_prefix (16 random bytes) ‖ chunk index (8 bytes, big-endian)``: a chunk
opens only at its own position, so the broker cannot reorder, drop or splice chunks
without the download failing. The broker stores and serves ciphertext only; the key
travels to the recipient inside the crypto_box DM that references the file
(``protocol.sealed``). Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.utils

from claudemesh.crypto import CryptoFailure

__all__ = ["CHUNK_BYTES", "CIPHER_CHUNK_BYTES", "KEY_BYTES", "MAC_BYTES", "PREFIX_BYTES",
           "chunk_count", "cipher_size", "new_file_key", "new_nonce_prefix", "open_chunk",
           "seal_chunk"]

CHUNK_BYTES: Final = 128 * 1024  # plaintext per chunk: one blob_put, well inside 256 KiB
MAC_BYTES: Final = 16
CIPHER_CHUNK_BYTES: Final = CHUNK_BYTES + MAC_BYTES
KEY_BYTES: Final = 32
PREFIX_BYTES: Final = 16


def new_file_key() -> bytes:
    return bytes(nacl.utils.random(KEY_BYTES))


def new_nonce_prefix() -> bytes:
    return bytes(nacl.utils.random(PREFIX_BYTES))


def chunk_count(plain_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Chunks a file of ``plain_size`` bytes takes (an empty file: one empty chunk)."""
    return max(1, -(-plain_size // chunk_bytes))


def cipher_size(plain_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Bytes the broker stores for a file of ``plain_size`` bytes."""
    return plain_size + MAC_BYTES * chunk_count(plain_size, chunk_bytes)


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(8, "big")


def seal_chunk(plain: bytes, *, key: bytes, prefix: bytes, index: int) -> bytes:
    return bytes(nacl.bindings.crypto_secretbox(plain, _nonce(prefix, index), key))


def open_chunk(sealed: bytes, *, key: bytes, prefix: bytes, index: int) -> bytes:
    """Raises CryptoFailure when the chunk is not chunk ``index`` of this file."""
    try:
        return bytes(nacl.bindings.crypto_secretbox_open(sealed, _nonce(prefix, index), key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoFailure(f"chunk {index} does not open with the file's key") from exc
