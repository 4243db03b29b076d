"""Bad input gets the right 4xx with a reason, and writes nothing (R-DLV-7 phase A, R-LIM-1/3)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import quote

import pytest

from helpers import DaemonHandle, http_request, new_daemon, raw_http

CASES = [
    (b"not json", 400, "invalid_request", "not valid JSON"),
    (b"", 400, "invalid_request", "empty"),
    (b"[]", 400, "invalid_request", "JSON object"),
    (b"\xff{}", 400, "invalid_request", "UTF-8"),
    (b'{"to":"#t","message":"m","client_message_id":"d","client_message_id":"e"}', 400,
     "invalid_request", "duplicate key"),
    (b'{"to":"#t","message":"m","meta":{"x":NaN}}', 400, "invalid_request", "NaN"),
    (b'{"to":5,"message":"m"}', 400, "invalid_request", "'to'"),
    (b'{"to":"#t","message":5}', 400, "invalid_request", "'message'"),
    (b'{"to":"#t","message":"m","priority":1}', 400, "invalid_request", "'priority'"),
    (b'{"to":"#t","message":"m","meta":"x"}', 400, "invalid_request", "'meta'"),
    (b'{"to":"#t","message":"m","meta":{"n":9007199254740993}}', 400, "invalid_request",
     "RFC 8785"),
    (b'{"to":"#t","message":"m","surprise":true}', 400, "invalid_request", "unknown field"),
    (b'{"to":"#t"}', 400, "invalid_request", "missing field 'message'"),
    (b'{"to":"#t","message":"m","client_message_id":"has space"}', 400, "invalid_request",
     "client_message_id"),
    (b'{"to":"#bad topic","message":"m"}', 400, "invalid_request", "'to'"),
    (b'{"to":"","message":"m"}', 400, "invalid_request", "'to'"),
    (b'{"to":" padded","message":"m"}', 400, "invalid_request", "'to'"),
    (b'{"to":"#t","message":"\\ud800"}', 400, "invalid_request", "'message'"),
    (b'{"to":"#t","message":"m","mesh":"elsewhere"}', 422, "unknown_mesh", "elsewhere"),
    (b'{"to":"nobody-known","message":"m"}', 422, "unknown_destination", "nobody-known"),
    (b'{"to":"' + b"ab" * 32 + b'","message":"m"}', 422, "unknown_destination",
     "not a valid member public key"),
]


@pytest.mark.parametrize(("raw", "status", "code", "reason"), CASES)
def test_bad_send_is_refused_and_writes_nothing(shared_daemon: DaemonHandle, raw: bytes,
                                                status: int, code: str, reason: str) -> None:
    before = shared_daemon.db_rows()
    got, body = http_request(str(shared_daemon.paths.sock), "POST", "/v1/send",
                             headers={"Host": "localhost"}, body=raw)
    assert (got, body["error"]) == (status, code), body
    assert reason in body["detail"]
    assert shared_daemon.db_rows() == before


@pytest.mark.parametrize(("path", "raw", "status", "code"), [
    ("/v1/outbox/requeue", b"{}", 400, "invalid_request"),
    ("/v1/outbox/requeue", b'{"id":5}', 400, "invalid_request"),
    ("/v1/outbox/requeue", b'{"id":"x","extra":1}', 400, "invalid_request"),
    ("/v1/outbox/requeue", b'{"id":"x","new_client_message_id":"a b"}', 400,
     "invalid_request"),
    ("/v1/outbox/requeue", b'{"id":"missing"}', 404, "outbox_row_not_found"),
])
def test_bad_requeue_is_refused(shared_daemon: DaemonHandle, path: str, raw: bytes,
                                status: int, code: str) -> None:
    before = shared_daemon.db_rows()
    got, body = http_request(str(shared_daemon.paths.sock), "POST", path,
                             headers={"Host": "localhost"}, body=raw)
    assert (got, body["error"]) == (status, code), body
    assert shared_daemon.db_rows() == before


@pytest.mark.parametrize(("query", "reason"), [
    ("status=bogus", "status must be one of"),
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"),
    ("stauts=dead", "unknown query parameter"),
])
def test_bad_outbox_queries_are_400(shared_daemon: DaemonHandle, query: str,
                                    reason: str) -> None:
    resp = shared_daemon.uds().request("GET", f"/v1/outbox?{query}")
    assert resp.status == 400
    assert reason in resp.body["detail"]


@pytest.mark.parametrize("path", [
    "/v1/outbox?limit=", "/v1/inbox?limit=", "/v1/inbox?cursor=", "/v1/sessions?pid=",
    "/v1/events?last_event_id=",
])
@pytest.mark.parametrize("digit", ["\u00b2", "\u0663"])  # superscript two, Arabic-Indic three
def test_numeric_query_parameters_take_only_ascii_digits(shared_daemon: DaemonHandle, path: str,
                                                         digit: str) -> None:
    """Regression: ``str.isdigit`` let ``²`` through to ``int()`` (a 500) and read ``٣``
    as 3; both are a 400 naming the parameter."""
    resp = shared_daemon.uds().request("GET", path + quote(digit))
    assert (resp.status, resp.body["error"]) == (400, "invalid_request"), resp.body
    name = path.rsplit("?", 1)[1].rstrip("=")
    assert name.split("_")[0] in resp.body["detail"].lower()


def test_unknown_routes_and_methods(shared_daemon: DaemonHandle) -> None:
    client = shared_daemon.uds()
    assert client.request("GET", "/v1/nope").body["error"] == "not_found"
    assert client.request("GET", "/v1/send").status == 405
    assert client.request("PUT", "/v1/health").status == 405


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/v1/send", "POST"),
    ("PUT", "/v1/health", "GET"),
    ("TRACE", "/v1/sessions", "GET,POST"),
    ("PATCH", "/v1/sessions/01ABC", "DELETE,GET"),
])
def test_a_wrong_method_is_405_with_the_allow_header(shared_daemon: DaemonHandle, method: str,
                                                     path: str, allowed: str) -> None:
    """Regression: the error answer dropped aiohttp's ``Allow``, which RFC 9110 §15.5.6
    requires on a 405."""
    resp = shared_daemon.uds().request(method, path)
    assert resp.status == 405
    assert sorted(resp.headers["allow"].split(",")) == allowed.split(",")
    assert resp.body["error"] == "method_not_allowed"


def test_a_body_over_1_mb_is_413_and_exactly_1_mb_is_accepted(
        shared_daemon: DaemonHandle) -> None:
    prefix = b'{"to":"#big","client_message_id":"big-ok","message":"'
    suffix = b'"}'
    exact = prefix + b"x" * (1024 * 1024 - len(prefix) - len(suffix)) + suffix
    assert len(exact) == 1024 * 1024
    before = shared_daemon.db_rows()
    status, body = http_request(str(shared_daemon.paths.sock), "POST", "/v1/send",
                                headers={"Host": "localhost"},
                                body=exact.replace(b"big-ok", b"big-no") + b" ")
    assert (status, body["error"]) == (413, "payload_too_large")
    assert shared_daemon.db_rows() == before
    status, body = http_request(str(shared_daemon.paths.sock), "POST", "/v1/send",
                                headers={"Host": "localhost"}, body=exact)
    assert status == 202, body


def test_an_oversize_chunked_body_is_413(shared_daemon: DaemonHandle) -> None:
    chunk = b"x" * 65536
    parts = [b"POST /v1/send HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
             b"Connection: close\r\n\r\n"]
    parts += [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 20
    parts.append(b"0\r\n\r\n")
    status, body = raw_http(str(shared_daemon.paths.sock), b"".join(parts))
    assert (status, body["error"]) == (413, "payload_too_large")


def test_more_than_64_requests_in_flight_get_429_daemon_busy() -> None:
    """1. open 64 requests whose bodies never finish; 2. the 65th gets 429 at once;
    3. finish the 64: every one of them is accepted."""
    daemon = new_daemon()
    held: list[socket.socket] = []
    try:
        body = json.dumps({"to": "#busy", "message": "m"}).encode()
        for _ in range(64):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.paths.sock))
            sock.sendall(b"POST /v1/send HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body[:5])
            held.append(sock)
        deadline = time.monotonic() + 10
        while True:
            resp = daemon.uds().request("GET", "/v1/health")
            if resp.status == 429 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert resp.status == 429
        assert resp.body["error"] == "daemon_busy"
        for sock in held:
            sock.sendall(body[5:])
        statuses = []
        for sock in held:
            sock.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(4096)
            statuses.append(int(data.split(b" ", 2)[1]))
        assert statuses == [202] * 64
        assert daemon.uds().request("GET", "/v1/health").status == 200
        assert len(daemon.db_rows()) == 64
    finally:
        for sock in held:
            sock.close()
        daemon.cleanup()
