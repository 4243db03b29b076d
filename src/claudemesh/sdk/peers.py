"""Who is on the mesh, live from the broker (``/v1/peers``), and your line in it
(``/v1/profile``). Both answer 503 ``broker_unavailable`` rather than guess."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from claudemesh.sdk.wire import Call, Fields, as_object, drop_none, with_query

__all__ = ["Peer", "PeerList", "PeerSession", "peers", "set_profile"]


@dataclass(frozen=True, slots=True)
class PeerSession:
    """A live session a member publishes (the broker's ``member_sessions`` feature)."""

    name: str
    address: str | None
    summary: str | None
    status: str | None
    harness: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> PeerSession:
        f = Fields(data, "peer session")
        return cls(name=f.text("name"), address=f.opt_text("address"),
                   summary=f.opt_text("summary"), status=f.opt_text("status"),
                   harness=f.opt_text("harness"), raw=f.raw)


@dataclass(frozen=True, slots=True)
class Peer:
    mesh: str
    pubkey: str
    member_id: str | None
    display_name: str
    online: bool
    status: str | None
    summary: str | None
    visible: bool
    avatar: str | None
    title: str | None
    bio: str | None
    capabilities: list[str]
    groups: list[str]
    sessions: list[PeerSession]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> Peer:
        f = Fields(data, "peer")
        return cls(mesh=f.text("mesh"), pubkey=f.text("pubkey"),
                   member_id=f.opt_text("member_id"), display_name=f.text("display_name"),
                   online=f.flag_or("online", default=False), status=f.opt_text("status"),
                   summary=f.opt_text("summary"), visible=f.flag_or("visible", default=True),
                   avatar=f.opt_text("avatar"), title=f.opt_text("title"),
                   bio=f.opt_text("bio"), capabilities=f.texts("capabilities"),
                   groups=f.texts("groups"), sessions=f.items("sessions", PeerSession.from_wire),
                   raw=f.raw)


@dataclass(frozen=True, slots=True)
class PeerList:
    """``unavailable`` names the meshes whose broker link is down (their peers unknown)."""

    peers: list[Peer]
    unavailable: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> PeerList:
        f = Fields(data, "/v1/peers answer")
        return cls(peers=f.items("peers", Peer.from_wire),
                   unavailable=f.texts("unavailable"), raw=f.raw)


def peers(mesh: str | None = None) -> Call[PeerList]:
    return Call("GET", with_query("/v1/peers", mesh=mesh), PeerList.from_wire)


def set_profile(*, mesh: str | None = None, session: str | None = None,
                summary: str | None = None, status: str | None = None,
                visible: bool | None = None, avatar: str | None = None,
                title: str | None = None, bio: str | None = None,
                capabilities: Sequence[str] | None = None) -> Call[dict[str, Any]]:
    body = drop_none(mesh=mesh, session=session, summary=summary, status=status,
                     visible=visible, avatar=avatar, title=title, bio=bio,
                     capabilities=None if capabilities is None else list(capabilities))
    return Call("POST", "/v1/profile", as_object, body)
