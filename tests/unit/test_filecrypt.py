"""Chunk encryption of shared files: each chunk opens only with its key at its index."""

from __future__ import annotations

import pytest

from claudemesh.crypto import CryptoFailure
from claudemesh.filecrypt import (
    CHUNK_BYTES,
    MAC_BYTES,
    chunk_count,
    cipher_size,
    new_file_key,
    new_nonce_prefix,
    open_chunk,
    seal_chunk,
)


def test_sizes() -> None:
    assert [chunk_count(n) for n in (0, 1, CHUNK_BYTES, CHUNK_BYTES + 1)] == [1, 1, 1, 2]
    assert cipher_size(0) == MAC_BYTES
    assert cipher_size(3 * CHUNK_BYTES) == 3 * (CHUNK_BYTES + MAC_BYTES)


def test_a_chunk_opens_only_at_its_index_with_its_key() -> None:
    key, prefix = new_file_key(), new_nonce_prefix()
    sealed = seal_chunk(b"hello", key=key, prefix=prefix, index=3)
    assert len(sealed) == 5 + MAC_BYTES
    assert seal_chunk(b"hello", key=key, prefix=prefix, index=3) == sealed  # resumable
    assert open_chunk(sealed, key=key, prefix=prefix, index=3) == b"hello"
    for kw in ({"key": new_file_key(), "prefix": prefix, "index": 3},
               {"key": key, "prefix": new_nonce_prefix(), "index": 3},
               {"key": key, "prefix": prefix, "index": 4}):
        with pytest.raises(CryptoFailure):
            open_chunk(sealed, **kw)  # type: ignore[arg-type]
    with pytest.raises(CryptoFailure):
        open_chunk(sealed[:-1] + bytes([sealed[-1] ^ 1]), key=key, prefix=prefix, index=3)
