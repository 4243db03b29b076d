"""The daemon's peer directory: display name -> member pubkey, per mesh (A-14f).

A send addressed by name must be resolved in Phase A, before the fingerprint, so a name
that resolves to nobody is a 422 that consumes no id. The directory is fed from presence
and ``list_peers`` once the broker link exists (issue 4, which also persists it so names
resolve while the broker is down). Until then it knows nobody, and every name is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Peer", "PeerDirectory"]


@dataclass(frozen=True, slots=True)
class Peer:
    pubkey: str
    display_name: str


class PeerDirectory:
    def __init__(self) -> None:
        self._by_mesh: dict[str, dict[str, Peer]] = {}

    def replace(self, mesh: str, peers: Iterable[Peer]) -> None:
        """Set the whole known membership of ``mesh`` (e.g. from ``list_peers``)."""
        self._by_mesh[mesh] = {p.pubkey: p for p in peers}

    def upsert(self, mesh: str, peer: Peer) -> None:
        self._by_mesh.setdefault(mesh, {})[peer.pubkey] = peer

    def resolve(self, mesh: str, name: str) -> list[str]:
        """Every pubkey in ``mesh`` whose display name is exactly ``name``."""
        return sorted(p.pubkey for p in self._by_mesh.get(mesh, {}).values()
                      if p.display_name == name)
