"""alice -> broker -> bob, through real daemons and a real broker process (issue 4)."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from helpers import cli
from meshkit import (
    NO_RECEIPTS,
    Mesh2,
    SseReader,
    freeze,
    inbox,
    joined_daemon,
    link_state,
    mesh2,
    thaw,
    wait_for,
)


def test_a_dm_by_name_and_by_pubkey_reaches_bob_once_and_the_broker_holds_ciphertext(
        pair: Mesh2) -> None:
    events = SseReader(pair.bob).start()
    try:
        by_key = pair.alice.send({"to": pair.bob_key, "message": "secret by key",
                                  "client_message_id": "e2e-1"})
        assert by_key.status == 202
        _, first = events.next("message")
        by_name = pair.alice.send({"to": "bob", "message": "secret by name",
                                   "client_message_id": "e2e-2", "meta": {"k": 1}})
        assert by_name.status == 202, by_name.body
        ident, second = events.next("message")
    finally:
        events.close()
    assert (first["client_message_id"], first["body"], first["sender_name"]) == (
        "e2e-1", "secret by key", "alice")
    assert (second["body"], second["meta"], second["destination"]) == (
        "secret by name", {"k": 1}, pair.bob_key)
    assert ident == str(second["seq"])
    stored = inbox(pair.bob)
    assert [i["client_message_id"] for i in stored] == ["e2e-1", "e2e-2"]
    bodies = [b for (b,) in pair.broker.query("SELECT body FROM message" + NO_RECEIPTS)]
    assert len(bodies) == 2
    assert all('"kind":"crypto_box"' in b and "secret" not in b for b in bodies)
    rows = {i["client_message_id"]: i for i in pair.alice.outbox()}
    assert {r["status"] for r in rows.values()} == {"done"}
    dup = pair.alice.send({"to": "bob", "message": "secret by name",
                           "client_message_id": "e2e-2", "meta": {"k": 1}})
    assert (dup.status, dup.body["duplicate"], dup.body["broker_message_id"]) == (
        200, True, rows["e2e-2"]["broker_message_id"])
    assert dup.body["history_id"] == rows["e2e-2"]["history_id"] is not None


def test_broker_down_sends_queue_and_are_delivered_once_when_it_returns(pair: Mesh2) -> None:
    pair.broker.stop()
    wait_for(lambda: link_state(pair.alice) in ("backoff", "connecting"))
    for i in range(30):
        resp = pair.alice.send({"to": "bob", "message": f"queued {i}",
                                "client_message_id": f"q-{i}"})
        assert (resp.status, resp.body["status"]) == (202, "queued")
    health = pair.alice.uds().call("GET", "/v1/health")
    assert (health["queue_depth"], health["meshes"][0]["connected"]) == (30, False)
    pair.broker.start()  # same port, same store
    wait_for(lambda: len(inbox(pair.bob)) == 30, timeout=60)
    time.sleep(0.5)
    ids = [i["client_message_id"] for i in inbox(pair.bob)]
    assert sorted(ids) == sorted(f"q-{i}" for i in range(30))
    assert {r["status"] for r in pair.alice.outbox()} == {"done"}


def test_kill_9_alice_mid_drain_every_accepted_message_arrives_once(pair: Mesh2) -> None:
    """1. queue 300 sends with the broker stopped; 2. restart the broker and SIGKILL alice
    while she drains; 3. restart alice: every message reaches bob exactly once."""
    pair.broker.stop()
    accepted = []
    for i in range(300):
        resp = pair.alice.send({"to": pair.bob_key, "message": f"m{i}",
                                "client_message_id": f"k9-{i}"})
        assert resp.status == 202
        accepted.append(f"k9-{i}")
    pair.broker.start()
    wait_for(lambda: len(pair.broker.query("SELECT 1 FROM message" + NO_RECEIPTS)) > 20, timeout=60,
             interval=0.005)
    pair.alice.kill9()
    delivered_before = len(pair.broker.query("SELECT 1 FROM message" + NO_RECEIPTS))
    assert 0 < delivered_before < 300 or delivered_before == 300
    pair.alice.start()
    wait_for(lambda: len(inbox(pair.bob)) == 300, timeout=90)
    time.sleep(0.5)
    ids = [i["client_message_id"] for i in inbox(pair.bob)]
    assert sorted(ids) == sorted(accepted)
    assert len(pair.broker.query("SELECT 1 FROM message" + NO_RECEIPTS)) == 300


def test_kill_9_bob_between_push_and_ack_redelivers_and_stores_once(pair: Mesh2) -> None:
    """Bob is SIGKILLed at random points while a stream of messages arrives; after his
    restart every message is in his inbox exactly once (stored-but-unacked ones dedupe)."""
    sent: list[str] = []
    stop = threading.Event()

    def send_forever() -> None:
        for i in range(400):
            if stop.is_set():
                return
            cmid = f"b9-{i}"
            if pair.alice.send({"to": "bob", "message": f"n{i}",
                                "client_message_id": cmid}).status == 202:
                sent.append(cmid)

    sender = threading.Thread(target=send_forever)
    sender.start()
    rng = random.Random(7)
    for _ in range(3):
        time.sleep(rng.uniform(0.1, 0.4))
        pair.bob.kill9()
        pair.bob.start()
    sender.join()
    wait_for(lambda: len(inbox(pair.bob)) >= len(sent), timeout=90)
    time.sleep(1.0)
    ids = [i["client_message_id"] for i in inbox(pair.bob)]
    assert len(ids) == len(set(ids)) == len(sent)
    assert set(ids) == set(sent)
    [(unacked,)] = pair.broker.query("SELECT count(*) FROM delivery_queue WHERE acked_at IS NULL")
    assert unacked == 0


def test_sse_resume_with_last_event_id_loses_nothing(pair: Mesh2) -> None:
    first = SseReader(pair.bob).start()
    pair.alice.send({"to": "bob", "message": "one", "client_message_id": "s-1"})
    ident, _ = first.next("message")
    first.close()
    for i in range(2, 7):
        pair.alice.send({"to": "bob", "message": f"m{i}", "client_message_id": f"s-{i}"})
    wait_for(lambda: len(inbox(pair.bob)) == 6)
    resumed = SseReader(pair.bob, last_event_id=ident).start()
    try:
        replayed = [data["client_message_id"] for _, data in resumed.messages(5)]
        assert replayed == [f"s-{i}" for i in range(2, 7)]
        pair.alice.send({"to": "bob", "message": "live", "client_message_id": "s-7"})
        _, live = resumed.next("message")
        assert live["client_message_id"] == "s-7"
        with pytest.raises(AssertionError):
            resumed.next("message", timeout=0.5)
    finally:
        resumed.close()


def test_an_incompatible_broker_is_refused_with_4010_and_daemon_up_exits_6() -> None:
    m = mesh2("--omit-feature", "client_message_id_dedupe", start=False)
    try:
        result = cli(m.alice.env, "daemon", "up", "--json")
        assert result.returncode == 6, (result.stdout, result.stderr)
        error = json.loads(result.stdout)
        assert error["error"] == "broker_incompatible"
        assert "feature_unavailable" in error["detail"]
        assert "client_message_id_dedupe" in error["detail"]
        assert not m.alice.paths.sock.exists()
        log = (m.broker.root / "broker.log").read_text()
        assert '"close_code": 4010' in log and '"close_reason": "feature_unavailable"' in log
    finally:
        m.cleanup()


def test_peers_and_a_peer_leave_after_the_lease() -> None:
    m = mesh2("--presence-lease", "1.5")
    try:
        peers = m.alice.uds().call("GET", "/v1/peers")["peers"]
        assert {p["display_name"]: p["online"] for p in peers} == {"alice": True, "bob": True}
        events = SseReader(m.alice).start()
        try:
            m.bob.stop()
            started = time.monotonic()
            _, left = events.next("peer_leave", timeout=10)
            assert left["display_name"] == "bob" and left["pubkey"] == m.bob_key
            assert time.monotonic() - started >= 1.2
        finally:
            events.close()
        by_name = m.alice.send({"to": "bob", "message": "offline but known",
                                "client_message_id": "off-1"})
        assert by_name.status == 202
    finally:
        m.cleanup()


def test_peers_and_profile_are_503_while_the_broker_is_down(pair: Mesh2) -> None:
    assert pair.alice.uds().request("POST", "/v1/profile",
                                    {"summary": "reviewing"}).status == 200
    peers = {p["display_name"]: p for p in pair.bob.uds().call("GET", "/v1/peers")["peers"]}
    assert peers["alice"]["summary"] == "reviewing"
    pair.broker.stop()
    wait_for(lambda: link_state(pair.alice) != "open")
    down = pair.alice.uds().request("GET", "/v1/peers")
    assert (down.status, down.body["error"]) == (503, "broker_unavailable")
    profile = pair.alice.uds().request("POST", "/v1/profile", {"status": "dnd"})
    assert (profile.status, profile.body["error"]) == (503, "broker_unavailable")
    by_name = pair.alice.send({"to": "bob", "message": "the directory is on disk",
                               "client_message_id": "dir-1"})
    assert by_name.status == 202
    pair.alice.stop()
    pair.alice.start()  # restarted while the broker is down: names still resolve
    again = pair.alice.send({"to": "bob", "message": "still", "client_message_id": "dir-2"})
    assert again.status == 202


def test_a_second_mesh_joined_later_works_after_a_restart(pair: Mesh2) -> None:
    carol = joined_daemon(pair.invite, "carol")
    try:
        resp = carol.send({"to": "alice", "message": "hi", "client_message_id": "c-1"})
        assert resp.status == 202
        wait_for(lambda: any(i["client_message_id"] == "c-1" for i in inbox(pair.alice)))
    finally:
        carol.cleanup()


@pytest.mark.parametrize("flags", [(), ("--omit-feature", "frame_batch")],
                         ids=["batch_frames", "single_frames"])
def test_a_concurrent_burst_reaches_bob_once_with_and_without_frame_batch(
        flags: tuple[str, ...]) -> None:
    m = mesh2(*flags)
    try:
        features = m.alice.uds().call("GET", "/v1/health")["meshes"][0]["features"]
        assert ("frame_batch" in features) is (not flags)
        events = SseReader(m.bob).start()
        try:
            def burst(worker: int) -> list[int]:
                return [m.alice.send({"to": "bob", "message": f"{worker}-{i}",
                                      "client_message_id": f"burst-{worker}-{i}"}).status
                        for i in range(60)]

            with ThreadPoolExecutor(4) as pool:
                statuses = [s for batch in pool.map(burst, range(4)) for s in batch]
            assert statuses == [202] * 240
            got = [data["client_message_id"] for _, data in events.messages(240)]
        finally:
            events.close()
        assert sorted(got) == sorted(f"burst-{w}-{i}" for w in range(4) for i in range(60))
        for worker in range(4):  # one sender's messages keep their order (one drain)
            mine = [g for g in got if g.startswith(f"burst-{worker}-")]
            assert mine == [f"burst-{worker}-{i}" for i in range(60)]
        assert len(inbox(m.bob)) == 240
        assert {r["status"] for r in m.alice.outbox()} == {"done"}
    finally:
        m.cleanup()


def test_an_unanswered_send_times_out_goes_back_to_pending_and_lands_once() -> None:
    m = mesh2(start=False)
    try:
        m.alice.start("--request-timeout", "0.5")
        m.bob.start()
        assert m.broker.proc is not None
        freeze(m.broker.proc.pid)
        try:
            assert m.alice.send({"to": "bob", "message": "late",
                                 "client_message_id": "slow-1"}).status == 202

            def timed_out() -> dict[str, Any] | None:
                rows = m.alice.outbox()
                return rows[0] if rows and rows[0]["attempts"] >= 1 and rows[0][
                    "last_error"] == "no answer from the broker in time" else None

            row = wait_for(timed_out, timeout=10)
            assert row["status"] in ("pending", "inflight")  # a retry may be out already
        finally:
            thaw(m.broker.proc.pid)
        wait_for(lambda: [r["status"] for r in m.alice.outbox()] == ["done"], timeout=20)
        assert [i["client_message_id"] for i in inbox(m.bob)] == ["slow-1"]
        assert m.broker.query("SELECT count(*) FROM message" + NO_RECEIPTS) == [(1,)]
    finally:
        m.cleanup()
