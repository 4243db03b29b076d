"""Phase A of an accept (R-ACC-1 step 1, R-DLV-7 phase A): parse and validate request bodies.

Everything here runs before any database work, so a request refused here consumes no
id. Bodies are read with :mod:`claudemesh.protocol.strictjson` (no duplicate keys, no
NaN), and strings holding lone surrogates are refused (they could not be hashed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from claudemesh.errors import InvalidRequest
from claudemesh.protocol.ids import is_ulid, is_valid_client_message_id
from claudemesh.protocol.strictjson import JsonError, loads_object

__all__ = [
    "AbortRequest",
    "ClientId",
    "Instant",
    "RequeueRequest",
    "SendRequest",
    "StrictModel",
    "ascii_digits",
    "deliver_at_ms",
    "instant_ms",
    "parse_json_object",
    "validate",
]

Priority = Literal["now", "next", "low"]
M = TypeVar("M", bound=BaseModel)
# How far ahead a send may be scheduled (issue 15). A year: further out is almost surely a
# typo (a wrong year), and the row would sit in every `outbox list --scheduled` meanwhile.
MAX_SCHEDULE_AHEAD_MS: Final = 366 * 86_400_000


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be one strict JSON object (a 400 otherwise)."""
    try:
        return loads_object(raw)
    except JsonError as exc:
        raise InvalidRequest(f"body is {exc}") from None


def ascii_digits(text: str) -> bool:
    """True for a non-empty run of 0-9 only: what a numeric query parameter may hold.

    ``str.isdigit`` alone also takes ``²`` (which ``int`` then refuses: a 500) and ``٣``
    (which ``int`` reads as 3): neither is a number on the wire.
    """
    return text.isascii() and text.isdigit()


def instant_ms(text: str) -> int:
    """An ISO 8601 time with a zone (``2026-12-03T18:00:00Z``, ``…+01:00``) as epoch ms.

    Raises:
        ValueError: not ISO 8601, or no zone (a local time would depend on the daemon's TZ).
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 time, e.g. 2026-12-03T18:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("needs a time zone (e.g. a trailing Z)")
    return int(moment.timestamp() * 1000)


def _printable(value: str) -> str:
    if not is_valid_client_message_id(value):
        raise ValueError("must be 1-128 printable ASCII characters without spaces")
    return value


def _an_instant(value: str) -> str:
    instant_ms(value)
    return value


# Field types shared by the request bodies (their checks travel with them).
ClientId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]
Instant = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_an_instant)]


def deliver_at_ms(text: str | None, now_ms: int) -> int | None:
    """A request's ``deliver_at`` as epoch ms, None when absent. A time now or past is
    kept as given: the store treats it as "send at once".

    Raises:
        InvalidRequest: malformed, or more than :data:`MAX_SCHEDULE_AHEAD_MS` ahead.
    """
    if text is None:
        return None
    try:
        when = instant_ms(text)
    except ValueError as exc:
        raise InvalidRequest(f"field 'deliver_at': {exc}") from None
    if when - now_ms > MAX_SCHEDULE_AHEAD_MS:
        raise InvalidRequest("field 'deliver_at': more than 366 days ahead; schedule a send"
                             " at most a year out", deliver_at=text)
    return when


def _utf8(value: str | None) -> str | None:
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("contains an unpaired surrogate; not valid Unicode") from exc
    return value


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SendRequest(StrictModel):
    """``POST /v1/send`` body (DESIGN §4)."""

    to: Annotated[str, Field(min_length=1, max_length=256)]
    message: Annotated[str, Field(min_length=1)]
    mesh: str | None = None
    priority: Priority = "next"  # A-14d
    client_message_id: ClientId | None = None
    meta: dict[str, Any] | None = None
    reply_to: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    session: Annotated[str, Field(min_length=1, max_length=128)] | None = None  # the sender's
    anycast: bool = False  # with an @group: one member gets it (destination_kind queue)
    deliver_at: Instant | None = None  # issue 15: hold the send until then

    @field_validator("to", "message", "mesh", "reply_to", "session")
    @classmethod
    def _valid_unicode(cls, value: str | None) -> str | None:
        return _utf8(value)

    @field_validator("message")
    @classmethod
    def _not_sealed(cls, value: str) -> str:
        if value.startswith("\x00"):
            raise ValueError("must not start with a NUL character (it marks a sealed DM)")
        return value

    @field_validator("reply_to")
    @classmethod
    def _broker_message_id(cls, value: str | None) -> str | None:
        if value is not None and not is_ulid(value):
            raise ValueError("must be the broker_message_id of the message replied to"
                             " (a 26-character upper-case ULID, e.g. 01JD3Y2M8Q6V1T0ZK5B7X9C4RW)")
        return value


class AbortRequest(StrictModel):
    """``POST /v1/outbox/abort`` body."""

    id: Annotated[str, Field(min_length=1, max_length=128)]


class RequeueRequest(StrictModel):
    """``POST /v1/outbox/requeue`` body."""

    id: Annotated[str, Field(min_length=1, max_length=128)]
    new_client_message_id: ClientId | None = None
    deliver_at: Instant | None = None  # reschedule the copy (default: the old row's time)


def validate(model: type[M], doc: dict[str, Any]) -> M:
    """Validate ``doc`` against ``model``; the first problem becomes a 400 with its field."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc.errors()[0])) from None


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "body"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    if kind == "missing":
        return f"missing field {field!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"field {field!r}: {message}"
