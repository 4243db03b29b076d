"""The CLI against a real daemon: text and --json output, exit codes (DESIGN §4)."""

from __future__ import annotations

import contextlib
import json
import os

import pytest

from claudemesh.daemon.store.outbox import OutboxStore
from claudemesh.daemon.store.outbox_schema import OUTBOX_MIGRATIONS
from claudemesh.sqlitedb.db import open_database
from helpers import DaemonHandle, cli, new_daemon, short_tmpdir


def as_json(result: object) -> dict[str, object]:
    out = result.stdout  # type: ignore[attr-defined]
    assert out.count("\n") == 1, out
    return dict(json.loads(out))


def test_status_reports_queue_and_meshes(daemon: DaemonHandle) -> None:
    daemon.send({"to": "#t", "message": "m"})
    result = cli(daemon.env, "daemon", "status", "--json")
    assert result.returncode == 0
    health = as_json(result)
    assert health["pid"] == daemon.pid
    assert health["queue_depth"] == 1
    [mesh] = health["meshes"]  # type: ignore[misc]
    assert mesh["slug"] == "demo"
    assert mesh["link"] in ("connecting", "backoff")  # no broker listens there
    assert mesh["connected"] is False
    assert "connect to ws://127.0.0.1:9/ws failed" in mesh["last_error"]
    assert mesh["queue_depth"] == 1
    assert mesh["member_pubkey"] == daemon.meshes[0]["pubkey"]
    text = cli(daemon.env, "daemon", "status")
    assert text.returncode == 0
    assert "mesh demo: backoff" in text.stdout or "mesh demo: connecting" in text.stdout
    assert "1 queued" in text.stdout


def test_status_and_version_without_a_daemon_exit_3() -> None:
    config_dir = short_tmpdir()
    env = {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(config_dir)}
    for command in ("status", "version"):
        result = cli(env, "daemon", command)
        assert result.returncode == 3
        assert "claudemesh daemon up" in result.stderr
        assert as_json(cli(env, "daemon", command, "--json"))["error"] == "daemon_unreachable"


def test_version_shows_cli_and_daemon(daemon: DaemonHandle) -> None:
    data = as_json(cli(daemon.env, "daemon", "version", "--json"))
    daemon_info = data["daemon"]
    assert data["cli_version"] == daemon_info["daemon_version"]  # type: ignore[index]
    assert daemon_info["ipc_api"] == "v1"  # type: ignore[index]
    assert daemon_info["schema_version"] == len(OUTBOX_MIGRATIONS)  # type: ignore[index]
    assert [m["slug"] for m in daemon_info["meshes"]] == ["demo"]  # type: ignore[index]


def test_outbox_list_filters_by_status(daemon: DaemonHandle) -> None:
    for i in range(3):
        daemon.send({"to": "#t", "message": f"m{i}", "client_message_id": f"c{i}"})
    first = daemon.outbox()[-1]
    daemon.uds().call("POST", "/v1/outbox/requeue", {"id": first["id"]})
    everything = as_json(cli(daemon.env, "daemon", "outbox", "list", "--json"))["items"]
    assert [i["client_message_id"] for i in everything][1:] == ["c2", "c1", "c0"]  # type: ignore[index]
    aborted = as_json(cli(daemon.env, "daemon", "outbox", "list", "--aborted", "--json"))
    assert [i["client_message_id"] for i in aborted["items"]] == ["c0"]  # type: ignore[attr-defined]
    failed = as_json(cli(daemon.env, "daemon", "outbox", "list", "--failed", "--json"))
    assert failed["items"] == []
    table = cli(daemon.env, "daemon", "outbox", "--pending")
    assert table.returncode == 2  # flags belong to `list`; a bare `outbox` lists everything
    bare = cli(daemon.env, "daemon", "outbox")
    assert bare.returncode == 0 and "CLIENT_MESSAGE_ID" in bare.stdout


def test_requeue_through_the_cli(daemon: DaemonHandle) -> None:
    daemon.send({"to": "#t", "message": "m", "client_message_id": "old"})
    row_id = daemon.outbox()[0]["id"]
    result = cli(daemon.env, "daemon", "outbox", "requeue", row_id, "--new-client-id", "new",
                 "--json")
    assert result.returncode == 0
    data = as_json(result)
    assert data["aborted_row_id"] == row_id
    assert data["new_client_message_id"] == "new"
    statuses = {r[0]: r[1] for r in daemon.db_rows()}
    assert statuses == {"old": "aborted", "new": "pending"}


@pytest.mark.parametrize(("args", "code", "error"), [
    (["nope"], 1, "outbox_row_not_found"),
    (["ROW", "--new-client-id", "taken"], 5, "client_message_id_in_use"),
    (["ROW", "--new-client-id", "has space"], 2, "invalid_request"),
])
def test_requeue_errors_map_to_exit_codes(daemon: DaemonHandle, args: list[str], code: int,
                                          error: str) -> None:
    daemon.send({"to": "#t", "message": "m", "client_message_id": "taken"})
    row_id = daemon.outbox()[0]["id"]
    argv = [row_id if a == "ROW" else a for a in args]
    result = cli(daemon.env, "daemon", "outbox", "requeue", *argv, "--json")
    assert result.returncode == code, result
    assert as_json(result)["error"] == error
    text = cli(daemon.env, "daemon", "outbox", "requeue", *argv)
    assert text.returncode == code
    assert text.stderr.startswith("error: ")


def test_requeue_of_a_done_row_refuses_with_the_reason(daemon: DaemonHandle) -> None:
    daemon.send({"to": "#t", "message": "m", "client_message_id": "d1"})
    daemon.stop()
    with contextlib.closing(open_database(daemon.paths.outbox_db, OUTBOX_MIGRATIONS)) as conn:
        store = OutboxStore(conn)
        [(row, _)] = store.claim_due(2**62, limit=1)
        store.mark_done(row.id, broker_message_id="bm", history_id="h", now_ms=1)
    daemon.start()
    result = cli(daemon.env, "daemon", "outbox", "requeue", row.id, "--json")
    assert result.returncode == 1
    data = as_json(result)
    assert (data["error"], data["status"]) == ("requeue_not_allowed", "done")
    dup = daemon.send({"to": "#t", "message": "m", "client_message_id": "d1"})
    assert (dup.status, dup.body["duplicate"], dup.body["broker_message_id"],
            dup.body["history_id"]) == (200, True, "bm", "h")


def test_usage_errors_exit_2() -> None:
    daemon = new_daemon(start=False)
    try:
        assert cli(daemon.env, "daemon", "frobnicate").returncode == 2
        assert cli(daemon.env, "daemon", "up", "--tcp-port", "99999").returncode == 2
    finally:
        daemon.cleanup()
