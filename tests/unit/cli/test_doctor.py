"""cli/doctor.py's verdicts, one pure function each (issue 14)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from claudemesh.cli.doctor import Level, check_disk, check_link, check_mode, check_url
from claudemesh.config import MeshConfig

KEY = "ab" * 32
MESH = MeshConfig("demo", "m", "u", "alice", "ws://127.0.0.1:7900/ws", KEY, "cd" * 32 + KEY)


def test_modes_open_to_others_fail_with_the_chmod_that_fixes_them() -> None:
    bad = check_mode(Path("/x/token"), 0o644, 0o600)
    assert bad.level is Level.FAIL and bad.fix == "chmod 600 /x/token"
    assert check_mode(Path("/x/d"), 0o700, 0o700).level is Level.OK
    assert check_mode(Path("/x/d"), 0o750, 0o700).fix == "chmod 700 /x/d"
    assert check_mode(Path("/x/none"), None, 0o600).level is Level.OK


def test_plain_ws_across_the_network_is_a_warning_and_wss_names_its_trust() -> None:
    assert check_url(MESH, loopback=True).level is Level.OK
    far = check_url(replace(MESH, broker_url="ws://10.0.0.9/ws"), loopback=False)
    assert far.level is Level.WARN and "tls-cert" in str(far.fix)
    pinned = MeshConfig("demo", "m", "u", "alice", "wss://b/ws", KEY, "cd" * 32 + KEY,
                        pin="sha256/" + "A" * 43 + "=")
    assert "key pinned" in check_url(pinned, loopback=False).detail


def test_a_link_that_is_not_open_fails_with_a_fix_for_its_state() -> None:
    [ok] = check_link({"slug": "demo", "link": "open", "broker_url": "wss://b/ws"})
    assert ok.level is Level.OK
    for state, words in [("untrusted", "TLS key"), ("incompatible", "upgrade"),
                         ("backoff", "unreachable"), ("rejected", "revoke")]:
        [found] = check_link({"slug": "demo", "link": state, "last_error": "boom"})
        assert found.level is Level.FAIL and "boom" in found.detail and words in str(found.fix)


def test_clock_skew_beyond_half_the_hello_window_is_a_warning() -> None:
    _, near = check_link({"slug": "d", "link": "open", "clock_skew_ms": 1_200})
    assert near.level is Level.OK and "+1.2 s" in near.detail
    _, far = check_link({"slug": "d", "link": "open", "clock_skew_ms": -45_000})
    assert far.level is Level.WARN and "NTP" in str(far.fix)


def test_disk_space_thresholds() -> None:
    assert check_disk(Path("/d"), 5 * 1024 * 1024).level is Level.FAIL
    assert check_disk(Path("/d"), 50 * 1024 * 1024).level is Level.WARN
    assert check_disk(Path("/d"), 500 * 1024 * 1024).level is Level.OK
