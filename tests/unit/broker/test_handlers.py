"""The OPEN-state dispatch table (src/claudemesh/broker/handlers.py) is complete."""

from __future__ import annotations

import typing

from claudemesh.broker.handlers import HANDLERS
from claudemesh.broker.handshake import already_authenticated
from claudemesh.protocol.frames import ClientFrame, Hello, Join


def test_every_client_frame_type_has_a_handler() -> None:
    assert set(HANDLERS) == set(typing.get_args(ClientFrame))


def test_hello_and_join_on_an_open_connection_are_refused() -> None:
    assert HANDLERS[Hello] is already_authenticated
    assert HANDLERS[Join] is already_authenticated
