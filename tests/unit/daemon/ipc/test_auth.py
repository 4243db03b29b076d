from __future__ import annotations

import pytest

from claudemesh.daemon.ipc.auth import bearer_matches, host_allowed


@pytest.mark.parametrize("host", [None, "", "localhost", "LOCALHOST", "localhost:8080",
                                  "127.0.0.1", "127.0.0.1:1", "[::1]", "[::1]:65535", "::1"])
def test_loopback_hosts_are_allowed(host: str | None) -> None:
    assert host_allowed(host)


@pytest.mark.parametrize("host", ["example.com", "evil.localhost", "localhost.evil.com",
                                  "127.0.0.2", "0.0.0.0", "[::2]", "localhost:", "localhost:0",
                                  "localhost:65536", "localhost:abc", "[::1", "::1:80",
                                  "127.0.0.1:80:80", "user@localhost", "localhost/x"])
def test_other_hosts_are_refused(host: str) -> None:
    assert not host_allowed(host)


TOKEN = b"A" * 43


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer " + "A" * 43, True),
    ("bearer " + "A" * 43, True),
    ("Bearer " + "A" * 42, False),
    ("Bearer " + "A" * 43 + "x", False),
    ("Basic " + "A" * 43, False),
    ("A" * 43, False),
    ("Bearer ", False),
    (None, False),
    ("", False),
    ("Bearer " + "é" * 43, False),
])
def test_bearer_matches(header: str | None, ok: bool) -> None:
    assert bearer_matches(header, TOKEN) is ok
