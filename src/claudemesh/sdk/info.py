"""``GET /v1/version`` and ``GET /v1/health``: who answers, and how it is doing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from claudemesh.sdk.wire import Call, Fields, as_object

__all__ = ["MeshInfo", "VersionInfo", "health", "metrics", "openapi", "version"]


@dataclass(frozen=True, slots=True)
class MeshInfo:
    """A joined mesh as ``/v1/version`` lists it."""

    slug: str
    mesh_id: str
    member_pubkey: str
    display_name: str
    broker_features_negotiated: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> MeshInfo:
        f = Fields(data, "mesh in /v1/version")
        return cls(slug=f.text("slug"), mesh_id=f.text("mesh_id"),
                   member_pubkey=f.text("member_pubkey"), display_name=f.text("display_name"),
                   broker_features_negotiated=f.texts("broker_features_negotiated"),
                   raw=f.raw)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    daemon_version: str
    ipc_api: str
    ipc_features: list[str]
    schema_version: int
    pid: int
    meshes: list[MeshInfo]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> VersionInfo:
        f = Fields(data, "/v1/version answer")
        return cls(daemon_version=f.text("daemon_version"), ipc_api=f.text("ipc_api"),
                   ipc_features=f.texts("ipc_features"),
                   schema_version=f.integer("schema_version"), pid=f.integer("pid"),
                   meshes=f.items("meshes", MeshInfo.from_wire), raw=f.raw)


def version() -> Call[VersionInfo]:
    return Call("GET", "/v1/version", VersionInfo.from_wire)


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/health", as_object)


def metrics() -> Call[str]:
    return Call("GET", "/v1/metrics", lambda data: "" if data is None else str(data))


def openapi() -> Call[dict[str, Any]]:
    return Call("GET", "/v1/openapi.json", as_object)
