"""The daemon's own record of its topic subscriptions and group memberships, per mesh.

The broker's store keeps them too; this copy lets the daemon assert them again each time
a mesh's link opens (idempotent ``subscribe``/``join_group`` frames), so they survive a
broker that lost them as well as restarts of either side. The file is
``<daemon dir>/topic_subscriptions.json`` (daemon-spec R-LIFE-13 lists it in a backup),
0600, replaced atomically on every change::

    {"version": 1, "meshes": {"<slug>": {"topics": ["news"], "groups": {"ops": "lead"}}}}

A group maps to its role (null: none).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Final

from claudemesh.privatefs import write_private_file

__all__ = ["FILE_NAME", "Memberships"]

log = logging.getLogger(__name__)

FILE_NAME: Final = "topic_subscriptions.json"


class Memberships:
    """Load once at start; every change is written before the call returns."""

    def __init__(self, path: Path, meshes: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self._topics: dict[str, set[str]] = {}
        self._groups: dict[str, dict[str, str | None]] = {}
        for slug, entry in (meshes or {}).items():
            self._topics[slug] = {t for t in entry.get("topics", []) if isinstance(t, str)}
            groups = entry.get("groups", {})
            self._groups[slug] = {g: r if isinstance(r, str) else None
                                  for g, r in groups.items() if isinstance(g, str)} if (
                isinstance(groups, dict)) else {}
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, path: Path) -> Memberships:
        """The record at ``path``; none yet (or unreadable, logged) is an empty one."""
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            log.warning("memberships_unreadable", extra={"path": str(path), "error": str(exc)})
            return cls(path)
        meshes = doc.get("meshes") if isinstance(doc, dict) else None
        return cls(path, {k: v for k, v in meshes.items() if isinstance(v, dict)}
                   if isinstance(meshes, dict) else None)

    def topics(self, slug: str) -> list[str]:
        return sorted(self._topics.get(slug, ()))

    def groups(self, slug: str) -> dict[str, str | None]:
        return dict(sorted(self._groups.get(slug, {}).items()))

    async def set_topic(self, slug: str, topic: str, subscribed: bool) -> None:
        topics = self._topics.setdefault(slug, set())
        if (topic in topics) is not subscribed:
            (topics.add if subscribed else topics.discard)(topic)
            await self._save()

    async def set_group(self, slug: str, group: str, member: bool,
                        role: str | None = None) -> None:
        """Record a join (``role`` None keeps the role held, as the broker does) or a leave."""
        groups = self._groups.setdefault(slug, {})
        if member:
            new = role if role is not None else groups.get(group)
            if group in groups and groups[group] == new:
                return
            groups[group] = new
        elif groups.pop(group, ...) is ...:
            return
        await self._save()

    async def _save(self) -> None:
        meshes = {slug: {"topics": self.topics(slug), "groups": self.groups(slug)}
                  for slug in sorted({*self._topics, *self._groups})}
        data = json.dumps({"version": 1, "meshes": meshes}, indent=1).encode()
        async with self._lock:
            await asyncio.to_thread(write_private_file, self.path, data)
