"""Frames the broker sends back to a client (docs/protocol.md), read into typed models.

The other direction from :mod:`.frames` (what a client sends, which the broker refuses
strictly): here the reader is the client, so unknown fields are ignored (a newer broker
may add some) but every field we read is checked for its type. :func:`parse_reply` is the
one entry point; it raises :class:`~claudemesh.protocol.frames.FrameError`
``invalid_frame`` for a frame it cannot read.

One meaning for ``code``: on the wire a ``send_result`` carries its HTTP-like status in
``code`` and its error code in ``error``, while an ``error`` frame carries its error code
in ``code``. In these models ``code`` is always the string error code (None on success)
and the number is ``status``; :class:`SendResult` maps the wire names once, here.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from claudemesh.protocol.frames import FrameError

__all__ = [
    "BrokerReply",
    "ErrorReply",
    "EventReply",
    "FeatureNegotiationResponse",
    "HelloAck",
    "JoinResult",
    "Refusal",
    "Result",
    "SendResult",
    "parse_reply",
]

# The envelope of a refusal, kept out of ``fields`` (the structured extras of an error).
_ENVELOPE: Final = frozenset({"type", "req_id", "code", "error", "detail",
                              "client_message_id"})


class _Reply(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    @property
    def data(self) -> dict[str, Any]:
        """The fields this model does not name (a ``result``'s payload, an error's
        extras such as ``retry_after_ms`` or ``limit``)."""
        return dict(self.model_extra or {})


class Refusal(_Reply):
    """What an ``error`` frame and a refused ``send_result`` share: :func:`claudemesh.errors.
    error_from_frame` rebuilds the typed error from ``code``, ``detail`` and ``fields``."""

    code: str | None = None
    detail: str | None = None

    @property
    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k not in _ENVELOPE}


class HelloAck(_Reply):
    type: Literal["hello_ack"]
    session_id: str | None = None
    mesh_id: str | None = None
    mesh_name: str | None = None
    member_id: str | None = None
    display_name: str | None = None
    features: Any = None  # checked by protocol.features.validate_features, which says why
    server: dict[str, Any] = Field(default_factory=dict)

    @property
    def server_version(self) -> str | None:
        version = self.server.get("version")
        return str(version) if version else None

    @property
    def server_time_ms(self) -> int | None:
        """The broker's clock when it answered (brokers from issue 14 on send it)."""
        value = self.server.get("time_ms")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class SendResult(Refusal):
    """The one answer to every ``send`` (201 accepted, 200 duplicate, else refused)."""

    type: Literal["send_result"]
    req_id: str | None = None
    client_message_id: str | None = None
    status: int = Field(alias="code")
    code: str | None = Field(default=None, alias="error")
    broker_message_id: str | None = None
    history_id: str | None = None
    duplicate: bool | None = None
    history_available: bool | None = None

    @property
    def accepted(self) -> bool:
        return self.status in (200, 201) and self.broker_message_id is not None


class ErrorReply(Refusal):
    type: Literal["error"]
    req_id: str | None = None
    code: str | None = None


class Result(_Reply):
    """The answer to a request other than ``send``; its payload is :attr:`data`."""

    type: Literal["result"]
    req_id: str


class EventReply(_Reply):
    """A presence announcement; ``peer`` is the broker's peer view (docs/protocol.md)."""

    type: Literal["event"]
    event: str
    mesh_id: str | None = None
    peer: dict[str, Any] | None = None


class JoinResult(_Reply):
    type: Literal["join_result"]
    mesh_id: str
    mesh_name: str
    member_id: str
    display_name: str
    pubkey: str


class FeatureNegotiationResponse(_Reply):
    type: Literal["feature_negotiation_response"]
    req_id: str | None = None
    supported: Any = None
    missing_required: list[str] = Field(default_factory=list)


BrokerReply = (HelloAck | SendResult | ErrorReply | Result | EventReply | JoinResult
               | FeatureNegotiationResponse)

_ADAPTER: Final[TypeAdapter[BrokerReply]] = TypeAdapter(
    Annotated[BrokerReply, Field(discriminator="type")])


def parse_reply(doc: dict[str, Any]) -> BrokerReply:
    """Read one decoded broker frame (not a ``push``: see :func:`.frames.parse_push`).

    Raises:
        FrameError: ``invalid_frame``, for an unknown ``type`` or a field of the wrong type.
    """
    try:
        return _ADAPTER.validate_python(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "type"
        raise FrameError("invalid_frame", f"{where}: {first['msg']}", doc) from None
