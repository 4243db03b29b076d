from __future__ import annotations

import re

import pytest

from claudemesh.protocol.ids import is_valid_client_message_id, new_ulid

CROCKFORD = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def test_ulid_shape_and_time_prefix() -> None:
    a = new_ulid(1_730_000_000_000)
    b = new_ulid(1_730_000_000_001)
    assert CROCKFORD.fullmatch(a) and CROCKFORD.fullmatch(b)
    assert a[:10] < b[:10]  # the first 10 characters encode the millisecond time
    assert new_ulid(0)[:10] == "0000000000"


def test_ulids_are_unique() -> None:
    assert len({new_ulid() for _ in range(10_000)}) == 10_000


@pytest.mark.parametrize(("value", "ok"), [
    ("k", True), ("a" * 128, True), ("01HQX-abc_~!", True),
    ("", False), ("a" * 129, False), ("has space", False), ("é", False), ("tab\t", False),
])
def test_client_message_id_shape(value: str, ok: bool) -> None:
    assert is_valid_client_message_id(value) is ok
