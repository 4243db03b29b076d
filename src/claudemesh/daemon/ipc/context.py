"""What the routes share: config, the outbox worker, the peer directory, and server state."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from claudemesh import __version__
from claudemesh.config import Config, MeshConfig
from claudemesh.daemon.directory import PeerDirectory
from claudemesh.errors import MeshRequired, NoMeshJoined, UnknownMesh
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["CONTEXT", "DaemonContext", "LinkStatus", "ServerState", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class LinkStatus(enum.StrEnum):
    """What health reports per mesh. Only ``not_connected`` exists until the broker link
    lands (issue 4 replaces this with the link's own state machine)."""

    NOT_CONNECTED = "not_connected"


@dataclass(slots=True)
class ServerState:
    """Mutable state of the API server, shared by the UDS and TCP apps."""

    in_flight: int = 0
    shutting_down: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


@dataclass(slots=True)
class DaemonContext:
    config: Config
    outbox: DbWorker
    directory: PeerDirectory
    token: bytes
    schema_version: int
    clock: Callable[[], int] = now_ms
    started_monotonic: float = field(default_factory=time.monotonic)
    state: ServerState = field(default_factory=ServerState)
    daemon_version: str = __version__
    # Set whenever a row becomes due (insert, requeue): the drain waits on it instead of
    # polling (issue 4).
    outbox_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def pick_mesh(self, slug: str | None) -> MeshConfig:
        """The mesh a request is for; may be omitted only when exactly one is joined.

        Raises:
            NoMeshJoined / MeshRequired / UnknownMesh (422).
        """
        meshes = self.config.meshes
        if slug is None:
            if not meshes:
                raise NoMeshJoined()
            if len(meshes) > 1:
                joined = ", ".join(m.slug for m in meshes)
                raise MeshRequired(f"several meshes are joined ({joined}); say which with 'mesh'")
            return meshes[0]
        for mesh in meshes:
            if mesh.slug == slug:
                return mesh
        raise UnknownMesh(f"this daemon has not joined a mesh called {slug!r}", mesh=slug)

    def link_status(self, slug: str) -> LinkStatus:
        return LinkStatus.NOT_CONNECTED

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_monotonic, 3)


CONTEXT: web.AppKey[DaemonContext] = web.AppKey("context", DaemonContext)
