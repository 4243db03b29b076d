"""`claudemesh inbox | peers | profile | events` against live daemons and a broker."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import DaemonHandle, cli
from meshkit import Mesh2, SseReader, inbox, wait_for


def test_inbox_peers_and_profile(shared_pair: Mesh2) -> None:
    shared_pair.alice.send({"to": "bob", "message": "line one\nline two",
                            "client_message_id": "c-1"})
    wait_for(lambda: inbox(shared_pair.bob))
    listed = json.loads(cli(shared_pair.bob.env, "inbox", "--json").stdout)
    assert [i["client_message_id"] for i in listed["items"]] == ["c-1"]
    text = cli(shared_pair.bob.env, "inbox").stdout
    assert "alice" in text and "line one line two" in text and "(dm)" in text
    filtered = json.loads(cli(shared_pair.bob.env, "inbox", "--from", "carol", "--json").stdout)
    assert filtered["items"] == []
    bad = cli(shared_pair.bob.env, "inbox", "--since", "yesterday")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr
    set_profile = cli(shared_pair.alice.env, "profile", "--summary", "on call",
                      "--status", "working",
                      "--capability", "deploy", "--json")
    assert set_profile.returncode == 0, set_profile.stderr
    assert json.loads(set_profile.stdout)["applied"] == ["capabilities", "status", "summary"]
    peers = json.loads(cli(shared_pair.bob.env, "peers", "--json").stdout)["peers"]
    alice = next(p for p in peers if p["display_name"] == "alice")
    assert (alice["summary"], alice["status"], alice["capabilities"]) == (
        "on call", "working", ["deploy"])
    assert "on call" in cli(shared_pair.bob.env, "peers").stdout
    nothing = cli(shared_pair.alice.env, "profile")
    assert nothing.returncode == 2


def test_events_streams_ndjson_and_resumes(shared_pair: Mesh2) -> None:
    before = inbox(shared_pair.bob)
    last = str(before[-1]["seq"]) if before else "0"
    proc = subprocess.Popen([sys.executable, "-m", "claudemesh", "events", "--last-event-id",
                             last], env=shared_pair.bob.env, stdout=subprocess.PIPE, text=True)
    try:
        shared_pair.alice.send({"to": "bob", "message": "streamed", "client_message_id": "c-ev"})
        assert proc.stdout is not None
        while True:
            event = json.loads(proc.stdout.readline())
            if event["event"] == "message":
                break
        assert event["data"]["client_message_id"] == "c-ev"
        assert event["id"] == str(event["data"]["seq"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_more_than_32_event_streams_get_429(shared_pair: Mesh2) -> None:
    readers = [SseReader(shared_pair.alice).start() for _ in range(32)]
    try:
        wait_for(lambda: shared_pair.alice.uds().call("GET", "/v1/health")["event_streams"] == 32)
        refused = shared_pair.alice.uds().request("GET", "/v1/events")
        assert (refused.status, refused.body["error"]) == (429, "too_many_streams")
        assert shared_pair.alice.uds().request("GET", "/v1/health").status == 200
    finally:
        for reader in readers:
            reader.close()
    wait_for(lambda: shared_pair.alice.uds().call("GET", "/v1/health")["event_streams"] == 0)


def test_a_stopping_daemon_ends_its_event_streams(shared_pair: Mesh2) -> None:
    other: DaemonHandle = shared_pair.bob
    reader = SseReader(other).start()
    try:
        other.stop()
        assert reader._thread is not None
        reader._thread.join(timeout=10)
        assert not reader._thread.is_alive()
    finally:
        reader.close()
        other.start()
