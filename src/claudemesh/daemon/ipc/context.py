"""What the routes share: config, the outbox worker, the peer directory, and server state."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from claudemesh import __version__
from claudemesh.clock import now_ms
from claudemesh.config import Config, MeshConfig
from claudemesh.daemon.directory import PeerDirectory
from claudemesh.daemon.events import EventBus
from claudemesh.daemon.meshes import Meshes, MeshRuntime
from claudemesh.daemon.receipts import ReceiptPump
from claudemesh.daemon.sessions import SessionRegistry
from claudemesh.errors import MeshRequired, NoMeshJoined, UnknownMesh
from claudemesh.sqlitedb.worker import DbWorker

__all__ = [
    "CONTEXT",
    "DURATION_BUCKETS_S",
    "DaemonContext",
    "RequestDurations",
    "ServerState",
]



DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


@dataclass(slots=True)
class RequestDurations:
    """A fixed-bucket histogram of request durations (Prometheus ``le`` buckets)."""

    counts: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_S))
    total: int = 0
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum_s += seconds
        for i, bound in enumerate(DURATION_BUCKETS_S):
            if seconds <= bound:
                self.counts[i] += 1


@dataclass(slots=True)
class ServerState:
    """Mutable state of the API server, shared by the UDS and TCP apps."""

    in_flight: int = 0
    shutting_down: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    requests: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    durations: dict[str, RequestDurations] = field(default_factory=dict)
    accepts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (mesh, outcome)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def record(self, route: str, status: int, transport: str, seconds: float) -> None:
        self.requests[(route, status, transport)] += 1
        self.durations.setdefault(route, RequestDurations()).observe(seconds)

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


@dataclass(slots=True)
class DaemonContext:
    config: Config
    outbox: DbWorker
    inbox: DbWorker
    directory: PeerDirectory
    bus: EventBus
    meshes: Meshes
    token: bytes
    schema_version: int
    sessions: SessionRegistry
    receipts: ReceiptPump
    clock: Callable[[], int] = now_ms
    started_monotonic: float = field(default_factory=time.monotonic)
    state: ServerState = field(default_factory=ServerState)
    daemon_version: str = __version__

    def on_enqueue(self, mesh: str) -> None:
        """A row of ``mesh`` became due (insert, requeue): wake its drain (no polling)."""
        self.meshes.notify(mesh)

    def runtime(self, slug: str) -> MeshRuntime:
        return self.meshes.by_slug[slug]

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

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_monotonic, 3)


CONTEXT: web.AppKey[DaemonContext] = web.AppKey("context", DaemonContext)
