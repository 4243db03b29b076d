"""What ``to`` may say, and the (kind, ref) pair the fingerprint and the broker see.

===================  ============  ===================================
``to``               kind          ref
===================  ============  ===================================
64 hex characters    ``dm``        the pubkey, lower-cased
``#name``            ``topic``     ``name``
``@name``            ``topic``     ``@name`` (a group)
``*``                ``topic``     ``*`` (everyone in the mesh)
``@name`` + anycast  ``queue``     ``@name`` (one member of the group)
anything else        (a name)      resolved to a pubkey via the peer directory
===================  ============  ===================================

The spec's ``destination_kind`` has only ``topic``, ``dm`` and ``queue`` (R-FP-2,
A-42: ``queue`` is reserved), so groups and broadcast ride on ``topic`` with a ref that a
topic name can never take: topic names must start with a letter or digit. ``queue`` is
anycast (issue 15): the broker hands the message to one member of the group, not all.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DISPLAY_NAME_RE",
    "HEX64_RE",
    "NAME_RE",
    "PUBKEY_RE",
    "Address",
    "Destination",
    "DestinationError",
    "DestinationKind",
    "PeerName",
    "anycast",
    "parse_address",
    "parse_to",
]

PUBKEY_RE: Final = re.compile(r"[0-9a-fA-F]{64}")  # any case; stored lower-case
HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")  # a pubkey as stored and sent on the wire
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A display name: 1-64 characters, no control characters, no surrounding spaces, and not
# starting with a character that marks another kind of destination.
DISPLAY_NAME_RE: Final = re.compile(r"[^\s#@*\x00-\x1f\x7f]([^\x00-\x1f\x7f]{0,62}\S)?")


class DestinationKind(enum.StrEnum):
    DM = "dm"
    TOPIC = "topic"
    QUEUE = "queue"  # anycast to one member of an @group (issue 15; A-42 reserved it)


class DestinationError(ValueError):
    """``to`` does not parse as any destination."""


@dataclass(frozen=True, slots=True)
class Destination:
    kind: DestinationKind
    ref: str

    @property
    def address(self) -> str:
        """The ``to`` spelling a user would type for this destination."""
        if self.kind is DestinationKind.TOPIC and self.ref[0] not in "@*":
            return f"#{self.ref}"
        return self.ref


@dataclass(frozen=True, slots=True)
class PeerName:
    """A display name still to be resolved to a member pubkey (A-14f)."""

    name: str


@dataclass(frozen=True, slots=True)
class Address:
    """A ``to`` with its optional session part (``bob/build``, ``<pubkey>/build``)."""

    target: Destination | PeerName
    session: str | None = None


def anycast(target: Destination | PeerName) -> Destination:
    """The anycast form of an ``@group`` destination.

    Raises:
        DestinationError: ``target`` is not a group.
    """
    if not (isinstance(target, Destination) and target.kind is DestinationKind.TOPIC
            and target.ref.startswith("@")):
        raise DestinationError("anycast takes an @group; a member, #topic or * has no"
                               " anycast form")
    return Destination(DestinationKind.QUEUE, target.ref)


def parse_address(to: str) -> Address:
    """Parse a ``to`` that may name a session: split at the last ``/`` (docs/api.md).

    A display name that itself contains ``/`` can then only be addressed by pubkey.

    Raises:
        DestinationError: either part does not parse, or a topic, group or broadcast
            was given a session part.
    """
    head, slash, session = to.rpartition("/")
    if not slash:
        return Address(parse_to(to))
    if NAME_RE.fullmatch(session) is None:
        raise DestinationError(
            "the session part after '/' must be 1-64 characters of letters, digits, '.',"
            " '_' or '-', starting with a letter or digit")
    target = parse_to(head) if head else None
    if target is None or (isinstance(target, Destination)
                          and target.kind is not DestinationKind.DM):
        raise DestinationError("only a member (a name or a pubkey) takes a /session part;"
                               " #topic, @group and * do not")
    return Address(target, session)


def parse_to(to: str) -> Destination | PeerName:
    """Parse the ``to`` of a send.

    Raises:
        DestinationError: the text is none of the forms in the module table.
    """
    if to == "*":
        return Destination(DestinationKind.TOPIC, "*")
    if to[:1] in ("#", "@"):
        name = to[1:]
        if not NAME_RE.fullmatch(name):
            raise DestinationError(
                f"{to[0]}name must be 1-64 characters of letters, digits, '.', '_' or '-',"
                " starting with a letter or digit"
            )
        return Destination(DestinationKind.TOPIC, name if to[0] == "#" else to)
    if PUBKEY_RE.fullmatch(to):
        return Destination(DestinationKind.DM, to.lower())
    if DISPLAY_NAME_RE.fullmatch(to):
        return PeerName(to)
    raise DestinationError(
        "'to' must be a 64-hex member pubkey, #topic, @group, * or a peer's display name"
    )
