"""docs/openapi.yaml against live daemons: served as documented, and schemathesis finds no
answer the document does not describe.

The daemon under test is alice's, on a real broker with bob's daemon beside it, so
``/v1/peers`` and ``/v1/profile`` answer 200 and the inbox, outbox, receipts and event
stream hold real rows. Schemathesis reads the document the daemon serves (the packaged
JSON copy, which ``test_the_document_is_served...`` checks is what the daemon sends) and
calls every operation over TCP with the bearer token, with all of its default checks.
``/v1/events`` is in the run: its events have a schema, and a read ends after 5 events or
1 s without a byte. Tests before the run call operations on rows it cannot guess (a dead
row, a live session, a message with receipts) and validate those answers the same way.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nacl.signing
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from claudemesh.clock import iso_ms, now_ms
from claudemesh.daemon.ipc.requests import MAX_SCHEDULE_AHEAD_MS, instant_ms
from claudemesh.daemon.ipc.routes_openapi import openapi_document
from claudemesh.privatefs import write_private_file
from helpers import DaemonHandle, http_request, new_daemon
from meshkit import Mesh2, link_state, mesh2, wait_for

pytestmark = pytest.mark.timeout(300)

MAX_EXAMPLES = 25

# The daemon under test reads its bearer token from daemon/local-token and keeps a
# well-formed one it finds there; writing it before the start lets the schema below, built
# at import, carry it as the document's bearerAuth credential.
TOKEN = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Live:
    mesh: Mesh2
    dead_row: str  # an outbox row the broker refused (a DM to a key of no member)

    @property
    def alice(self) -> DaemonHandle:
        return self.mesh.alice

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.alice.tcp_port()}"


def _seed(m: Mesh2) -> str:
    """Messages both ways (one from bob's session to alice's), and one DM the broker
    refuses, so the inbox, the outbox and the receipts hold real rows of every kind."""
    for daemon in (m.alice, m.bob):
        wait_for(lambda d=daemon: link_state(d) == "open")
        wait_for(lambda d=daemon: len(d.uds().call("GET", "/v1/peers")["peers"]) == 2)
    for i in range(8):
        assert m.bob.send({"to": "alice", "message": f"hello {i}"}).status == 202
    ops = m.bob.uds().call("POST", "/v1/sessions", {"name": "ops", "lease_s": 3600})
    assert m.bob.send({"to": "alice/build", "message": "for build",
                       "session": ops["session_id"]}).status == 202
    assert m.alice.send({"to": "bob", "message": "hi bob",
                         "client_message_id": "seed-dm"}).status == 202
    stranger = nacl.signing.SigningKey.generate().verify_key.encode().hex()
    assert m.alice.send({"to": stranger, "message": "to nobody",
                         "client_message_id": "seed-dead"}).status == 202
    wait_for(lambda: len(m.alice.uds().call("GET", "/v1/inbox")["items"]) == 9)
    wait_for(lambda: m.alice.uds().call("GET", "/v1/messages/seed-dm")["state"] == "stored")
    dead = wait_for(lambda: m.alice.outbox("dead"))
    return str(dead[0]["id"])


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    m = mesh2(start=False)
    try:
        token_file = m.alice.paths.token
        token_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(token_file, TOKEN.encode() + b"\n")
        m.alice.start()
        m.bob.start()
        yield Live(m, _seed(m))
    finally:
        m.cleanup()


# positive_data_acceptance takes these by default; the operations below add 422. Their 422s
# answer well-formed input that names what this daemon does not have (a mesh it has not
# joined, a peer name it has not seen, a session that is not live, a pid that is not
# running): facts of the daemon's state that a static document cannot list, and that
# docs/api.md answers with 422, not 404.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
STATE_422 = ["/v1/send", "/v1/inbox", "/v1/outbox", "/v1/peers", "/v1/profile",
             "/v1/sessions", "/v1/topic/subscribe", "/v1/topic/unsubscribe",
             "/v1/topic/list", "/v1/topic/post", "/v1/topic/history", "/v1/group/join",
             "/v1/group/leave", "/v1/group/list", "/v1/file/share", "/v1/file/get",
             "/v1/file/list"]


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}},
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        "operations": [
            # The stream never ends by itself: read at most 5 events, and stop after 1 s
            # without a byte (keepalives come every 15 s). The daemon frees the slot
            # within GONE_CHECK_S once the client has gone.
            {"include-path": "/v1/events", "request-timeout": 1, "max-stream-events": 5,
             "generation": {"max-examples": 5}},
            {"include-path": STATE_422, "checks": {
                "positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}}},
        ],
    })


schema = schemathesis.openapi.from_dict(json.loads(openapi_document()), config=_config())


def _keep_what_json_schema_cannot_say(case: Case) -> None:
    """Make a positive case keep the rules the document states only in words (its
    negative cases stay as drawn); each is a 400 the document describes:

    - OpenAPI constrains each parameter on its own, and some rules join two of them:
      ``unread=1`` needs ``session``; an ``Idempotency-Key`` header must equal the body's
      ``client_message_id`` when both are given, and so must ``Last-Event-ID`` and
      ``last_event_id``; ``thread`` combines with ``mesh`` and
      ``limit`` only, ``q`` not with ``order``, and the outbox's ``cursor`` and ``mesh``
      need ``q``.
    - ``q`` must be a well-formed search (no unbalanced quote, no dangling operator):
      a positive case keeps its plain words.
    - ``anycast`` is for an ``@group`` only.
    - JSON Schema counts ``261.0`` as an integer; the daemon's bodies are strict and take
      an integer field only as written without a fraction (``261``). Such a value is
      written back the way a client writes it.
    - A ``deliver_at`` (a ``date-time``) may be at most 366 days ahead; a later one is
      moved to a minute from now.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if isinstance(case.body, dict):
        case.body = {k: int(v) if isinstance(v, float) and v.is_integer() else v
                     for k, v in case.body.items()}
        when = case.body.get("deliver_at")
        if isinstance(when, str) and _too_far_ahead(when):
            case.body = {**case.body, "deliver_at": iso_ms(now_ms() + 60_000)}
    query = case.query or {}
    if case.path == "/v1/inbox" and query.get("unread") in ("1", "true") and not query.get(
            "session"):
        case.query = {**query, "unread": "0"}
    if isinstance(case.body, dict) and case.body.get("anycast") and not str(
            case.body.get("to", "")).startswith("@"):
        case.body = {**case.body, "anycast": False}
    if case.path in ("/v1/inbox", "/v1/outbox") and "q" in (case.query or {}):
        # ``q`` is a search: "an unbalanced quote or a dangling operator: 400"
        words = [w for w in str(case.query["q"]).split() if w.isascii() and w.isalnum()
                 and w not in ("AND", "OR", "NOT", "NEAR")]
        case.query = {**case.query, "q": " ".join(words) or "hello"}
    query = case.query or {}
    if case.path == "/v1/inbox" and "thread" in query:  # combines with mesh and limit only
        case.query = {k: v for k, v in query.items() if k in ("thread", "mesh", "limit")}
    elif case.path == "/v1/inbox" and "q" in query:  # results come best match first
        case.query = {k: v for k, v in query.items() if k != "order"}
    if case.path == "/v1/outbox" and "q" not in query:  # cursor and mesh need q
        case.query = {k: v for k, v in query.items() if k not in ("cursor", "mesh")}
    last = (case.headers or {}).get("Last-Event-ID")
    if case.path == "/v1/events" and last and (case.query or {}).get("last_event_id"):
        case.query = {**(case.query or {}), "last_event_id": last}  # both: they must agree
    key = (case.headers or {}).get("Idempotency-Key")
    if case.path in ("/v1/send", "/v1/topic/post") and isinstance(case.body, dict) and (
            key is not None and case.body.get("client_message_id") is not None):
        case.body = {**case.body, "client_message_id": key}


