"""TLS on the broker, with the key pinned by the invite (issue 14, item 1).

A real broker serving wss:// with a certificate from `claudemesh broker cert --self-signed`,
real daemons joined through `claudemesh join`: no CA anywhere, the pin is the only trust.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brokerkit import BrokerProcess, new_broker
from claudemesh.protocol.invite import decode_invite
from claudemesh.tls import pin_of_cert_file
from helpers import DaemonHandle, cleanup_all, cli, short_tmpdir
from meshkit import inbox, joined_daemon, link_state, wait_for


def make_cert(where: Path, *flags: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "claudemesh", "broker", "cert", "--self-signed",
         "--host", "127.0.0.1", "--host", "localhost", "--dir", str(where), "--json", *flags],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def tls_broker(cert: dict[str, Any]) -> BrokerProcess:
    return new_broker("--tls-cert", cert["cert"], "--tls-key", cert["key"])


def presented_cert(port: int) -> bytes:
    """The certificate a fresh TLS handshake gets now (DER)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return der


@pytest.fixture
def certs() -> Iterator[Path]:
    root = short_tmpdir("cmt")
    yield root


def test_a_dm_crosses_wss_to_a_self_signed_broker_trusted_by_the_invites_pin(
        certs: Path) -> None:
    cert = make_cert(certs / "a")
    assert oct(os.stat(cert["key"]).st_mode & 0o777) == "0o600"
    broker = tls_broker(cert)
    alice = bob = None
    try:
        assert broker.url.startswith("wss://") and broker.pin == cert["pin"]
        invite = broker.create_mesh("demo", "--tls-cert", cert["cert"]).invite
        assert decode_invite(invite).pin == cert["pin"] == pin_of_cert_file(Path(cert["cert"]))
        alice, bob = joined_daemon(invite, "alice"), joined_daemon(invite, "bob")
        assert alice.meshes[0]["pin"] == cert["pin"]
        for daemon in (alice, bob):
            wait_for(lambda d=daemon: link_state(d) == "open")
        answer = alice.send({"to": "bob", "message": "over tls", "client_message_id": "tls-1"})
        assert answer.status == 202, answer.body
        got = wait_for(lambda: inbox(bob))
        assert [m["client_message_id"] for m in got] == ["tls-1"]
        assert got[0]["body"] == "over tls"
    finally:
        cleanup_all(alice, bob, broker)


def test_a_broker_presenting_another_key_is_refused_and_gets_nothing(certs: Path) -> None:
    first, other = make_cert(certs / "a"), make_cert(certs / "b")
    assert first["pin"] != other["pin"]
    broker = tls_broker(first)
    alice: DaemonHandle | None = None
    try:
        invite = broker.create_mesh("demo", "--tls-cert", first["cert"]).invite
        alice = joined_daemon(invite, "alice", start=False)
        members = len(broker.query("SELECT id FROM member"))
        broker.stop()
        broker.extra = ("--tls-cert", other["cert"], "--tls-key", other["key"])
        broker.start()  # same port and store, another key: what a MITM would present
        # A new join: refused before the join frame leaves (no member is added).
        joiner = short_tmpdir("cmj")
        refused = cli({**os.environ, "CLAUDEMESH_CONFIG_DIR": str(joiner)},
                      "join", invite, "--name", "mallory", "--json")
        assert refused.returncode == 7, refused.stdout + refused.stderr
        assert json.loads(refused.stdout)["error"] == "broker_untrusted"
        assert other["pin"] in refused.stdout and first["pin"] in refused.stdout
        assert len(broker.query("SELECT id FROM member")) == members
        # A direct send: refused, nothing accepted.
        direct = cli(alice.env, "send", "--no-daemon", "--json", alice.meshes[0]["pubkey"], "hi")
        assert direct.returncode == 7, direct.stdout + direct.stderr
        assert broker.query("SELECT id FROM message") == []
        # The daemon: its only link is untrusted, so it refuses to start (exit 7).
        daemon = cli(alice.env, "daemon", "up", "--json")
        assert daemon.returncode == 7, daemon.stdout + daemon.stderr
        assert json.loads(daemon.stdout)["error"] == "broker_untrusted"
        assert broker.query("SELECT id FROM message") == []
    finally:
        cleanup_all(alice, broker)


def test_sighup_reloads_the_certificate_while_a_link_stays_open(certs: Path) -> None:
    cert = make_cert(certs / "a")
    broker = tls_broker(cert)
    alice = bob = None
    try:
        invite = broker.create_mesh("demo", "--tls-cert", cert["cert"]).invite
        alice, bob = joined_daemon(invite, "alice"), joined_daemon(invite, "bob")
        wait_for(lambda: link_state(alice) == "open" and link_state(bob) == "open")
        session = alice.uds().call("GET", "/v1/health")["meshes"][0]["session_id"]
        before = presented_cert(broker.port)
        renewed = make_cert(certs / "a", "--renew")  # same key: the pin stays valid
        assert renewed["pin"] == cert["pin"]
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: presented_cert(broker.port) != before)
        assert presented_cert(broker.port) == ssl.PEM_cert_to_DER_cert(
            Path(cert["cert"]).read_text())
        health = alice.uds().call("GET", "/v1/health")["meshes"][0]
        assert (health["link"], health["session_id"]) == ("open", session)  # not reconnected
        answer = alice.send({"to": "bob", "message": "after reload",
                             "client_message_id": "tls-2"})
        assert answer.status == 202
        assert [m["client_message_id"] for m in wait_for(lambda: inbox(bob))] == ["tls-2"]
    finally:
        cleanup_all(alice, bob, broker)
