"""tls.py: pins, contexts, self-signed certificates (issue 14)."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from claudemesh.errors import BrokerUntrusted, ConfigError
from claudemesh.protocol.invite import (
    PIN_RE,
    Invite,
    InviteError,
    decode_invite,
    encode_invite,
)
from claudemesh.tls import (
    check_pin,
    client_context,
    is_loopback_host,
    is_loopback_url,
    pin_of_cert_file,
    pin_of_der,
    self_signed,
    server_context,
    ssl_for,
)


class _Peer:
    def __init__(self, der: bytes | None) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool) -> bytes | None:
        assert binary_form
        return self.der


def _write(tmp_path: Path, name: str, hosts: list[str], key: bytes | None = None) -> tuple[
        Path, Path]:
    cert_pem, key_pem = self_signed(hosts, key_pem=key)
    (tmp_path / f"{name}.crt").write_bytes(cert_pem)
    (tmp_path / f"{name}.key").write_bytes(key_pem)
    return tmp_path / f"{name}.crt", tmp_path / f"{name}.key"


def test_a_pin_is_the_sha256_of_the_key_and_survives_a_renewal(tmp_path: Path) -> None:
    cert, key = _write(tmp_path, "a", ["broker.example", "127.0.0.1"])
    pin = pin_of_cert_file(cert)
    assert PIN_RE.fullmatch(pin)
    renewed, _ = _write(tmp_path, "b", ["broker.example"], key=key.read_bytes())
    assert renewed.read_bytes() != cert.read_bytes()
    assert pin_of_cert_file(renewed) == pin
    other, _ = _write(tmp_path, "c", ["broker.example"])
    assert pin_of_cert_file(other) != pin
    assert pin_of_der(ssl.PEM_cert_to_DER_cert(cert.read_text())) == pin


def test_check_pin_refuses_another_key_and_a_missing_certificate(tmp_path: Path) -> None:
    cert, _ = _write(tmp_path, "a", ["localhost"])
    other, _ = _write(tmp_path, "b", ["localhost"])
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    pin = pin_of_cert_file(cert)
    check_pin(_Peer(der), pin, "wss://x/ws")
    check_pin(None, None, "ws://x/ws")  # nothing pinned: nothing to check
    with pytest.raises(BrokerUntrusted) as caught:
        check_pin(_Peer(ssl.PEM_cert_to_DER_cert(other.read_text())), pin, "wss://x/ws")
    assert caught.value.fields["presented_pin"] == pin_of_cert_file(other)
    assert caught.value.exit_code == 7
    with pytest.raises(BrokerUntrusted):
        check_pin(None, pin, "ws://x/ws")  # a pin over plain ws:// is never satisfied


def test_client_contexts_trust_the_pin_or_the_cas() -> None:
    pinned = client_context(pin="sha256/" + "A" * 43 + "=", ca_file=None)
    assert (pinned.verify_mode, pinned.check_hostname) == (ssl.CERT_NONE, False)
    system = client_context(pin=None, ca_file=None)
    assert (system.verify_mode, system.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert ssl_for("ws://127.0.0.1:1/ws", pin=None, ca_file=None) is None
    with pytest.raises(ConfigError):
        client_context(pin=None, ca_file="/nonexistent/ca.pem")


def test_server_context_names_the_files_that_do_not_load(tmp_path: Path) -> None:
    cert, key = _write(tmp_path, "a", ["localhost"])
    assert server_context(cert, key).minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError, match=r"a\.crt"):
        server_context(cert, cert)
    with pytest.raises(ConfigError):
        pin_of_cert_file(key)


@pytest.mark.parametrize(("url", "loopback"), [
    ("ws://127.0.0.1:7900/ws", True), ("ws://localhost/ws", True), ("ws://[::1]:1/ws", True),
    ("ws://10.0.0.2/ws", False), ("wss://broker.example/ws", False), ("ws://0.0.0.0/ws", False),
])
def test_loopback_urls(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("broker.example", False),
])
def test_loopback_hosts_as_broker_up_takes_them(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


INVITE: Any = Invite("wss://b:1/ws", "m", "demo", "i", 1, "s", "sig")


def test_an_invite_signs_its_pin_and_an_invite_without_one_is_unchanged() -> None:
    pinned = replace(INVITE, pin="sha256/" + "B" * 43 + "=")
    assert pinned.signed_broker == "wss://b:1/ws|pin=sha256/" + "B" * 43 + "="
    assert INVITE.signed_broker == INVITE.signed_urls
    assert '"pin"' not in __import__("base64").urlsafe_b64decode(
        encode_invite(INVITE)[4:] + "==").decode()
    assert decode_invite(encode_invite(pinned)).pin == pinned.pin


def test_an_invite_with_a_malformed_pin_is_refused() -> None:
    with pytest.raises(InviteError, match="pin"):
        decode_invite(encode_invite(replace(INVITE, pin="md5/abc")))
