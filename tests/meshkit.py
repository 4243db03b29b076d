"""End-to-end kit: a real broker and real daemons joined through the real `join` command
(run in the test process: :func:`helpers.cli_in_process`)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from brokerkit import BrokerProcess, new_broker
from claudemesh.sdk.sse import SseParser
from helpers import DaemonHandle, cleanup_all, cli_in_process, short_tmpdir


def joined_daemon(invite: str, name: str, *, start: bool = True) -> DaemonHandle:
    config_dir = short_tmpdir("cmj")
    env = {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(config_dir)}
    env.pop("CLAUDEMESH_DAEMON_DIR", None)
    result = cli_in_process(env, "join", invite, "--name", name, "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    meshes = json.loads((config_dir / "config.json").read_text())["meshes"]
    handle = DaemonHandle(config_dir, env, meshes)
    if start:
        handle.start()
    return handle


@dataclass
class Mesh2:
    """A broker with one mesh, and alice's and bob's daemons on it."""

    broker: BrokerProcess
    alice: DaemonHandle
    bob: DaemonHandle
    invite: str

    @property
    def bob_key(self) -> str:
        return str(self.bob.meshes[0]["pubkey"])

    @property
    def alice_key(self) -> str:
        return str(self.alice.meshes[0]["pubkey"])

    def cleanup(self) -> None:
        cleanup_all(self.alice, self.bob, self.broker)


def mesh2(*broker_flags: str, start: bool = True) -> Mesh2:
    broker = new_broker(*broker_flags)
    invite = broker.create_mesh().invite
    alice = joined_daemon(invite, "alice", start=start)
    bob = joined_daemon(invite, "bob", start=start)
    return Mesh2(broker, alice, bob, invite)


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def link_state(daemon: DaemonHandle) -> str:
    return str(daemon.uds().call("GET", "/v1/health")["meshes"][0]["link"])


def inbox(daemon: DaemonHandle) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = daemon.uds().call("GET", f"/v1/inbox?order=asc&limit=1000{cursor}")
        items += page["items"]
        if not page["next_cursor"]:
            return items
        cursor = f"&cursor={page['next_cursor']}"


def freeze(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def thaw(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


@dataclass
class SseReader:
    """Reads /v1/events over the Unix socket in a thread; events land in ``events``."""

    daemon: DaemonHandle
    last_event_id: str | None = None
    events: queue.Queue[tuple[str, str | None, dict[str, Any]]] = field(
        default_factory=queue.Queue)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    def start(self) -> SseReader:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.daemon.paths.sock))
        extra = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id else ""
        sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode())
        # The daemon subscribes before it writes ": connected": once that is here, no event
        # published from now on can miss this stream (a test's send may follow at once).
        sock.settimeout(10.0)
        head = b""
        while b": connected" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the event stream closed before it opened: {head!r}")
            head += chunk
        sock.settimeout(None)
        self._sock = sock
        self._thread = threading.Thread(target=self._read, args=(head,), daemon=True)
        self._thread.start()
        return self

    def _read(self, head: bytes) -> None:
        """Raw socket bytes through the SDK's SSE parser (the head's lines parse as no event;
        the chunk-size lines, with no colon, as unknown fields)."""
        assert self._sock is not None
        parser = SseParser()
        for sse in parser.feed(head):
            self.events.put((sse.event, sse.id, json.loads(sse.data)))
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(65536):
                for sse in parser.feed(chunk):
                    self.events.put((sse.event, sse.id, json.loads(sse.data)))

    def next(self, kind: str, timeout: float = 10.0) -> tuple[str | None, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} event within {timeout}s")
            try:
                event, ident, data = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event == kind:
                return ident, data

    def messages(self, count: int,
                 timeout: float = 20.0) -> list[tuple[str | None, dict[str, Any]]]:
        return [self.next("message", timeout) for _ in range(count)]

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()


def remove(path: Any) -> None:
    shutil.rmtree(path, ignore_errors=True)


# Receiving daemons send receipts back (as DMs): broker queries about the messages a test
# sent leave them out with this WHERE clause.
NO_RECEIPTS = " WHERE client_message_id NOT LIKE 'rcpt-%'"


def heard_membership(daemon: DaemonHandle, broker: Any, topic: str) -> bool:
    """The daemon heard the topic's current membership version (``topic_membership``
    event, kept in its topic_keys.json): its next post to the topic starts a new epoch,
    sealed to the subscribers of now (docs/protocol.md, "Encrypted topics")."""
    [(version,)] = broker.query("SELECT membership_version FROM topic WHERE name = ?", topic)
    path = daemon.paths.daemon_dir / "topic_keys.json"
    if not path.exists():
        return False
    doc = json.loads(path.read_text())
    entry = doc["meshes"].get(daemon.meshes[0]["mesh_id"], {}).get(topic, {})
    return bool(entry.get("membership_version") == version)
