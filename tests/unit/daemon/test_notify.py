"""sd_notify without libsystemd: a real datagram socket stands in for systemd."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from claudemesh.daemon.notify import (
    notification,
    notify_ready,
    notify_stopping,
    socket_address,
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to ~104 bytes; pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver(short_dir: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(short_dir / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_ready_sends_one_datagram(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert notify_ready({"NOTIFY_SOCKET": path}, status="up and running") is True
    datagram = sock.recv(4096)
    assert datagram == f"READY=1\nSTATUS=up and running\nMAINPID={os.getpid()}".encode()


def test_ready_names_another_pid_when_asked(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert notify_ready({"NOTIFY_SOCKET": path}, pid=4242)
    assert fields(sock.recv(4096))["MAINPID"] == "4242"


def test_stopping(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert notify_stopping({"NOTIFY_SOCKET": path}) is True
    assert fields(sock.recv(4096))["STOPPING"] == "1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux")
def test_abstract_namespace() -> None:
    name = f"claudemesh-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify_ready({"NOTIFY_SOCKET": "@" + name}) is True
        assert fields(sock.recv(4096))["READY"] == "1"


def test_not_under_systemd_is_a_quiet_no() -> None:
    assert notify_ready({}) is False
    assert notify_ready({"NOTIFY_SOCKET": ""}) is False
    assert notify_stopping({}) is False


def test_a_missing_socket_is_logged_not_raised(short_dir: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="claudemesh.daemon.notify"):
        assert notify_ready({"NOTIFY_SOCKET": str(short_dir / "gone")}) is False
    assert "cannot notify systemd" in caplog.text


def test_an_unusable_address_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="claudemesh.daemon.notify"):
        assert notify_ready({"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    assert "not a Unix socket address" in caplog.text


def test_addresses() -> None:
    assert socket_address("/run/user/1000/systemd/notify") == "/run/user/1000/systemd/notify"
    assert socket_address("@abstract") == "\0abstract"
    assert socket_address("@") is None
    assert socket_address("relative") is None
    assert socket_address("vsock:2:1234") is None


def test_a_newline_in_a_value_cannot_forge_a_field() -> None:
    assert notification(READY="1", STATUS="ok\nSTOPPING=1") == b"READY=1\nSTATUS=ok STOPPING=1"