def _too_far_ahead(when: str) -> bool:
    try:
        return instant_ms(when) - now_ms() > MAX_SCHEDULE_AHEAD_MS
    except ValueError:
        return False  # malformed: a 400 the document describes


def _call(live: Live, method: str, path: str, **parts: Any) -> Any:
    """One hand-made case, sent and validated with every default check."""
    case = schema[path][method].Case(**parts)
    headers = {**AUTH, **(parts.get("headers") or {})}
    response = case.call_and_validate(base_url=live.base_url, headers=headers)
    return response


def test_a_replayed_stream_carries_messages_as_documented(live: Live) -> None:
    response = _call(live, "GET", "/v1/events", headers={"Last-Event-ID": "0"})
    assert response.status_code == 200
    assert response.content.startswith(b": connected\n\n")
    assert response.content.count(b"event: message\n") == 5  # cut at max-stream-events


def test_a_message_with_receipts_and_a_dead_row_are_as_documented(live: Live) -> None:
    message = _call(live, "GET", "/v1/messages/{client_message_id}",
                    path_parameters={"client_message_id": "seed-dm"}).json()
    assert message["receipts"][0]["state"] == "stored"
    dead = _call(live, "GET", "/v1/messages/{client_message_id}",
                 path_parameters={"client_message_id": "seed-dead"}).json()
    assert dead["state"] == "failed"
    receipts = _call(live, "GET", "/v1/outbox", query={"purpose": "receipt"}).json()
    assert receipts["items"][0]["purpose"] == "receipt"
    filed = _call(live, "GET", "/v1/inbox", query={"session": "build"}).json()["items"]
    assert [(i["session"], i["from_session"]) for i in filed if i["session"]] == [
        ("build", "ops")]


