"""Concurrent accepts of one id, and what survives a ``kill -9`` (R-ACC-1, R-DLV-2, R-REC-1)."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from claudemesh.daemon.store.outbox import OutboxStore
from claudemesh.daemon.store.outbox_schema import OUTBOX_MIGRATIONS
from claudemesh.sdk.http import Response
from claudemesh.sqlitedb.db import open_database
from helpers import DaemonHandle, new_daemon


def fire_together(daemon: DaemonHandle, bodies: list[dict[str, Any]]) -> list[Response]:
    """Send every body at once from its own thread, released by one barrier."""
    barrier = threading.Barrier(len(bodies))

    def go(body: dict[str, Any]) -> Response:
        client = daemon.uds(timeout=30)
        barrier.wait()
        return client.request("POST", "/v1/send", body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(go, bodies))


def test_fifty_concurrent_identical_sends_make_one_row_and_all_get_202(
        daemon: DaemonHandle) -> None:
    body = {"to": "#race", "message": "same", "client_message_id": "race-1"}
    responses = fire_together(daemon, [body] * 50)
    assert [r.status for r in responses] == [202] * 50
    assert {r.body["outbox_id"] for r in responses} == {responses[0].body["outbox_id"]}
    assert daemon.db_rows() == [("race-1", "pending", 0, None)]


def test_fifty_concurrent_different_bodies_make_one_winner_and_49_conflicts(
        daemon: DaemonHandle) -> None:
    bodies = [{"to": "#race", "message": f"body {i}", "client_message_id": "race-2"}
              for i in range(50)]
    responses = fire_together(daemon, bodies)
    winners = [i for i, r in enumerate(responses) if r.status == 202]
    assert len(winners) == 1
    losers = [r for r in responses if r.status != 202]
    assert {r.status for r in losers} == {409}
    assert {r.body["conflict"] for r in losers} == {"outbox_pending_fingerprint_mismatch"}
    assert daemon.db_rows() == [("race-2", "pending", 0, None)]
    # The stored row is the winner's request: re-sending it matches, any loser's does not.
    assert daemon.send(bodies[winners[0]]).status == 202
    assert daemon.send(bodies[(winners[0] + 1) % 50]).status == 409


def test_a_row_answered_202_survives_kill_9(daemon: DaemonHandle) -> None:
    """1. send and get 202; 2. SIGKILL the daemon at once; 3. restart; 4. the row is there."""
    sent = [daemon.send({"to": "#crash", "message": f"m{i}", "client_message_id": f"c-{i}"})
            for i in range(20)]
    assert all(r.status == 202 for r in sent)
    daemon.kill9()
    daemon.start()
    assert [row[0] for row in daemon.db_rows()] == [f"c-{i}" for i in range(20)]
    again = daemon.send({"to": "#crash", "message": "m3", "client_message_id": "c-3"})
    assert again.status == 202
    assert again.body["outbox_id"] == sent[3].body["outbox_id"]


def test_kill_9_during_concurrent_sends_loses_no_answered_row() -> None:
    """Every 202 that reached a client before the kill names a row found after restart."""
    daemon = new_daemon()
    try:
        answered: list[str] = []
        stop = threading.Event()

        def sender(worker: int) -> None:
            client = daemon.uds(timeout=5)
            for i in range(10_000):
                if stop.is_set():
                    return
                cmid = f"w{worker}-{i}"
                try:
                    resp = client.request("POST", "/v1/send", {
                        "to": "#load", "message": "x", "client_message_id": cmid})
                except Exception:
                    return
                if resp.status == 202:
                    answered.append(cmid)

        threads = [threading.Thread(target=sender, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        while len(answered) < 300:
            threading.Event().wait(0.01)
        daemon.kill9()
        stop.set()
        for t in threads:
            t.join()
        daemon.start()
        stored = {row[0] for row in daemon.db_rows()}
        assert set(answered) <= stored
        assert len(answered) >= 300
    finally:
        daemon.cleanup()


def test_rows_left_inflight_are_pending_after_restart(daemon: DaemonHandle) -> None:
    """1. queue two sends; 2. stop; 3. claim one as the drain would (now inflight);
    4. start: the inflight row is pending again, the other untouched."""
    for i in range(2):
        resp = daemon.send({"to": "#r", "message": "m", "client_message_id": f"r-{i}"})
        assert resp.status == 202
    daemon.stop()
    conn = open_database(daemon.paths.outbox_db, OUTBOX_MIGRATIONS)
    with contextlib.closing(conn):
        [(claimed, _)] = OutboxStore(conn).claim_due(2**62, limit=1)
    assert claimed.client_message_id == "r-0"
    assert dict((r[0], r[1]) for r in daemon.db_rows()) == {"r-0": "inflight", "r-1": "pending"}
    info = daemon.start()
    assert info["recovered_inflight"] == 1
    rows = {r[0]: r for r in daemon.db_rows()}
    assert rows["r-0"][1:] == ("pending", 1, "daemon_restarted_while_inflight")
    assert rows["r-1"][1:] == ("pending", 0, None)
    [item] = [i for i in daemon.outbox() if i["client_message_id"] == "r-0"]
    assert item["status"] == "pending"
