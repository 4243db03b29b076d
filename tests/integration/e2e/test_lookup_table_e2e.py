"""All 11 rows of the R-ACC-2 table through HTTP, each state reached by a real flow:
pending (broker down), inflight (a stalled broker), done (delivered), dead (the broker
refused it), aborted (requeued)."""

from __future__ import annotations

from meshkit import Mesh2, freeze, inbox, link_state, mesh2, thaw, wait_for


def body(to: str, message: str, cmid: str) -> dict[str, str]:
    return {"to": to, "message": message, "client_message_id": cmid}


def status_of(pair: Mesh2, cmid: str) -> str:
    rows = [r for r in pair.alice.outbox() if r["client_message_id"] == cmid]
    return str(rows[0]["status"]) if rows else ""


def test_no_row_pending_and_done(pair: Mesh2) -> None:
    # no row -> 202 queued; delivered -> done
    first = pair.alice.send(body("bob", "hello", "t-done"))
    assert (first.status, first.body["status"]) == (202, "queued")
    wait_for(lambda: status_of(pair, "t-done") == "done")
    done_match = pair.alice.send(body("bob", "hello", "t-done"))
    assert (done_match.status, done_match.body["duplicate"]) == (200, True)
    [row] = [r for r in pair.alice.outbox() if r["client_message_id"] == "t-done"]
    assert (done_match.body["broker_message_id"], done_match.body["history_id"]) == (
        row["broker_message_id"], row["history_id"])
    done_mismatch = pair.alice.send(body("bob", "HELLO", "t-done"))
    assert (done_mismatch.status, done_mismatch.body["conflict"]) == (
        409, "outbox_done_fingerprint_mismatch")
    assert done_mismatch.body["broker_message_id"] == row["broker_message_id"]
    # pending: the broker is down, so the row waits
    pair.broker.stop()
    wait_for(lambda: link_state(pair.alice) != "open")
    assert pair.alice.send(body("bob", "later", "t-pend")).status == 202
    pending_match = pair.alice.send(body("bob", "later", "t-pend"))
    assert (pending_match.status, pending_match.body["status"]) == (202, "queued")
    pending_mismatch = pair.alice.send(body("bob", "LATER", "t-pend"))
    assert (pending_mismatch.status, pending_mismatch.body["conflict"]) == (
        409, "outbox_pending_fingerprint_mismatch")
    assert status_of(pair, "t-pend") == "pending"


def test_inflight_rows_while_the_broker_is_stalled(pair: Mesh2) -> None:
    assert pair.broker.proc is not None
    freeze(pair.broker.proc.pid)
    try:
        assert pair.alice.send(body("bob", "stuck", "t-infl")).status == 202
        wait_for(lambda: status_of(pair, "t-infl") == "inflight")
        match = pair.alice.send(body("bob", "stuck", "t-infl"))
        assert (match.status, match.body["status"]) == (202, "inflight")
        mismatch = pair.alice.send(body("bob", "STUCK", "t-infl"))
        assert (mismatch.status, mismatch.body["conflict"]) == (
            409, "outbox_inflight_fingerprint_mismatch")
    finally:
        thaw(pair.broker.proc.pid)
    wait_for(lambda: status_of(pair, "t-infl") == "done", timeout=60)
    assert [i["client_message_id"] for i in inbox(pair.bob)] == ["t-infl"]


def test_dead_rows_after_a_broker_rejection_and_aborted_rows_after_requeue(
        pair: Mesh2) -> None:
    result = pair.broker.cli("mesh", "revoke", pair.bob_key, "--db", str(pair.broker.db))
    assert result.returncode == 0, result.stderr
    assert pair.alice.send(body(pair.bob_key, "to a revoked member", "t-dead")).status == 202
    wait_for(lambda: status_of(pair, "t-dead") == "dead")
    [row] = [r for r in pair.alice.outbox() if r["client_message_id"] == "t-dead"]
    assert row["last_error"].startswith("404 destination_not_found")
    dead_match = pair.alice.send(body(pair.bob_key, "to a revoked member", "t-dead"))
    assert (dead_match.status, dead_match.body["conflict"]) == (
        409, "outbox_dead_fingerprint_match")
    assert dead_match.body["reason"] == row["last_error"]
    dead_mismatch = pair.alice.send(body(pair.bob_key, "other", "t-dead"))
    assert (dead_mismatch.status, dead_mismatch.body["conflict"]) == (
        409, "outbox_dead_fingerprint_mismatch")
    failed = pair.alice.uds().call("GET", "/v1/outbox?status=dead")["items"]
    assert [r["client_message_id"] for r in failed] == ["t-dead"]
    requeued = pair.alice.uds().call("POST", "/v1/outbox/requeue", {"id": row["id"]})
    aborted_match = pair.alice.send(body(pair.bob_key, "to a revoked member", "t-dead"))
    assert (aborted_match.status, aborted_match.body["conflict"]) == (
        409, "outbox_aborted_fingerprint_match")
    aborted_mismatch = pair.alice.send(body(pair.bob_key, "x", "t-dead"))
    assert (aborted_mismatch.status, aborted_mismatch.body["conflict"]) == (
        409, "outbox_aborted_fingerprint_mismatch")
    # the successor carries the same routing and goes out (and is refused again)
    wait_for(lambda: status_of(pair, requeued["new_client_message_id"]) == "dead")


def test_a_body_over_the_negotiated_inline_bytes_is_refused_before_any_id_is_used() -> None:
    m = mesh2("--inline-bytes", "2048")
    try:
        wait_for(lambda: link_state(m.alice) == "open")
        big = m.alice.send(body("bob", "x" * 2040, "t-big"))
        assert (big.status, big.body["error"], big.body["limit"]) == (413, "payload_too_large",
                                                                      2048)
        assert m.alice.outbox() == []
        assert m.alice.send(body("bob", "x" * 2000, "t-big")).status == 202
    finally:
        m.cleanup()
