"""``join``: redeem an invite over the broker's WebSocket and return the new membership.

A short synchronous exchange: connect to the invite's ``broker_url``, send one signed
``join`` frame (proof that we hold the new key), read one answer, close.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from claudemesh.clock import now_ms
from claudemesh.crypto import MemberKey, join_statement
from claudemesh.errors import BrokerUnreachable, ClaudemeshError, RemoteError, error_from_frame
from claudemesh.protocol.invite import Invite, encode_invite
from claudemesh.protocol.strictjson import JsonError, loads_object
from claudemesh.tls import check_pin, ssl_for

if TYPE_CHECKING:
    from claudemesh.protocol.replies import JoinResult

__all__ = ["join_mesh"]

JOIN_TIMEOUT_S: Final = 10.0


def join_mesh(invite: Invite, key: MemberKey, display_name: str, *,
              timeout_s: float = JOIN_TIMEOUT_S, ca_file: str | None = None) -> JoinResult:
    """Returns the broker's ``join_result`` frame. Over ``wss://`` the broker's key must be
    the invite's pin, when it has one (checked before the join frame is sent), else the
    certificate must verify against the system's CAs or ``ca_file``.

    Raises:
        BrokerUnreachable: no broker answered at the invite's URL.
        BrokerUntrusted: a broker presented another key than the invite pins.
        InviteRejected, DisplayNameTaken, ...: the broker's refusal, as its typed error.
    """
    from websockets.exceptions import ConnectionClosed, InvalidHandshake  # noqa: PLC0415
    from websockets.sync.client import connect  # noqa: PLC0415

    timestamp = now_ms()
    frame = {"type": "join", "invite": encode_invite(invite), "pubkey": key.pubkey,
             "display_name": display_name, "timestamp_ms": timestamp,
             "signature": key.sign(join_statement(invite.mesh_id, invite.invite_id,
                                                  key.pubkey, display_name, timestamp))}
    failures = []
    for url in invite.urls:  # failover brokers share one store: any of them can answer
        try:
            with connect(url, open_timeout=timeout_s, close_timeout=2,
                         ssl=ssl_for(url, pin=invite.pin, ca_file=ca_file)) as ws:
                check_pin(ws.socket, invite.pin, url)
                ws.send(json.dumps(frame))
                raw = ws.recv(timeout=timeout_s)
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            failures.append(f"{url}: {exc}")
            continue
        outcome = _read(raw)
        if isinstance(outcome, ClaudemeshError):
            raise outcome
        return outcome
    raise BrokerUnreachable("no broker answered: " + "; ".join(failures))


def _read(raw: str | bytes) -> JoinResult | ClaudemeshError:
    """The ``join_result``, or the broker's refusal as its typed error."""
    from claudemesh.protocol.frames import FrameError  # noqa: PLC0415 - pydantic, lazily
    from claudemesh.protocol.replies import ErrorReply, JoinResult, parse_reply  # noqa: PLC0415

    try:
        reply = parse_reply(loads_object(raw))
    except (JsonError, FrameError):
        return RemoteError(f"unexpected answer from the broker: {str(raw)[:200]}")
    if isinstance(reply, JoinResult):
        return reply
    if isinstance(reply, ErrorReply):
        return error_from_frame(reply)
    return RemoteError(f"unexpected answer from the broker: {str(raw)[:200]}")
