"""End-to-end encrypted topics: the pure rules (docs/protocol.md, "Encrypted topics").

A topic's posts are sealed with a symmetric key of one *epoch*; an epoch belongs to one
*membership version* of the topic (the broker bumps it on every subscribe, unsubscribe
and revocation of a subscriber). Its key is sealed (crypto_box) by the member who made
it to each subscriber of that version, and to nobody else: a leaver never gets the key
of the next epoch, and a member who joins later gets only the epochs made after it.

Here: the broker's compare-and-set of a proposed epoch (:func:`epoch_refusal`), the
daemon's test for a stale epoch (:func:`needs_epoch`), and what a sealed key's plaintext
says (it names mesh, topic and epoch, so a broker cannot replay one topic's key as
another's).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

__all__ = ["KEY_STATEMENT", "TopicState", "epoch_refusal", "key_from_plaintext",
           "key_plaintext", "needs_epoch"]

KEY_STATEMENT: Final = "claudemesh/topic-key/v1"
KEY_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic's key state as the broker holds it; ``subscribers`` are pubkeys."""

    membership_version: int
    current_epoch: int
    subscribers: frozenset[str]


def epoch_refusal(state: TopicState, *, epoch: int, membership_version: int,
                  sealed_to: Collection[str]) -> str | None:
    """Why the broker refuses a proposed epoch (an ``epoch_conflict``), or None to take it.

    Taken only when it is the next epoch, for the current membership version, and sealed
    to exactly the current subscribers, each once. Any member may propose one (a member
    may post to a topic it does not read); it keeps its own copy of the key locally.
    """
    if epoch != state.current_epoch + 1:
        return f"epoch {epoch} is not the next one ({state.current_epoch + 1})"
    if membership_version != state.membership_version:
        return (f"membership version {membership_version} is not the topic's current one"
                f" ({state.membership_version})")
    given = set(sealed_to)
    if len(given) != len(sealed_to):
        return "a subscriber appears more than once in keys"
    if missing := state.subscribers - given:
        return f"{len(missing)} current subscriber(s) left out of keys"
    if extra := given - state.subscribers:
        return f"{len(extra)} key(s) sealed to members who are not subscribers"
    return None


def needs_epoch(newest_membership_version: int | None, broker_membership_version: int) -> bool:
    """A sender must start a new epoch before posting: it has none, or its newest one was
    made for an older membership than the broker's current one."""
    return (newest_membership_version is None
            or newest_membership_version < broker_membership_version)


def _prefix(mesh_id: str, topic: str, epoch: int) -> bytes:
    return f"{KEY_STATEMENT}|{mesh_id}|{topic}|{epoch}|".encode()


def key_plaintext(mesh_id: str, topic: str, epoch: int, key: bytes) -> bytes:
    """What is sealed to each subscriber: the context, then the 32-byte key."""
    return _prefix(mesh_id, topic, epoch) + key


def key_from_plaintext(raw: bytes, mesh_id: str, topic: str, epoch: int) -> bytes | None:
    """The key out of an opened seal, or None when it is for another mesh, topic, epoch."""
    prefix = _prefix(mesh_id, topic, epoch)
    if not raw.startswith(prefix) or len(raw) != len(prefix) + KEY_BYTES:
        return None
    return raw[len(prefix):]
