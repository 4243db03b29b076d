"""Failover URLs and the orphan check, on the embedded store (PostgreSQL: test_cluster.py)."""

from __future__ import annotations

import contextlib
import json
import sqlite3

from brokerkit import new_broker
from helpers import cleanup_all, cli
from meshkit import NO_RECEIPTS, joined_daemon, link_state, wait_for


def test_a_daemon_whose_first_broker_is_dead_opens_on_the_next_url() -> None:
    broker = new_broker()
    try:
        dead = "ws://127.0.0.1:9/ws"
        made = broker.cli("mesh", "create", "demo", "--db", str(broker.db), "--broker-url", dead,
                          "--broker-url", broker.url, "--json")
        assert made.returncode == 0, made.stderr
        invite = json.loads(made.stdout)["invite"]
        alice = joined_daemon(invite, "alice")  # join itself fails over to the live URL
        try:
            mesh = json.loads((alice.config_dir / "config.json").read_text())["meshes"][0]
            assert (mesh["broker_url"], mesh["broker_urls"]) == (dead, [broker.url])
            wait_for(lambda: link_state(alice) == "open", timeout=20)
            health = alice.uds().call("GET", "/v1/health")["meshes"][0]
            assert health["broker_url"] == broker.url
            assert health["broker_urls"] == [dead, broker.url]
        finally:
            alice.cleanup()
    finally:
        broker.cleanup()


def test_broker_check_finds_planted_orphans() -> None:
    broker = new_broker()
    try:
        mesh = broker.create_mesh()
        alice = joined_daemon(mesh.invite, "alice")
        bob = joined_daemon(mesh.invite, "bob")
        try:
            sent = alice.send({"to": "bob", "message": "m", "client_message_id": "o-1"})
            assert sent.status == 202
            wait_for(lambda: broker.query("SELECT count(*) FROM message" + NO_RECEIPTS) == [(1,)])
        finally:
            cleanup_all(alice, bob)
        ok = broker.cli("broker", "check", "--db", str(broker.db), "--json")
        assert (ok.returncode, json.loads(ok.stdout)["ok"]) == (0, True)
        with contextlib.closing(sqlite3.connect(broker.db)) as conn:
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute("DELETE FROM message")
            conn.commit()
        bad = broker.cli("broker", "check", "--db", str(broker.db), "--json")
        assert bad.returncode == 1
        kinds = {f["kind"] for f in json.loads(bad.stdout)["findings"]}
        assert kinds == {"dedupe_without_message", "delivery_without_message"}
        assert cli(broker.env, "broker", "check", "--db", str(broker.db)).returncode == 1
    finally:
        broker.cleanup()
