from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import DaemonHandle, new_daemon


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
