"""The SDK against one real daemon (no broker reachable: sends queue), both clients.

Every test runs twice, on ``Client`` and on ``AsyncClient`` (sdkkit.Blocking), over the
Unix socket unless it says TCP.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from claudemesh.config import Paths, paths_from_env
from claudemesh.sdk import (
    AsyncClient,
    BrokerUnavailable,
    Client,
    DaemonUnreachable,
    IdempotencyKeyReused,
    InvalidRequest,
    MessageNotFound,
    MessageStatus,
    NoMeshJoined,
    OutboxItem,
    OutboxRowNotFound,
    PayloadTooLarge,
    ProcessNotFound,
    RequeueNotAllowed,
    SendResult,
    Session,
    SessionNameTaken,
    SessionNotFound,
    Unauthorized,
    UnknownDestination,
    UnknownMesh,
    UnknownSession,
    VersionInfo,
)
from helpers import DaemonHandle, cli, new_daemon, short_tmpdir
from sdkkit import KINDS, connect, make


@pytest.fixture(scope="module")
def one() -> Iterator[DaemonHandle]:
    handle = new_daemon()
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture(params=KINDS)
def api(request: pytest.FixtureRequest, one: DaemonHandle) -> Any:
    return make(request.param, one.paths, timeout=10.0)


def test_version_health_and_metrics(api: Any, one: DaemonHandle) -> None:
    info = api.version()
    assert isinstance(info, VersionInfo)
    assert (info.ipc_api, info.pid, info.meshes[0].slug) == ("v1", one.pid, "demo")
    assert "send" in info.ipc_features
    assert info.meshes[0].member_pubkey == one.meshes[0]["pubkey"]
    health = api.health()
    assert health["pid"] == one.pid and health["meshes"][0]["slug"] == "demo"
    assert "cm_daemon_ipc_request_total" in api.metrics()


def test_send_is_durable_and_the_same_id_is_the_same_row(api: Any, one: DaemonHandle) -> None:
    first = api.send("#news", "hello", client_message_id=f"sdk-{id(api)}")
    assert isinstance(first, SendResult)
    assert (first.status, first.duplicate) == ("queued", False)
    again = api.send("#news", "hello", client_message_id=first.client_message_id)
    assert (again.outbox_id, again.status) == (first.outbox_id, "queued")
    minted = api.send("#news", "no id given")
    assert len(minted.client_message_id) == 26  # a ULID, minted before the attempt
    rows = [r for r in one.outbox() if r["client_message_id"] == first.client_message_id]
    assert [r["id"] for r in rows] == [first.outbox_id]


def test_a_reused_id_raises_409_with_its_fields(api: Any) -> None:
    sent = api.send("#news", "original")
    with pytest.raises(IdempotencyKeyReused) as caught:
        api.send("#news", "different", client_message_id=sent.client_message_id)
    error = caught.value
    assert error.conflict == "outbox_pending_fingerprint_mismatch"
    assert error.fields["client_message_id"] == sent.client_message_id
    assert len(error.fields["daemon_fingerprint_prefix"]) == 16
    assert error.fields["daemon_fingerprint_prefix"] != error.fields["request_fingerprint_prefix"]
    assert error.exit_code == 5


def test_refusals_map_to_their_classes(api: Any) -> None:
    with pytest.raises(UnknownDestination) as unknown:
        api.send("nobody-by-that-name", "hi")
    assert unknown.value.http_status == 422
    with pytest.raises(InvalidRequest, match="priority"):
        api.send("#news", "hi", priority="urgent")
    with pytest.raises(UnknownMesh):
        api.send("#news", "hi", mesh="elsewhere")
    with pytest.raises(UnknownSession):
        api.send("#news", "hi", session="01J0000000000000000000GONE")
    with pytest.raises(BrokerUnavailable):
        api.peers()
    with pytest.raises(BrokerUnavailable):
        api.set_profile(summary="offline")


def test_outbox_requeue_and_message_status(api: Any) -> None:
    sent = api.send("#news", "to requeue")
    [row] = api.outbox(client_message_id=sent.client_message_id)
    assert isinstance(row, OutboxItem)
    assert (row.id, row.status, row.destination) == (sent.outbox_id, "pending", "#news")
    status = api.message_status(sent.client_message_id)
    assert isinstance(status, MessageStatus)
    assert (status.state, status.outbox_id, status.receipts) == ("queued", sent.outbox_id, [])
    moved = api.requeue(row.id, f"{sent.client_message_id}-again")
    assert moved["aborted_row_id"] == row.id
    assert api.outbox(client_message_id=sent.client_message_id)[0].status == "aborted"
    with pytest.raises(RequeueNotAllowed):
        api.requeue(row.id)
    with pytest.raises(OutboxRowNotFound):
        api.requeue("01J0000000000000000000NONE")
    with pytest.raises(MessageNotFound):
        api.message_status("never-sent/with a slash")
    assert all(r.status == "pending" for r in api.outbox(status="pending", limit=500))


def test_sessions_register_list_renew_and_end(api: Any) -> None:
    me = os.getpid()
    name = f"build-{'a' if isinstance(api, Client) else 'b'}"
    session = api.register_session(name, harness="sdk", pid=me, cwd="/tmp", default=False)
    assert isinstance(session, Session)
    assert (session.name, session.pid, session.harness, session.address) == (
        name, me, "sdk", f"alice/{name}")
    again = api.register_session(name, harness="sdk-2", pid=me)
    assert (again.session_id, again.harness) == (session.session_id, "sdk-2")
    assert session.session_id in [s.session_id for s in api.sessions(pid=me)]
    assert api.session(session.session_id).name == name
    with pytest.raises(SessionNameTaken) as taken:
        api.register_session(name)  # pid-less: another owner
    assert taken.value.fields["holder"]["session_id"] == session.session_id
    page = api.inbox(session=session.session_id, unread=True)
    assert page.items == [] and page.next_cursor is None
    assert api.mark_seen(name, up_to_seq=10**9) == []
    api.end_session(session.session_id)
    with pytest.raises(SessionNotFound):
        api.session(session.session_id)
    with pytest.raises(SessionNotFound):
        api.heartbeat(session.session_id)


def test_a_leased_session_renews_with_heartbeats(api: Any) -> None:
    session = api.register_session(f"lease-{id(api)}", lease_s=30)
    assert session.pid is None and session.lease_expires_at is not None
    time.sleep(0.01)
    renewed = api.heartbeat(session.session_id)
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at >= session.lease_expires_at
    api.end_session(session.session_id)


def test_a_session_for_a_process_that_does_not_exist_is_refused(api: Any) -> None:
    with pytest.raises(ProcessNotFound):
        api.register_session("ghost", pid=2**31 - 2)


def test_unread_without_a_session_is_a_400(api: Any) -> None:
    with pytest.raises(InvalidRequest, match="session"):
        api.inbox(unread=True)


@pytest.mark.parametrize("kind", KINDS)
def test_tcp_with_the_token_and_with_a_wrong_one(kind: str, one: DaemonHandle) -> None:
    assert make(kind, one.paths, transport="tcp").version().pid == one.pid
    forged = short_tmpdir()
    try:
        shutil.copy(one.paths.http_port, forged / "http.port")
        (forged / "local-token").write_text("not-the-token\n")
        wrong = make(kind, Paths(config_dir=one.paths.config_dir, daemon_dir=forged),
                     transport="tcp")
        with pytest.raises(Unauthorized):
            wrong.version()
    finally:
        shutil.rmtree(forged, ignore_errors=True)


def test_client_reads_its_paths_from_the_environment(one: DaemonHandle,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDEMESH_CONFIG_DIR", str(one.config_dir))
    monkeypatch.delenv("CLAUDEMESH_DAEMON_DIR", raising=False)
    assert Client().paths == one.paths
    assert Client(transport="tcp").version().pid == one.pid


def test_a_frozen_daemon_makes_send_retry_with_the_same_id(one: DaemonHandle) -> None:
    """1. Freeze the daemon, so the first attempt times out.
    2. Thaw it while the client waits to retry.
    3. Exactly one row holds the id the client minted before its first attempt."""
    api = Client(one.paths, timeout=0.4)
    os.kill(one.pid, signal.SIGSTOP)
    thaw = threading.Timer(0.6, os.kill, (one.pid, signal.SIGCONT))
    thaw.start()
    try:
        sent = api.send("#news", "through a freeze")
    finally:
        thaw.join()
        os.kill(one.pid, signal.SIGCONT)
    rows = [r for r in one.outbox() if r["client_message_id"] == sent.client_message_id]
    assert [r["id"] for r in rows] == [sent.outbox_id]


def test_send_gives_up_after_its_attempts_and_names_the_id() -> None:
    gone = Paths(config_dir=short_tmpdir(), daemon_dir=short_tmpdir())
    with pytest.raises(DaemonUnreachable) as caught:
        Client(gone).send("#news", "nobody listens", client_message_id="kept-id")
    assert caught.value.fields == {"client_message_id": "kept-id"}
    assert "no daemon listens on" in caught.value.detail


@pytest.mark.parametrize("kind", KINDS)
def test_connect_starts_a_daemon_in_a_fresh_directory(kind: str) -> None:
    fresh = new_daemon(start=False)
    try:
        with pytest.raises(DaemonUnreachable):
            connect(kind, fresh.paths, start=False)
        client = connect(kind, fresh.paths, start=True)
        info = client.version()
        fresh.info = {"pid": info.pid}
        assert info.meshes[0].slug == "demo"
        assert oct(fresh.paths.daemon_dir.stat().st_mode & 0o777) == "0o700"
        assert connect(kind, fresh.paths, start=True).version().pid == info.pid
    finally:
        fresh.cleanup()


def test_a_body_over_the_limit_is_answered_413_even_before_it_is_all_sent(api: Any) -> None:
    with pytest.raises(PayloadTooLarge):
        api.send("#news", "x" * (1024 * 1024 + 1))


def test_the_openapi_document(api: Any) -> None:
    document = api.openapi()
    assert document["openapi"].startswith("3.1")
    assert "/v1/send" in document["paths"] and "/v1/sessions" in document["paths"]


def test_connect_in_an_empty_directory_starts_a_daemon_with_no_mesh() -> None:
    empty = short_tmpdir()
    env = {"CLAUDEMESH_CONFIG_DIR": str(empty)}
    try:
        client = Client.connect(paths_from_env(env))
        assert client.version().meshes == []
        assert oct(client.paths.daemon_dir.stat().st_mode & 0o777) == "0o700"
        with pytest.raises(NoMeshJoined):
            client.send("#news", "to nobody")
    finally:
        cli({**os.environ, **env}, "daemon", "down")
        shutil.rmtree(empty, ignore_errors=True)


async def test_the_async_client_keeps_its_connection_and_survives_a_daemon_restart() -> None:
    daemon = new_daemon()
    try:
        client = AsyncClient(daemon.paths)
        first = await client.version()
        await client.health()
        assert len(client._idle) == 1  # both requests went over one kept-alive connection
        daemon.stop()
        daemon.start()
        again = await client.version()  # the kept connection is dead: retried on a new one
        assert again.pid != first.pid
        await client.close()
        assert client._idle == []
        assert (await client.version()).pid == again.pid  # usable after close
    finally:
        daemon.cleanup()
