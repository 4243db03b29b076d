"""`claudemesh send` routing, `claudemesh up`, metrics, logs (issue 5) on real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from helpers import cli, http_request, short_tmpdir
from meshkit import NO_RECEIPTS, Mesh2, freeze, inbox, thaw, wait_for


def send(env: dict[str, str], *args: str) -> tuple[int, dict[str, object]]:
    result = cli(env, "send", *args, "--json")
    out = result.stdout.strip().splitlines()
    return result.returncode, (json.loads(out[-1]) if out else {"stderr": result.stderr})


def test_send_through_a_running_daemon_says_delivered(pair: Mesh2) -> None:
    code, data = send(pair.alice.env, "bob", "via the daemon")
    assert code == 0, data
    assert data["status"] == "delivered" and data["broker_message_id"]
    wait_for(lambda: [i["body"] for i in inbox(pair.bob)] == ["via the daemon"])
    again_code, again = send(pair.alice.env, "bob", "via the daemon", "--client-message-id",
                             str(data["client_message_id"]))
    assert (again_code, again["status"], again["note"]) == (0, "delivered",
                                                            "already sent earlier")
    clash, error = send(pair.alice.env, "bob", "different", "--client-message-id",
                        str(data["client_message_id"]))
    assert (clash, error["error"]) == (5, "idempotency_key_reused")
    text = cli(pair.alice.env, "send", "bob", "plain text please")
    assert text.returncode == 0 and text.stdout.startswith("delivered to bob")
    piped = subprocess.run([sys.executable, "-m", "claudemesh", "send", "bob", "-"],
                           input="from stdin", env=pair.alice.env, capture_output=True,
                           text=True, check=False)
    assert piped.returncode == 0, piped.stderr
    wait_for(lambda: "from stdin" in [i["body"] for i in inbox(pair.bob)])


def test_send_with_no_daemon_running_starts_one(pair: Mesh2) -> None:
    pair.alice.stop()
    code, data = send(pair.alice.env, "bob", "auto-started")
    assert code == 0, data
    assert data["status"] in ("delivered", "queued")
    status = json.loads(cli(pair.alice.env, "daemon", "status", "--json").stdout)
    pair.alice.info = {"pid": status["pid"]}
    wait_for(lambda: "auto-started" in [i["body"] for i in inbox(pair.bob)])


def test_send_no_daemon_goes_straight_to_the_broker_with_the_same_id_rules(
        pair: Mesh2) -> None:
    refused = cli(pair.alice.env, "send", "bob", "x", "--no-daemon")
    assert refused.returncode == 2 and "daemon is running" in refused.stderr
    pair.alice.stop()
    code, data = send(pair.alice.env, "bob", "direct", "--no-daemon", "--client-message-id",
                      "direct-1")
    assert (code, data["status"]) == (0, "delivered"), data
    dup_code, dup = send(pair.alice.env, "bob", "direct", "--no-daemon",
                         "--client-message-id", "direct-1")
    assert (dup_code, dup["note"]) == (0, "already sent earlier")
    clash, error = send(pair.alice.env, "bob", "changed", "--no-daemon",
                        "--client-message-id", "direct-1")
    assert (clash, error["error"]) == (5, "idempotency_key_reused")
    wait_for(lambda: [i["client_message_id"] for i in inbox(pair.bob)] == ["direct-1"])
    bodies = [b for (b,) in pair.broker.query("SELECT body FROM message" + NO_RECEIPTS)]
    assert bodies and all("direct" not in b for b in bodies)  # encrypted on this path too


def test_a_send_whose_first_attempt_times_out_is_retried_and_lands_once(pair: Mesh2) -> None:
    freeze(pair.alice.pid)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "claudemesh", "send", "bob", "retried", "--timeout", "0.4",
             "--client-message-id", "retry-1", "--json"],
            env=pair.alice.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.7)  # the first attempt has timed out; the retry is waiting
    finally:
        thaw(pair.alice.pid)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (out, err)
    assert json.loads(out.splitlines()[-1])["client_message_id"] == "retry-1"
    rows = [r for r in pair.alice.outbox() if r["client_message_id"] == "retry-1"]
    assert len(rows) == 1
    wait_for(lambda: [i["client_message_id"] for i in inbox(pair.bob)] == ["retry-1"])
    time.sleep(0.5)
    assert [i["client_message_id"] for i in inbox(pair.bob)] == ["retry-1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_claudemesh_up_twice_from_an_empty_config_then_down() -> None:
    home = short_tmpdir("cmu")
    env = {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(home)}
    env.pop("CLAUDEMESH_DAEMON_DIR", None)
    port = str(free_port())
    try:
        first = cli(env, "up", "--port", port, "--name", "solo", "--json")
        assert first.returncode == 0, first.stderr
        data = json.loads(first.stdout)
        assert data["joined_as"] == "solo" and data["broker"]["state"].startswith("started")
        second = cli(env, "up", "--port", port, "--name", "solo", "--json")
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout)
        assert (again["broker"]["state"], again["joined_as"], again["daemon"]) == (
            "already running", None, "already running")
        meshes = json.loads((home / "config.json").read_text())["meshes"]
        assert [m["slug"] for m in meshes] == ["local"]
        health = json.loads(cli(env, "daemon", "status", "--json").stdout)
        assert health["meshes"][0]["link"] == "open"
        code, sent = send(env, "*", "hello, me")  # a broadcast to an empty mesh is fine
        assert code == 0, sent
        stopped = cli(env, "down", "--json")
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout)["broker"].startswith("stopped")
    finally:
        cli(env, "down")
        subprocess.run(["rm", "-rf", str(home)], check=False)


def test_metrics_follow_the_token_rules_and_count_real_traffic(pair: Mesh2) -> None:
    send(pair.alice.env, "bob", "counted")
    wait_for(lambda: inbox(pair.bob))
    port = pair.alice.tcp_port()
    status, _ = http_request(port, "GET", "/v1/metrics", headers={"Host": "localhost"})
    assert status == 401
    text = cli(pair.alice.env, "daemon", "metrics").stdout
    assert 'cm_daemon_connected{mesh="demo"} 1.0' in text
    assert 'cm_daemon_accept_total{mesh="demo",outcome="insert"} 1.0' in text
    assert 'cm_daemon_send_total{mesh="demo",result="delivered"} 1.0' in text
    assert 'cm_daemon_outbox_depth{mesh="demo",status="pending"} 0.0' in text
    assert 'cm_daemon_ipc_request_total{endpoint="/v1/send",status="202",transport="uds"}' in text
    bob_text = cli(pair.bob.env, "daemon", "metrics").stdout
    assert 'cm_daemon_recv_total{mesh="demo"} 1.0' in bob_text


def test_daemon_logs_prints_json_lines_and_completion_scripts_exist(pair: Mesh2) -> None:
    logs = cli(pair.alice.env, "daemon", "logs", "-n", "5")
    assert logs.returncode == 0
    lines = [json.loads(line) for line in logs.stdout.splitlines()]
    assert lines and all("event" in line and "ts" in line for line in lines)
    token = pair.alice.token()
    assert token not in (pair.alice.paths.log.read_text())
    for shell in ("bash", "zsh", "fish"):
        script = cli(pair.alice.env, "completion", shell)
        assert script.returncode == 0 and "_CLAUDEMESH_COMPLETE" in script.stdout
