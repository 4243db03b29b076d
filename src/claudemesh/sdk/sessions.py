"""Sessions: several agent processes sharing this daemon's member identity, each with its
own address (``<member>/<session>``), unread state and profile line (``/v1/sessions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from claudemesh.sdk.wire import Call, Fields, drop_none, path_part, with_query

__all__ = ["Session", "SessionAddress", "end_session", "heartbeat", "list_sessions",
           "register_session", "session"]


@dataclass(frozen=True, slots=True)
class SessionAddress:
    """A session's address in one mesh: by display name, and by pubkey."""

    mesh: str
    address: str
    pubkey_address: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> SessionAddress:
        f = Fields(data, "session address")
        return cls(mesh=f.text("mesh"), address=f.text("address"),
                   pubkey_address=f.text("pubkey_address"), raw=f.raw)


@dataclass(frozen=True, slots=True)
class Session:
    """A live session. ``unread`` counts the messages for it not yet marked seen; a
    pid-less session lives until ``lease_expires_at`` unless renewed (heartbeat)."""

    session_id: str
    name: str
    address: str | None
    addresses: list[SessionAddress]
    harness: str | None
    pid: int | None
    cwd: str | None
    default: bool
    summary: str | None
    status: str | None
    lease_expires_at: str | None
    created_at: str | None
    last_seen_at: str | None
    unread: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> Session:
        f = Fields(data, "session")
        return cls(session_id=f.text("session_id"), name=f.text("name"),
                   address=f.opt_text("address"),
                   addresses=f.items("addresses", SessionAddress.from_wire),
                   harness=f.opt_text("harness"), pid=f.opt_integer("pid"),
                   cwd=f.opt_text("cwd"), default=f.flag_or("default", default=False),
                   summary=f.opt_text("summary"), status=f.opt_text("status"),
                   lease_expires_at=f.opt_text("lease_expires_at"),
                   created_at=f.opt_text("created_at"), last_seen_at=f.opt_text("last_seen_at"),
                   unread=f.opt_integer("unread") or 0, raw=f.raw)


def register_session(name: str, *, harness: str | None = None, pid: int | None = None,
                     cwd: str | None = None, default: bool = False,
                     lease_s: int | None = None) -> Call[Session]:
    body = drop_none(name=name, harness=harness, pid=pid, cwd=cwd, default=default,
                     lease_s=lease_s)
    return Call("POST", "/v1/sessions", Session.from_wire, body)


def _sessions(data: Any) -> list[Session]:
    return Fields(data, "/v1/sessions answer").items("sessions", Session.from_wire)


def list_sessions(*, pid: int | None = None) -> Call[list[Session]]:
    return Call("GET", with_query("/v1/sessions", pid=pid), _sessions)


def session(session_id: str) -> Call[Session]:
    return Call("GET", f"/v1/sessions/{path_part(session_id)}", Session.from_wire)


def end_session(session_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/sessions/{path_part(session_id)}", lambda _: None)


def heartbeat(session_id: str) -> Call[Session]:
    return Call("POST", f"/v1/sessions/{path_part(session_id)}/heartbeat",
                Session.from_wire, {})
