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
import time
from typing import Any, Final

from claudemesh.clock import now_ms
from claudemesh.config import MeshConfig
from claudemesh.crypto import MemberKey
from claudemesh.errors import (
    BrokerIncompatible,
    BrokerUnreachable,
    InvalidRequest,
    RemoteError,
    UnknownDestination,
    error_from_frame,
)
from claudemesh.protocol.close import CloseCode
from claudemesh.protocol.destination import (
    Destination,
    DestinationError,
    DestinationKind,
    PeerName,
    parse_to,
)
from claudemesh.protocol.destination import anycast as anycast_of
from claudemesh.protocol.frames import FrameError
from claudemesh.protocol.handshake import Incompatible, Refused, hello_frame, read_hello_answer
from claudemesh.protocol.replies import BrokerReply, ErrorReply, Result, SendResult, parse_reply
from claudemesh.protocol.strictjson import JsonError, loads_object
from claudemesh.sending import prepare, wire_frame
from claudemesh.tls import check_pin, ssl_for

__all__ = ["send_direct"]

TIMEOUT_S: Final = 10.0


def send_direct(mesh: MeshConfig, to: str, message: str, *, client_message_id: str,
                priority: str, meta: dict[str, Any] | None, reply_to: str | None,
                anycast: bool = False, timeout_s: float = TIMEOUT_S) -> SendResult:
    """Send one message straight to the broker; returns its ``send_result``.

    Raises:
        BrokerUnreachable, BrokerIncompatible, BrokerUntrusted (not the pinned TLS key:
        nothing was sent), UnknownDestination, InvalidRequest, PayloadTooLarge, or the
        broker's refusal of the hello as its typed error.
    """
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI  # noqa: PLC0415
    from websockets.sync.client import connect  # noqa: PLC0415

    try:
        target = parse_to(to)
        if anycast:
            target = anycast_of(target)
    except DestinationError as exc:
        raise InvalidRequest(f"'to': {exc}") from None
    failures = []
    for url in mesh.urls:
        try:
            with connect(url, open_timeout=timeout_s, close_timeout=2,
                         max_size=2 * 1024 * 1024,
                         ssl=ssl_for(url, pin=mesh.pin, ca_file=mesh.ca_file)) as ws:
                check_pin(ws.socket, mesh.pin, url)
                session = _Session(ws, timeout_s)
                inline = session.hello(mesh)
                dest = target if isinstance(target, Destination) else session.resolve(target)
                prepared = prepare(mesh, dest, message, priority=priority, reply_to=reply_to,
                                   meta=meta, inline_limit=inline)
                return session.send(wire_frame(client_message_id, prepared.frozen))
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed,
                JsonError) as exc:
            failures.append(f"{url}: {exc}")  # a retry elsewhere is safe: same id
    raise BrokerUnreachable("no broker answered: " + "; ".join(failures))


class _Session:
    def __init__(self, ws: Any, timeout_s: float) -> None:
        self._ws = ws
        self._timeout = timeout_s
        self._n = 0

    def hello(self, mesh: MeshConfig) -> int | None:
        """Say hello; returns the negotiated ``inline_bytes`` (or None)."""
        key = MemberKey.from_secret(mesh.secret_key)
        self._ws.send(json.dumps(hello_frame(
            mesh_id=mesh.mesh_id, member_id=mesh.member_id, pubkey=mesh.pubkey,
            sign=key.sign, timestamp_ms=now_ms(), client="claudemesh-cli")))
        try:
            outcome = read_hello_answer(self._ws.recv(timeout=self._timeout))
        except FrameError as exc:
            raise RemoteError(f"the broker answered the hello with {exc.detail}") from None
        if isinstance(outcome, Refused):
            raise error_from_frame(outcome.error, "the broker refused the hello")
        if isinstance(outcome, Incompatible):
            failure = outcome.failure
            self._ws.close(CloseCode.FEATURE_UNAVAILABLE, str(failure.kind))
            raise BrokerIncompatible(f"{failure.kind}: {failure.feature}: {failure.detail}",
                                     close_reason=failure.close_reason())
        return outcome.negotiated.inline_bytes

    def request(self, frame: dict[str, Any]) -> BrokerReply:
        """Send a frame with a ``req_id``; its answer, skipping pushes and events meanwhile."""
        self._n += 1
        req_id = f"cli-{self._n}"
        self._ws.send(json.dumps({**frame, "req_id": req_id}, ensure_ascii=False))
        deadline = time.monotonic() + self._timeout
        while True:
            doc = loads_object(self._ws.recv(timeout=self._timeout))
            if doc.get("req_id") == req_id:
                return parse_reply(doc)
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from the broker")

    def send(self, frame: dict[str, Any]) -> SendResult:
        reply = self.request(frame)
        if isinstance(reply, SendResult):
            return reply
        if isinstance(reply, ErrorReply):
            raise error_from_frame(reply)
        raise RemoteError(f"unexpected answer to send: {reply.type}")

    def resolve(self, name: PeerName) -> Destination:
        reply = self.request({"type": "list_peers"})
        if isinstance(reply, ErrorReply):
            raise error_from_frame(reply)
        peers = reply.data.get("peers") if isinstance(reply, Result) else None
        matches = [p["pubkey"] for p in peers or []
                   if isinstance(p, dict) and p.get("display_name") == name.name]
        if len(matches) != 1:
            raise UnknownDestination(
                f"{len(matches) or 'no'} member(s) of this mesh are called {name.name!r}",
                to=name.name)
        return Destination(DestinationKind.DM, str(matches[0]))
