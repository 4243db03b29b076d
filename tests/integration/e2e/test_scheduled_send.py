"""Scheduled sends (issue 15 item 6) on a real broker and real daemons: a DM with a
``deliver_at`` waits in alice's outbox, survives ``kill -9``, and lands in bob's inbox
once, at (never before) its time; an abort before then means it never lands.

Absence is proved with a sentinel: a plain DM sent after the cancelled row's time is
claimed no earlier than the cancelled row would have been (claims go by due time), so
once the sentinel is in bob's inbox the cancelled one would be there too.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from claudemesh.clock import iso_ms, now_ms
from helpers import DaemonHandle, cli
from meshkit import Mesh2, inbox, wait_for


def at_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def received(bob: DaemonHandle, cmid: str) -> list[dict[str, Any]]:
    return [i for i in inbox(bob) if i["client_message_id"] == cmid]


def watch_until(bob: DaemonHandle, cmid: str, until_ms: int) -> None:
    """Until ``until_ms`` (less a margin for the drain's own timer), bob has nothing."""
    while now_ms() < until_ms - 150:
        assert received(bob, cmid) == [], "delivered before its deliver_at"
        time.sleep(0.1)


def lands_once_at(pair: Mesh2, cmid: str, due_ms: int) -> dict[str, Any]:
    [item] = wait_for(lambda: received(pair.bob, cmid), timeout=20)
    assert at_ms(item["received_at"]) >= due_ms, (item["received_at"], iso_ms(due_ms))
    wait_for(lambda: one_row(pair.alice, cmid)["status"] == "done")
    row = one_row(pair.alice, cmid)
    assert row["attempts"] == 1 and at_ms(row["deliver_at"]) == due_ms
    return item


def one_row(daemon: DaemonHandle, cmid: str) -> dict[str, Any]:
    [row] = daemon.uds().call("GET", f"/v1/outbox?client_message_id={cmid}")["items"]
    return dict(row)


def sentinel(pair: Mesh2, cmid: str) -> None:
    assert pair.alice.send({"to": "bob", "message": "sentinel",
                            "client_message_id": cmid}).status == 202
    wait_for(lambda: received(pair.bob, cmid), timeout=20)


def test_a_scheduled_dm_waits_lands_once_at_its_time_and_retries_answer_the_row(
        pair: Mesh2) -> None:
    due = now_ms() + 2500
    body = {"to": "bob", "message": "later", "client_message_id": "sch-1",
            "deliver_at": iso_ms(due)}
    first = pair.alice.send(body)
    assert (first.status, first.body["status"], first.body["deliver_at"]) == (
        202, "scheduled", iso_ms(due))
    [row] = pair.alice.outbox("scheduled")
    assert (row["client_message_id"], row["deliver_at"], row["next_attempt_at"]) == (
        "sch-1", iso_ms(due), iso_ms(due))
    health = pair.alice.uds().call("GET", "/v1/health")
    assert (health["scheduled"], health["queue_depth"]) == (1, 0)
    assert health["meshes"][0]["scheduled"] == 1
    state = pair.alice.uds().call("GET", "/v1/messages/sch-1")["state"]
    assert state == "scheduled"
    # The same id again: the same row, whatever deliver_at the retry carries.
    for retry in (body, {**body, "deliver_at": iso_ms(due + 60_000)},
                  {k: v for k, v in body.items() if k != "deliver_at"}):
        again = pair.alice.send(retry)
        assert (again.status, again.body) == (202, first.body)
    clash = pair.alice.send({**body, "message": "other"})
    assert (clash.status, clash.body["conflict"]) == (
        409, "outbox_scheduled_fingerprint_mismatch")

    watch_until(pair.bob, "sch-1", due)
    item = lands_once_at(pair, "sch-1", due)
    assert item["body"] == "later"
    lateness_ms = at_ms(item["received_at"]) - due
    # Its own timer, not the once-a-minute re-read (measured: 10-40 ms; slack for load).
    assert lateness_ms < 5000, f"the drain's timer fired {lateness_ms} ms late"
    sentinel(pair, "sch-1-after")
    assert len(received(pair.bob, "sch-1")) == 1
    dup = pair.alice.send(body)
    assert (dup.status, dup.body["duplicate"]) == (200, True)


def test_a_scheduled_dm_survives_kill_9_and_lands_once_at_not_before_its_time(
        pair: Mesh2) -> None:
    due = now_ms() + 10_000  # room for a kill and a restart on a loaded machine
    assert pair.alice.send({"to": "bob", "message": "after a crash",
                            "client_message_id": "sch-k9",
                            "deliver_at": iso_ms(due)}).body["status"] == "scheduled"
    pair.alice.kill9()
    assert pair.alice.db_rows() == [("sch-k9", "scheduled", 0, None)]
    pair.alice.start()
    assert now_ms() < due - 500, "the restart took too long for this test to mean anything"
    row = one_row(pair.alice, "sch-k9")
    assert (row["status"], row["last_error"], row["deliver_at"]) == (
        "scheduled", None, iso_ms(due))
    watch_until(pair.bob, "sch-k9", due)
    lands_once_at(pair, "sch-k9", due)
    sentinel(pair, "sch-k9-after")
    assert len(received(pair.bob, "sch-k9")) == 1


def test_a_row_due_while_the_daemon_was_down_goes_out_once_at_the_next_start(
        pair: Mesh2) -> None:
    due = now_ms() + 4000
    pair.alice.send({"to": "bob", "message": "overdue", "client_message_id": "sch-down",
                     "deliver_at": iso_ms(due)})
    pair.alice.kill9()
    assert now_ms() < due, "killed too late for this test to mean anything"
    time.sleep(max(0.0, (due - now_ms()) / 1000) + 0.3)  # the wall clock passes its time
    assert received(pair.bob, "sch-down") == []
    pair.alice.start()
    lands_once_at(pair, "sch-down", due)
    sentinel(pair, "sch-down-after")
    assert len(received(pair.bob, "sch-down")) == 1


def test_an_abort_before_the_time_means_it_never_lands_and_requeue_reschedules(
        pair: Mesh2) -> None:
    due = now_ms() + 5000
    keep = pair.alice.send({"to": "bob", "message": "moved", "client_message_id": "sch-mv",
                            "deliver_at": iso_ms(due + 60_000)}).body
    cancel = pair.alice.send({"to": "bob", "message": "cancelled",
                              "client_message_id": "sch-x", "deliver_at": iso_ms(due)}).body
    api = pair.alice.uds()
    aborted = api.call("POST", "/v1/outbox/abort", {"id": cancel["outbox_id"]})
    assert aborted == {"aborted_row_id": cancel["outbox_id"], "previous_status": "scheduled"}
    again = api.request("POST", "/v1/outbox/abort", {"id": cancel["outbox_id"]})
    assert (again.status, again.body["error"], again.body["status"]) == (
        409, "abort_not_allowed", "aborted")
    assert api.request("POST", "/v1/outbox/abort", {"id": "nope"}).status == 404
    assert api.request("POST", "/v1/outbox/abort", {"id": "x", "why": 1}).status == 400
    # Requeue the other one to go now, under a new id: it lands at once.
    moved = api.call("POST", "/v1/outbox/requeue", {"id": keep["outbox_id"],
                                                     "new_client_message_id": "sch-mv-2",
                                                     "deliver_at": iso_ms(now_ms())})
    assert (moved["status"], moved["deliver_at"]) == ("pending", None)
    wait_for(lambda: received(pair.bob, "sch-mv-2"), timeout=20)
    time.sleep(max(0.0, (due - now_ms()) / 1000) + 0.2)  # past the cancelled row's time
    sentinel(pair, "sch-x-after")
    assert received(pair.bob, "sch-x") == [] and received(pair.bob, "sch-mv") == []
    assert one_row(pair.alice, "sch-x")["status"] == "aborted"
    resend = pair.alice.send({"to": "bob", "message": "cancelled",
                              "client_message_id": "sch-x", "deliver_at": iso_ms(due)})
    assert (resend.status, resend.body["conflict"]) == (
        409, "outbox_aborted_fingerprint_match")


def cli_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = cli(env, *args, "--json")
    out = result.stdout.strip().splitlines()
    return result.returncode, (json.loads(out[-1]) if out else {"stderr": result.stderr})


def test_the_cli_schedules_lists_and_aborts(pair: Mesh2) -> None:
    env = pair.alice.env
    at = iso_ms(now_ms() + 600_000)
    code, later = cli_json(env, "send", "bob", "in ten minutes", "--at", at,
                           "--client-message-id", "cli-at")
    assert (code, later["status"], later["deliver_at"]) == (0, "scheduled", at)
    code, sent = cli_json(env, "send", "bob", "in a few seconds", "--in", "6s",
                          "--client-message-id", "cli-in")
    assert (code, sent["status"]) == (0, "scheduled"), sent
    due = at_ms(str(sent["deliver_at"]))
    code, listed = cli_json(env, "daemon", "outbox", "list", "--scheduled")
    assert code == 0
    assert sorted(i["client_message_id"] for i in listed["items"]) == ["cli-at", "cli-in"]
    assert {i["status"] for i in listed["items"]} == {"scheduled"}
    table = cli(env, "daemon", "outbox", "list", "--scheduled")
    assert "DELIVER_AT" in table.stdout and at in table.stdout
    code, aborted = cli_json(env, "daemon", "outbox", "abort", str(later["outbox_id"]))
    assert (code, aborted["previous_status"]) == (0, "scheduled")
    both = cli(env, "send", "bob", "x", "--in", "1m", "--at", at)
    assert both.returncode == 2 and "not both" in both.stderr
    bad = cli(env, "send", "bob", "x", "--in", "soon")
    assert bad.returncode == 2 and "--in" in bad.stderr
    direct = cli(env, "send", "bob", "x", "--in", "1m", "--no-daemon")
    assert direct.returncode == 2 and "need the daemon" in direct.stderr
    lands_once_at(pair, "cli-in", due)
    sentinel(pair, "cli-after")
    assert received(pair.bob, "cli-at") == []


def test_deliver_at_validation_over_http(daemon: DaemonHandle) -> None:
    def send(when: object, cmid: str) -> Any:
        return daemon.send({"to": "#general", "message": "m", "client_message_id": cmid,
                            "deliver_at": when})

    for when, reason in (("2026-12-03T18:00:00", "time zone"), ("soon", "ISO 8601"),
                         (iso_ms(now_ms() + 400 * 86_400_000), "366 days"),
                         (1796308800000, "string")):
        resp = send(when, "v-bad")
        assert (resp.status, resp.body["error"]) == (400, "invalid_request"), when
        assert reason in resp.body["detail"]
    assert daemon.db_rows() == []  # a refused request consumes no id
    past = send(iso_ms(now_ms() - 60_000), "v-past")
    assert (past.status, past.body["status"], "deliver_at" in past.body) == (
        202, "queued", False)
    assert daemon.db_rows() == [("v-past", "pending", 0, None)]
    bad_q = daemon.uds().request("GET", "/v1/outbox?status=later")
    assert bad_q.status == 400 and "scheduled" in bad_q.body["detail"]