def test_send_retries_and_conflicts_are_as_documented(live: Live) -> None:
    same = {"to": "bob", "message": "hi bob", "client_message_id": "seed-dm"}
    assert _call(live, "POST", "/v1/send", body=same).status_code == 200
    other = {**same, "message": "something else"}
    conflict = _call(live, "POST", "/v1/send", body=other)
    assert conflict.json()["conflict"] == "outbox_done_fingerprint_mismatch"


def test_requeue_and_its_refusals_are_as_documented(live: Live) -> None:
    done = _call(live, "POST", "/v1/outbox/requeue", body={"id": live.dead_row}).json()
    assert done["aborted_row_id"] == live.dead_row
    again = _call(live, "POST", "/v1/outbox/requeue", body={"id": live.dead_row})
    assert (again.status_code, again.json()["status"]) == (409, "aborted")
    taken = _call(live, "POST", "/v1/outbox/requeue",
                  body={"id": done["new_row_id"], "new_client_message_id": "seed-dm"})
    assert taken.json()["error"] in ("client_message_id_in_use", "requeue_not_allowed")


def test_a_session_s_life_is_as_documented(live: Live) -> None:
    created = _call(live, "POST", "/v1/sessions",
                    body={"name": "build", "harness": "test", "lease_s": 600, "default": True})
    assert created.status_code == 201
    sid = created.json()["session_id"]
    assert _call(live, "POST", "/v1/sessions", body={"name": "build"}).status_code == 200
    taken = _call(live, "POST", "/v1/sessions", body={"name": "build", "pid": 1})
    assert taken.json()["holder"]["session_id"] == sid
    path = {"session_id": sid}
    _call(live, "GET", "/v1/sessions/{session_id}", path_parameters=path)
    _call(live, "POST", "/v1/sessions/{session_id}/heartbeat", path_parameters=path, body={})
    unread = _call(live, "GET", "/v1/inbox", query={"session": sid, "unread": "1"}).json()
    assert unread["items"], "the message filed for build is unread"
    seen = _call(live, "POST", "/v1/inbox/seen", body={"session": sid, "up_to_seq": 2**62})
    assert seen.json()["marked"]
    line = _call(live, "POST", "/v1/profile",
                 body={"session": sid, "summary": "building", "status": "working"}).json()
    assert line["published"] is True
    _call(live, "DELETE", "/v1/sessions/{session_id}", path_parameters=path)
    gone = _call(live, "GET", "/v1/sessions/{session_id}", path_parameters=path)
    assert gone.status_code == 404


def test_the_document_is_served_on_both_transports_with_their_auth(live: Live) -> None:
    alice = live.alice
    packaged = json.loads(openapi_document())
    status, body = http_request(str(alice.paths.sock), "GET", "/v1/openapi.json",
                                headers={"Host": "localhost"})
    assert (status, body) == (200, packaged)
    tcp = alice.tcp_port()
    status, body = http_request(tcp, "GET", "/v1/openapi.json", headers={"Host": "127.0.0.1"})
    assert (status, body["error"]) == (401, "unauthorized")
    response = _call(live, "GET", "/v1/openapi.json")
    assert response.headers["content-type"] == ["application/json; charset=utf-8"]
    assert response.content == openapi_document()


# After the hand-made cases above (they need rows in a known state), the run itself.
@schema.parametrize()
def test_the_daemon_answers_as_documented(case: Case, live: Live) -> None:
    _keep_what_json_schema_cannot_say(case)
    case.call_and_validate(base_url=live.base_url)


@pytest.fixture
def unlinked() -> Iterator[DaemonHandle]:
    handle = new_daemon()  # its broker URL has no broker: the link stays in backoff
    try:
        yield handle
    finally:
        handle.cleanup()


def test_the_503s_of_a_daemon_without_its_broker_are_as_documented(
        unlinked: DaemonHandle) -> None:
    """The one place where a 5xx is the right answer; not_a_server_error is left out of
    these two calls only, because a 503 is what they are here to see."""
    base_url = f"http://127.0.0.1:{unlinked.tcp_port()}"
    headers = {"Authorization": f"Bearer {unlinked.token()}"}
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance]
    for method, path, body in (("GET", "/v1/peers", None),
                               ("POST", "/v1/profile", {"summary": "away"})):
        case = schema[path][method].Case(body=body) if body else schema[path][method].Case()
        response = case.call(base_url=base_url, headers=headers)
        assert response.status_code == 503
        assert response.json()["error"] == "broker_unavailable"
        case.validate_response(response, checks=checks)
