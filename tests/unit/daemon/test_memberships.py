"""The daemon's record of its subscriptions and groups (topic_subscriptions.json)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from claudemesh.daemon.memberships import FILE_NAME, Memberships


async def test_changes_are_written_0600_and_load_back(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    record = Memberships.load(path)
    assert (record.topics("demo"), record.groups("demo")) == ([], {})
    assert not path.exists()
    await record.set_topic("demo", "news", True)
    await record.set_topic("demo", "build", True)
    await record.set_group("demo", "ops", True, "lead")
    await record.set_group("demo", "ops", True)  # no role given: the role held stays
    await record.set_group("other", "docs", True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Memberships.load(path)
    assert (again.topics("demo"), again.groups("demo"), again.groups("other")) == (
        ["build", "news"], {"ops": "lead"}, {"docs": None})
    await again.set_topic("demo", "news", False)
    await again.set_group("demo", "ops", False)
    assert json.loads(path.read_text())["meshes"]["demo"] == {"topics": ["build"],
                                                             "groups": {}}


async def test_an_unchanged_record_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    record = Memberships.load(path)
    await record.set_topic("demo", "news", False)  # nothing to remove
    await record.set_group("demo", "ops", False)
    assert not path.exists()
    await record.set_topic("demo", "news", True)
    before = path.stat().st_mtime_ns
    path.chmod(0o400)  # a rewrite would replace the file (and its mode)
    await record.set_topic("demo", "news", True)
    assert (path.stat().st_mtime_ns, stat.S_IMODE(path.stat().st_mode)) == (before, 0o400)


def test_an_unreadable_record_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_text("{not json")
    assert Memberships.load(path).topics("demo") == []
    path.write_text(json.dumps({"version": 1, "meshes": {"demo": {"topics": ["a", 3],
                                                                  "groups": {"g": 5}}}}))
    record = Memberships.load(path)
    assert (record.topics("demo"), record.groups("demo")) == (["a"], {"g": None})
