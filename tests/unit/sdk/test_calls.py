"""The requests each SDK method sends, built without I/O, and the policies beside them."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from claudemesh.config import Paths
from claudemesh.errors import DaemonTimeout, DaemonUnreachable, InvalidRequest, ShuttingDown
from claudemesh.sdk import inbox, messages, peers, receipts, sessions
from claudemesh.sdk.discovery import check_compatible
from claudemesh.sdk.endpoint import Endpoint, check_transport, connection_error, resolve
from claudemesh.sdk.http import ProtocolError
from claudemesh.sdk.inbox import Event
from claudemesh.sdk.reconnect import RECONNECTABLE, Backoff, EventCursor
from claudemesh.sdk.wire import with_query


def query(path: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))


def test_inbox_maps_sender_to_from_and_unread_to_1_and_leaves_out_the_rest() -> None:
    call = inbox.inbox(session="build", unread=True, sender="bob smith",
                       since="2026-11-26T15:00:00+01:00")
    assert call.method == "GET" and call.path.startswith("/v1/inbox?")
    assert query(call.path) == {"session": "build", "unread": "1", "from": "bob smith",
                                "since": "2026-11-26T15:00:00+01:00", "limit": "100",
                                "order": "desc"}
    assert "15%3A00%3A00%2B01%3A00" in call.path  # a bare + would read as a space
    assert query(inbox.inbox().path) == {"limit": "100", "order": "desc"}


def test_with_query_drops_none_and_false() -> None:
    assert with_query("/v1/x", a=None, b=False) == "/v1/x"
    assert with_query("/v1/x", a="#news", b=True, c=3) == "/v1/x?a=%23news&b=1&c=3"


def test_send_body_leaves_out_what_was_not_given() -> None:
    body = messages.send_body("bob/build", "hi", client_message_id="c-1")
    assert body == {"to": "bob/build", "message": "hi", "priority": "next",
                    "client_message_id": "c-1"}
    full = messages.send_body("bob", "hi", client_message_id="c", mesh="m", priority="now",
                              meta={}, reply_to="b", session="s")
    assert full["meta"] == {} and full["session"] == "s"
    assert (messages.send(body).method, messages.send(body).path) == ("POST", "/v1/send")


def test_outbox_requeue_and_message_status_paths() -> None:
    assert query(messages.outbox(status="dead", purpose="all").path) == {
        "status": "dead", "limit": "50", "purpose": "all"}
    assert messages.requeue("r1").body == {"id": "r1"}
    assert messages.requeue("r1", "n1").body == {"id": "r1", "new_client_message_id": "n1"}
    assert receipts.message_status("a/b?c").path == "/v1/messages/a%2Fb%3Fc"


def test_seen_profile_and_session_calls() -> None:
    assert inbox.mark_seen("s", up_to_seq=9).body == {"session": "s", "up_to_seq": 9,
                                                     "path": "poll"}
    assert inbox.mark_seen("s", ids=["a"], path="hook").body == {"session": "s", "ids": ["a"],
                                                                "path": "hook"}
    assert peers.set_profile(session="s", summary="x").body == {"session": "s", "summary": "x"}
    assert peers.set_profile(capabilities=("a", "b")).body == {"capabilities": ["a", "b"]}
    register = sessions.register_session("build", pid=12, harness="sdk")
    assert (register.method, register.body) == (
        "POST", {"name": "build", "harness": "sdk", "pid": 12, "default": False})
    assert sessions.list_sessions(pid=12).path == "/v1/sessions?pid=12"
    assert sessions.end_session("01J").method == "DELETE"
    assert sessions.heartbeat("01J").path == "/v1/sessions/01J/heartbeat"
    assert sessions.end_session("01J").decode({"session_id": "01J", "deleted": True}) is None


def test_send_retry_policy() -> None:
    assert messages.SEND_ATTEMPTS == 3
    assert [messages.send_retry_delay(a) for a in (1, 2)] == [0.2, 0.4]
    gave_up = messages.send_gave_up(DaemonTimeout("slow"), "c-9")
    assert type(gave_up) is DaemonUnreachable
    assert gave_up.fields == {"client_message_id": "c-9"}
    assert "slow" in gave_up.detail and "c-9" in gave_up.detail


def test_backoff_doubles_to_five_seconds_and_resets() -> None:
    backoff = Backoff()
    assert [backoff.next() for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 0.2


def test_the_cursor_remembers_the_last_message_id_only() -> None:
    cursor = EventCursor(12)
    assert cursor.headers() == {"Last-Event-ID": "12"}
    cursor.saw(Event("peer_join", None, {}))
    cursor.saw(Event("message", "13", {}))
    cursor.saw(Event("broker_status", None, {}))
    assert cursor.last_event_id == "13"
    assert EventCursor().headers() == EventCursor("").headers() == {}


def test_reconnect_on_a_gone_or_stopping_daemon_only() -> None:
    assert issubclass(DaemonTimeout, RECONNECTABLE)
    assert issubclass(ShuttingDown, RECONNECTABLE)
    assert not issubclass(InvalidRequest, RECONNECTABLE)


def test_check_compatible_refuses_another_api() -> None:
    check_compatible({"ipc_api": "v1", "ipc_features": ["send", "events"]})
    for info in ({"ipc_api": "v2", "ipc_features": ["send"]}, {"ipc_api": "v1"}, "nope"):
        with pytest.raises(DaemonUnreachable, match="speaks ipc_api"):
            check_compatible(info)


def test_tcp_without_a_recorded_port_is_unreachable_and_a_bad_transport_is_refused(
        tmp_path: Path) -> None:
    paths = Paths(config_dir=tmp_path, daemon_dir=tmp_path / "d")
    assert resolve(paths, "uds").sock == str(paths.sock)
    with pytest.raises(DaemonUnreachable, match="no TCP endpoint"):
        resolve(paths, "tcp")
    with pytest.raises(InvalidRequest, match="transport"):
        check_transport("http")


def test_connection_errors_map_onto_the_tree_and_never_show_the_token() -> None:
    tcp = Endpoint(port=1234, headers={"Authorization": "Bearer secret"})
    assert "secret" not in repr(tcp)
    assert "127.0.0.1:1234" in connection_error(ConnectionRefusedError(), tcp, 1).detail
    assert isinstance(connection_error(TimeoutError(), tcp, 2.5), DaemonTimeout)
    assert "went silent" in connection_error(TimeoutError(), tcp, 1, stream=True).detail
    broken = connection_error(ProtocolError("cut"), tcp, 1, stream=True)
    assert (type(broken), broken.detail) == (DaemonUnreachable, "the event stream broke: cut")
