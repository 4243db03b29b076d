"""The client side of the hello, as pure functions (docs/protocol.md "Hello").

Every client of the broker says hello the same way: the daemon's link, ``send
--no-daemon``, the tests' raw clients and the benchmarks' all build the frame with
:func:`hello_frame` and read the answer with :func:`read_hello_answer`, so the signed
statement, the field set and the feature check live in one place. Signing is passed in
(``sign``), which keeps the key, and the crypto library, out of the pure core.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from claudemesh.protocol.features import (
    FRAME_BATCH,
    Negotiated,
    NegotiationFailure,
    validate_features,
)
from claudemesh.protocol.frames import FrameError
from claudemesh.protocol.replies import ErrorReply, HelloAck, parse_reply
from claudemesh.protocol.strictjson import JsonError, loads_object

__all__ = [
    "Accepted",
    "HelloOutcome",
    "Incompatible",
    "Refused",
    "Signer",
    "batch_request",
    "hello_frame",
    "hello_statement",
    "read_hello_answer",
]

Signer = Callable[[str], str]  # statement -> hex signature (crypto.MemberKey.sign)

NONCE_BYTES: Final = 16


def hello_statement(mesh_id: str, member_id: str, pubkey: str, timestamp_ms: int,
                    nonce: str) -> str:
    """What the hello signs: binds the member, the moment and a one-time nonce."""
    return f"claudemesh/hello/v1|{mesh_id}|{member_id}|{pubkey}|{timestamp_ms}|{nonce}"


def hello_frame(*, mesh_id: str, member_id: str, pubkey: str, sign: Signer,
                timestamp_ms: int, nonce: str | None = None,
                client: str | None = None) -> dict[str, Any]:
    """The signed ``hello``; a fresh random nonce unless one is given (tests replay one)."""
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES).hex()
    frame: dict[str, Any] = {
        "type": "hello", "mesh_id": mesh_id, "member_id": member_id, "pubkey": pubkey,
        "timestamp_ms": timestamp_ms, "nonce": nonce,
        "signature": sign(hello_statement(mesh_id, member_id, pubkey, timestamp_ms, nonce))}
    if client is not None:
        frame["client"] = client
    return frame


def batch_request() -> dict[str, Any]:
    """Asks for ``frame_batch``, which tells the broker this client reads batches."""
    return {"type": "feature_negotiation_request", "require": [], "optional": [FRAME_BATCH]}


@dataclass(frozen=True, slots=True)
class Accepted:
    ack: HelloAck
    negotiated: Negotiated


@dataclass(frozen=True, slots=True)
class Refused:
    """The broker said no (an ``error`` frame); it closes the connection next."""

    error: ErrorReply


@dataclass(frozen=True, slots=True)
class Incompatible:
    """The broker said yes but its features fail validation: the client refuses (4010)."""

    ack: HelloAck
    failure: NegotiationFailure


HelloOutcome = Accepted | Refused | Incompatible


def read_hello_answer(raw: str | bytes) -> HelloOutcome:
    """Read the first frame after a hello and check the broker's feature map.

    Raises:
        FrameError: not one strict JSON object, or neither ``hello_ack`` nor ``error``.
    """
    try:
        doc = loads_object(raw)
    except JsonError as exc:
        raise FrameError("malformed_frame", str(exc)) from None
    reply = parse_reply(doc)
    if isinstance(reply, ErrorReply):
        return Refused(reply)
    if not isinstance(reply, HelloAck):
        raise FrameError("invalid_frame", f"unexpected answer to hello: {reply.type}", doc)
    checked = validate_features(reply.features)
    if isinstance(checked, NegotiationFailure):
        return Incompatible(reply, checked)
    return Accepted(reply, checked)
