"""The daemon's keyring file (topic_keys.json): what it keeps, that it survives a restart,
that it is private, and that reading an unknown topic writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from claudemesh.daemon.topic_keys import EpochKey, TopicKeyring


def test_keys_versions_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "topic_keys.json"
    ring = TopicKeyring(path)
    assert ring.newest("m", "news") is None and not ring.encrypted("m", "news")
    assert not path.exists()  # reading wrote nothing
    ring.add("m", "news", EpochKey(1, 2, b"\x01" * 32))
    ring.add("m", "news", EpochKey(3, 5, b"\x03" * 32))
    ring.add("m", "news", EpochKey(1, 9, b"\x09" * 32))  # an epoch's key never changes
    ring.heard("m", "news", 6, current_epoch=3)
    ring.heard("m", "news", 4)  # never backwards
    assert path.stat().st_mode & 0o777 == 0o600
    again = TopicKeyring(path)
    assert again.newest("m", "news") == EpochKey(3, 5, b"\x03" * 32)
    assert again.key("m", "news", 1) == b"\x01" * 32
    assert again.key("m", "news", 2) is None
    assert again.broker_version("m", "news") == 6
    assert again.encrypted("m", "news") and again.epochs("m", "news") == [1, 3]
    assert again.topics("m") == ["news"] and again.topics("other") == []


def test_knowing_the_topic_has_epochs_without_a_key(tmp_path: Path) -> None:
    ring = TopicKeyring(tmp_path / "topic_keys.json")
    ring.heard("m", "ops", 3, current_epoch=2)  # topic_keys said so; none sealed to us
    assert ring.encrypted("m", "ops") and ring.newest("m", "ops") is None


def test_an_unreadable_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "topic_keys.json"
    path.write_text("{not json")
    assert TopicKeyring(path).newest("m", "news") is None
    path.write_text(json.dumps({"version": 1, "meshes": {}}))
    assert TopicKeyring(path).topics("m") == []


def test_in_memory_only() -> None:
    ring = TopicKeyring(None)
    ring.add("m", "t", EpochKey(1, 1, b"k" * 32))
    assert ring.key("m", "t", 1) == b"k" * 32
