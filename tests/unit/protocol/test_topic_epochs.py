"""The pure rules of encrypted topics: the broker's epoch compare-and-set, the daemon's
stale-epoch test, and the context a sealed key carries."""

from __future__ import annotations

import pytest

from claudemesh.protocol.topic_epochs import (
    TopicState,
    epoch_refusal,
    key_from_plaintext,
    key_plaintext,
    needs_epoch,
)

A, B, C = "a" * 64, "b" * 64, "c" * 64
STATE = TopicState(membership_version=4, current_epoch=2, subscribers=frozenset({A, B}))


def test_the_next_epoch_for_the_current_membership_sealed_to_exactly_the_subscribers() -> None:
    assert epoch_refusal(STATE, epoch=3, membership_version=4, sealed_to=[A, B]) is None
    assert epoch_refusal(STATE, epoch=3, membership_version=4, sealed_to=[B, A]) is None


@pytest.mark.parametrize(("epoch", "version", "sealed_to", "why"), [
    (2, 4, [A, B], "not the next one (3)"),  # the race's loser: someone made 3... or 2
    (4, 4, [A, B], "not the next one (3)"),
    (3, 3, [A, B], "membership version 3 is not the topic's current one (4)"),
    (3, 5, [A, B], "membership version 5"),
    (3, 4, [A], "1 current subscriber(s) left out"),
    (3, 4, [A, B, C], "1 key(s) sealed to members who are not subscribers"),  # a leaver
    (3, 4, [A, B, B], "more than once"),
])
def test_refusals(epoch: int, version: int, sealed_to: list[str], why: str) -> None:
    reason = epoch_refusal(STATE, epoch=epoch, membership_version=version, sealed_to=sealed_to)
    assert reason is not None
    assert why in reason


def test_an_empty_topic_takes_an_epoch_sealed_to_nobody() -> None:
    empty = TopicState(7, 0, frozenset())
    assert epoch_refusal(empty, epoch=1, membership_version=7, sealed_to=[]) is None


def test_needs_epoch() -> None:
    assert needs_epoch(None, 0)
    assert needs_epoch(3, 4)
    assert not needs_epoch(4, 4)
    assert not needs_epoch(5, 4)  # heard late: our epoch is newer than what we heard


def test_sealed_key_names_its_mesh_topic_and_epoch() -> None:
    key = bytes(range(32))
    raw = key_plaintext("m1", "news", 3, key)
    assert key_from_plaintext(raw, "m1", "news", 3) == key
    assert key_from_plaintext(raw, "m1", "news", 4) is None
    assert key_from_plaintext(raw, "m1", "other", 3) is None
    assert key_from_plaintext(raw, "m2", "news", 3) is None
    assert key_from_plaintext(raw[:-1], "m1", "news", 3) is None
