"""TLS for the broker link: server contexts, client contexts, and pinned public keys.

A pin is ``sha256/<base64>`` of the certificate's SubjectPublicKeyInfo (the HPKP form), so
it survives a certificate renewed on the same key. An invite from a broker with TLS
carries the pin; a client with a pin does not ask any CA (a self-signed broker is then
as safe as a CA-signed one) and checks the key itself, right after the TLS handshake and
before it sends a byte of its own (:func:`check_pin`). Without a pin the client uses the
system trust store, or the mesh's ``ca_file``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import ssl
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from claudemesh.errors import BrokerUntrusted, ConfigError
from claudemesh.protocol.invite import PIN_RE

__all__ = [
    "PIN_RE",
    "check_pin",
    "client_context",
    "is_loopback_host",
    "is_loopback_url",
    "load_chain",
    "pin_of_cert_file",
    "pin_of_der",
    "self_signed",
    "server_context",
    "ssl_for",
]

SELF_SIGNED_DAYS: Final = 825


def pin_of_der(cert_der: bytes) -> str:
    """The pin of a DER certificate: the SHA-256 of its public key (SPKI)."""
    from cryptography import x509  # noqa: PLC0415 - only TLS paths pay for it
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    spki = x509.load_der_x509_certificate(cert_der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def pin_of_cert_file(path: Path) -> str:
    """The pin of the first certificate in a PEM file.

    Raises:
        ConfigError: the file is unreadable or holds no certificate.
    """
    try:
        pem = path.read_text(encoding="ascii")
        der = ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE-----"):])
        return pin_of_der(der)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a PEM certificate ({exc})") from None


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The broker's context; :meth:`ssl.SSLContext.load_cert_chain` on it again reloads.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_chain(context, cert, key)
    return context


def load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Raises ConfigError naming the files when they do not load (the old chain stays)."""
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert} with key {key}: {exc}") from None


def client_context(*, pin: str | None, ca_file: str | None) -> ssl.SSLContext:
    """With a pin, no CA and no host name: :func:`check_pin` decides. Without one, the
    system trust store (or ``ca_file``) and the host name, as any TLS client."""
    if pin:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA file {ca_file}: {exc}") from None


def ssl_for(url: str, *, pin: str | None, ca_file: str | None) -> ssl.SSLContext | None:
    """The client context for ``url``: None for ``ws://`` (websockets then opens plain TCP)."""
    return client_context(pin=pin, ca_file=ca_file) if url.startswith("wss://") else None


def check_pin(peer: Any, pin: str | None, url: str) -> None:
    """Compare the broker's key with the pin, before anything is sent over the link.
    ``peer`` is the connection's SSL socket or SSL object; a plain socket (``ws://``) or
    None has no certificate.

    Raises:
        BrokerUntrusted: the key differs (or the connection is not TLS at all).
    """
    if not pin:
        return
    getpeercert = getattr(peer, "getpeercert", None)
    der = getpeercert(binary_form=True) if getpeercert is not None else None
    if not der:
        raise BrokerUntrusted(f"{url} presented no certificate; the invite pins {pin}",
                              expected_pin=pin)
    presented = pin_of_der(der)
    if presented != pin:
        raise BrokerUntrusted(f"{url} presented key {presented}, but the invite pins {pin}",
                              expected_pin=pin, presented_pin=presented)


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.1``, ``::1``, with or without
    brackets): the traffic never leaves this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def self_signed(hosts: list[str], *, key_pem: bytes | None = None,
                days: int = SELF_SIGNED_DAYS) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``hosts`` (names or IP addresses), and its key (a new
    P-256 key unless ``key_pem`` renews one). Returns ``(cert_pem, key_pem)``."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    if key_pem is None:
        key: Any = ec.generate_private_key(ec.SECP256R1())
    else:
        key = serialization.load_pem_private_key(key_pem, password=None)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_out = key_pem or key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_out
