"""What the encrypted-topic and file tests build alike: epoch keys sealed by a raw
broker client to subscribers, and files with a marker that a plaintext copy would show."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from brokerkit import Identity
from claudemesh.crypto import box_encrypt
from claudemesh.protocol.topic_epochs import key_plaintext


def seal_epoch(sender: Identity, topic: str, epoch: int, key: bytes, pubkeys: Iterable[str],
               *, named: Callable[[str], str] | None = None) -> list[dict[str, str]]:
    """The ``keys`` of a ``topic_epoch``: ``key`` sealed by ``sender`` to each pubkey,
    naming ``topic`` (or what ``named(pubkey)`` says, to plant a wrong seal)."""
    out = []
    for pubkey in pubkeys:
        box = box_encrypt(key_plaintext(sender.mesh_id, named(pubkey) if named else topic,
                                        epoch, key),
                          sender_secret_hex=sender.key.secret_key, recipient_pubkey_hex=pubkey)
        out.append({"pubkey": pubkey, "nonce": box.nonce, "ciphertext": box.ciphertext})
    return out


def make_file(where: Path, size: int, name: str, marker: bytes) -> Path:
    """Random bytes with ``marker`` sprinkled in, so a plaintext copy would show."""
    path = where / name
    with path.open("wb") as f:
        written = 0
        while written < size:
            block = marker + os.urandom(min(1 << 20, size - written) - len(marker))
            f.write(block)
            written += len(block)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
