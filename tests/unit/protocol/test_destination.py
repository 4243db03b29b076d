from __future__ import annotations

import pytest

from claudemesh.protocol.destination import (
    Address,
    Destination,
    DestinationError,
    DestinationKind,
    PeerName,
    parse_address,
    parse_to,
)

PK = "ab" * 32


@pytest.mark.parametrize(("to", "expected"), [
    (PK, Destination(DestinationKind.DM, PK)),
    (PK.upper(), Destination(DestinationKind.DM, PK)),
    ("#general", Destination(DestinationKind.TOPIC, "general")),
    ("#a.b_c-9", Destination(DestinationKind.TOPIC, "a.b_c-9")),
    ("@team", Destination(DestinationKind.TOPIC, "@team")),
    ("*", Destination(DestinationKind.TOPIC, "*")),
    ("bob", PeerName("bob")),
    ("Bob Smith", PeerName("Bob Smith")),
    ("zoë", PeerName("zoë")),
    ("ab" * 31, PeerName("ab" * 31)),  # 62 hex is a name, not a pubkey
])
def test_parse_to(to: str, expected: Destination | PeerName) -> None:
    assert parse_to(to) == expected


@pytest.mark.parametrize("to", ["#", "@", "#-x", "#has space", "#" + "a" * 65, "**", " bob",
                                "bob ", "a\x00b", "tab\there", "x" * 65, "#é"])
def test_unparseable_to_is_refused(to: str) -> None:
    with pytest.raises(DestinationError):
        parse_to(to)


@pytest.mark.parametrize("to", [PK, "#general", "@team", "*"])
def test_address_round_trips(to: str) -> None:
    parsed = parse_to(to)
    assert isinstance(parsed, Destination)
    assert parsed.address == to


@pytest.mark.parametrize(("to", "expected"), [
    ("bob", Address(PeerName("bob"))),
    ("bob/build", Address(PeerName("bob"), "build")),
    (f"{PK.upper()}/build", Address(Destination(DestinationKind.DM, PK), "build")),
    ("a/b/c", Address(PeerName("a/b"), "c")),  # split at the last slash
    ("#general", Address(Destination(DestinationKind.TOPIC, "general"))),
])
def test_parse_address(to: str, expected: Address) -> None:
    assert parse_address(to) == expected


@pytest.mark.parametrize("to", ["bob/", "/build", "#general/x", "@team/x", "*/x", "bob/-x",
                                "bob/has space", "bob/" + "s" * 65, " bob/x"])
def test_unparseable_address_is_refused(to: str) -> None:
    with pytest.raises(DestinationError):
        parse_address(to)
