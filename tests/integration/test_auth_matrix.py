"""R-AUTH-1..11 over real sockets: UDS and TCP, by token, Host and Origin, ?token=, OPTIONS."""

from __future__ import annotations

import http.client
import subprocess

import pytest

from helpers import DaemonHandle, http_request

TOKENS = {"none": None, "wrong": "W" * 43, "right": "RIGHT"}


def headers_for(daemon: DaemonHandle, token: str | None, host: str | None,
                origin: str | None = None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if host is not None:
        headers["Host"] = host
    if token is not None:
        headers["Authorization"] = f"Bearer {daemon.token() if token == 'RIGHT' else token}"
    if origin is not None:
        headers["Origin"] = origin
    return headers


def target(daemon: DaemonHandle, transport: str) -> str | int:
    return str(daemon.paths.sock) if transport == "uds" else daemon.tcp_port()


@pytest.mark.parametrize("transport", ["uds", "tcp"])
@pytest.mark.parametrize("token", list(TOKENS))
@pytest.mark.parametrize("host", ["localhost", "localhost:1234", "127.0.0.1", "127.0.0.1:9",
                                  "[::1]", "[::1]:9", None])
def test_loopback_hosts(shared_daemon: DaemonHandle, transport: str, token: str,
                        host: str | None) -> None:
    # A request without Host can only be HTTP/1.0: HTTP/1.1 requires the header (RFC 9112
    # §3.2), which test_http11_without_host_is_a_protocol_error pins.
    status, body = http_request(target(shared_daemon, transport), "GET", "/v1/version",
                                headers=headers_for(shared_daemon, TOKENS[token], host),
                                version="1.1" if host is not None else "1.0")
    if transport == "uds" or token == "right":
        assert status == 200, body
        assert body["ipc_api"] == "v1"
    else:
        assert status == 401
        assert body["error"] == "unauthorized"
        assert ("missing" in body["detail"]) is (token == "none")


def test_http11_without_host_is_a_protocol_error(shared_daemon: DaemonHandle) -> None:
    status, _ = http_request(str(shared_daemon.paths.sock), "GET", "/v1/version", headers={})
    assert status == 400


@pytest.mark.parametrize("transport", ["uds", "tcp"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "localhost.evil",
                                  "127.0.0.2", "[::2]:1"])
def test_foreign_hosts_are_403_even_with_the_right_token(shared_daemon: DaemonHandle,
                                                         transport: str, host: str) -> None:
    status, body = http_request(target(shared_daemon, transport), "GET", "/v1/health",
                                headers=headers_for(shared_daemon, "RIGHT", host))
    assert (status, body["error"]) == (403, "forbidden_host")


@pytest.mark.parametrize("transport", ["uds", "tcp"])
@pytest.mark.parametrize("origin", ["http://localhost", "null", "https://evil.example"])
def test_any_origin_is_403(shared_daemon: DaemonHandle, transport: str, origin: str) -> None:
    status, body = http_request(target(shared_daemon, transport), "GET", "/v1/health",
                                headers=headers_for(shared_daemon, "RIGHT", "localhost", origin))
    assert (status, body["error"]) == (403, "forbidden_origin")


@pytest.mark.parametrize("transport", ["uds", "tcp"])
def test_cors_preflight_is_403_and_never_allows_an_origin(shared_daemon: DaemonHandle,
                                                          transport: str) -> None:
    status, body = http_request(target(shared_daemon, transport), "OPTIONS", "/v1/send",
                                headers=headers_for(shared_daemon, "RIGHT", "localhost"))
    assert (status, body["error"]) == (403, "cors_preflight_refused")


@pytest.mark.parametrize("transport", ["uds", "tcp"])
@pytest.mark.parametrize("token", list(TOKENS))
def test_token_in_the_query_is_400_whatever_else(shared_daemon: DaemonHandle, transport: str,
                                                 token: str) -> None:
    real = shared_daemon.token()
    status, body = http_request(target(shared_daemon, transport), "GET",
                                f"/v1/health?token={real}",
                                headers=headers_for(shared_daemon, TOKENS[token], "localhost"))
    assert (status, body["error"]) == (400, "token_in_query")
    log = shared_daemon.paths.log.read_text()
    assert "token_in_query_refused" in log
    assert real not in log


@pytest.mark.parametrize("path", ["/v1/send", "/v1/outbox/requeue"])
def test_tcp_posts_without_the_token_write_nothing(shared_daemon: DaemonHandle,
                                                   path: str) -> None:
    before = shared_daemon.db_rows()
    status, _ = http_request(shared_daemon.tcp_port(), "POST", path,
                             headers={"Host": "localhost"},
                             body=b'{"to":"#t","message":"m","client_message_id":"no-auth"}')
    assert status == 401
    assert shared_daemon.db_rows() == before


def test_tcp_with_the_right_token_can_send(shared_daemon: DaemonHandle) -> None:
    resp = shared_daemon.tcp().request(
        "POST", "/v1/send", {"to": "#t", "message": "m", "client_message_id": "tcp-ok"})
    assert resp.status == 202
    assert "tcp-ok" in [r[0] for r in shared_daemon.db_rows()]


def test_401_answers_carry_www_authenticate(shared_daemon: DaemonHandle) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", shared_daemon.tcp_port(), timeout=5)
    conn.request("GET", "/v1/health", headers={"Host": "localhost"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 401
    assert resp.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert resp.getheader("Access-Control-Allow-Origin") is None


def test_tcp_listens_on_loopback_only(shared_daemon: DaemonHandle) -> None:
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=False).stdout
    port = shared_daemon.tcp_port()
    lines = [line for line in out.splitlines() if f":{port} " in line]
    if not lines:
        pytest.skip("ss is not available here")
    assert all(f"127.0.0.1:{port}" in line for line in lines), lines
