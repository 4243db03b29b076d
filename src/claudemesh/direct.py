"""``claudemesh send --no-daemon``: one send over a short broker connection of our own.

Same identity, same envelope, same ``client_message_id`` and fingerprint rules as the
daemon (:mod:`claudemesh.sending`), so running the same command again is deduplicated by
the broker exactly like a daemon retry. The connection says hello with the member key,
checks the broker's features (an incompatible broker is refused, exit 6), resolves a
display name with ``list_peers`` when needed, sends, and waits for the ``send_result``.
Pushes that arrive meanwhile are left unacked: the broker keeps them for the daemon.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Final

from claudemesh.clock import now_ms
from claudemesh.config import MeshConfig
from claudemesh.crypto import MemberKey, hello_statement
from claudemesh.errors import (
    BrokerIncompatible,
    BrokerUnreachable,
    InvalidRequest,
    RemoteError,
    UnknownDestination,
    error_classes,
)
from claudemesh.protocol.destination import (
    Destination,
    DestinationError,
    DestinationKind,
    PeerName,
    parse_to,
)
from claudemesh.protocol.features import NegotiationFailure, validate_features
from claudemesh.sending import prepare, wire_frame

__all__ = ["send_direct"]

TIMEOUT_S: Final = 10.0


def send_direct(mesh: MeshConfig, to: str, message: str, *, client_message_id: str,
                priority: str, meta: dict[str, Any] | None, reply_to: str | None,
                timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Send one message straight to the broker; returns its ``send_result`` frame.

    Raises:
        BrokerUnreachable, BrokerIncompatible, UnknownDestination, InvalidRequest,
        PayloadTooLarge, or the broker's refusal of the hello as its typed error.
    """
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI  # noqa: PLC0415
    from websockets.sync.client import connect  # noqa: PLC0415

    try:
        target = parse_to(to)
    except DestinationError as exc:
        raise InvalidRequest(f"'to': {exc}") from None
    failures = []
    for url in mesh.urls:
        try:
            with connect(url, open_timeout=timeout_s, close_timeout=2,
                         max_size=2 * 1024 * 1024) as ws:
                session = _Session(ws, timeout_s)
                inline = session.hello(mesh)
                dest = target if isinstance(target, Destination) else session.resolve(target)
                prepared = prepare(mesh, dest, message, priority=priority, reply_to=reply_to,
                                   meta=meta, inline_limit=inline)
                return session.request(wire_frame(client_message_id, prepared.frozen))
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            failures.append(f"{url}: {exc}")  # a retry elsewhere is safe: same id
    raise BrokerUnreachable("no broker answered: " + "; ".join(failures))


class _Session:
    def __init__(self, ws: Any, timeout_s: float) -> None:
        self._ws = ws
        self._timeout = timeout_s
        self._n = 0

    def _recv(self) -> dict[str, Any]:
        return dict(json.loads(self._ws.recv(timeout=self._timeout)))

    def hello(self, mesh: MeshConfig) -> int | None:
        """Say hello; returns the negotiated ``inline_bytes`` (or None)."""
        now = now_ms()
        nonce = secrets.token_hex(16)
        key = MemberKey.from_secret(mesh.secret_key)
        self._ws.send(json.dumps({
            "type": "hello", "mesh_id": mesh.mesh_id, "member_id": mesh.member_id,
            "pubkey": mesh.pubkey, "timestamp_ms": now, "nonce": nonce,
            "signature": key.sign(hello_statement(mesh.mesh_id, mesh.member_id, mesh.pubkey,
                                                  now, nonce)),
            "client": "claudemesh-cli"}))
        ack = self._recv()
        if ack.get("type") != "hello_ack":
            cls = error_classes().get(str(ack.get("code")), RemoteError)
            raise cls(f"the broker refused the hello: {ack.get('detail')}")
        result = validate_features(ack.get("features"))
        if isinstance(result, NegotiationFailure):
            self._ws.close(4010, str(result.kind))
            raise BrokerIncompatible(f"{result.kind}: {result.feature}: {result.detail}",
                                     close_reason=result.close_reason())
        return result.inline_bytes

    def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self._n += 1
        req_id = f"cli-{self._n}"
        self._ws.send(json.dumps({**frame, "req_id": req_id}, ensure_ascii=False))
        deadline = time.monotonic() + self._timeout
        while True:
            answer = self._recv()
            if answer.get("req_id") == req_id:
                return answer
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from the broker")

    def resolve(self, name: PeerName) -> Destination:
        answer = self.request({"type": "list_peers"})
        matches = [p["pubkey"] for p in answer.get("peers", [])
                   if isinstance(p, dict) and p.get("display_name") == name.name]
        if len(matches) != 1:
            raise UnknownDestination(
                f"{len(matches) or 'no'} member(s) of this mesh are called {name.name!r}",
                to=name.name)
        return Destination(DestinationKind.DM, str(matches[0]))
