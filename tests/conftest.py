from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from brokerkit import BrokerProcess, Mesh, new_broker
from helpers import DaemonHandle, new_daemon
from meshkit import Mesh2, mesh2


@pytest.fixture
def daemon() -> Iterator[DaemonHandle]:
    """A real daemon process with one joined mesh ("demo"), stopped afterwards."""
    handle = new_daemon()
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[DaemonHandle]:
    """One daemon for a module of tests that do not depend on each other's rows."""
    handle = new_daemon()
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def broker() -> Iterator[BrokerProcess]:
    """A real broker process on a loopback port, with its own SQLite file."""
    process = new_broker()
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
def mesh(broker: BrokerProcess) -> Mesh:
    return broker.create_mesh()


@pytest.fixture(scope="module")
def shared_pair() -> Iterator[Mesh2]:
    """One pair (broker, alice, bob) for a module whose tests tell their rows apart."""
    m = mesh2()
    try:
        yield m
    finally:
        m.cleanup()


@pytest.fixture
def pair() -> Iterator[Mesh2]:
    """A real broker with one mesh, and alice's and bob's daemons joined to it."""
    m = mesh2()
    try:
        yield m
    finally:
        m.cleanup()
