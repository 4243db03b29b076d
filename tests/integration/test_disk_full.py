"""Disk pressure (issue 14 item 3), on real processes with their directory on a real 2 MB
tmpfs filled to ENOSPC (mounting needs root; skipped otherwise, see tests/diskkit.py).

- Alice's disk is full: ``POST /v1/send`` answers 507 ``insufficient_storage``, never 202,
  and keeps nothing; once the filler is gone the next send is 202 and reaches bob.
- Bob's disk is full: his inbox write fails, he does not ack, and the broker pushes again
  after its delivery lease; once there is room the message lands, once.
- The broker's disk is full: its accept answers ``send_result`` 507, alice's drain keeps
  the row pending and retries, and once there is room the retry is delivered.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from brokerkit import BrokerProcess
from diskkit import fill, tmpfs
from helpers import DaemonHandle, short_tmpdir
from meshkit import Mesh2, freeze, inbox, joined_daemon, link_state, thaw, wait_for

LEASE_S = "1"  # the broker pushes an unacked delivery again after this long


@dataclass
class SmallDiskBroker(BrokerProcess):
    """A broker whose SQLite file lives in ``store_dir`` (the tmpfs) rather than root."""

    store_dir: Path = field(default_factory=Path)

    @property
    def db(self) -> str:
        return str(self.store_dir / "broker.db")


@contextlib.contextmanager
def small_disk(who: str) -> Iterator[tuple[Mesh2, Path]]:
    """A broker, alice and bob, where ``who``'s directory is a fresh 2 MB tmpfs."""
    with contextlib.ExitStack() as stack:
        root = short_tmpdir("cmk")
        stack.callback(shutil.rmtree, root, True)  # last: after the unmount
        store_dir = root / "store"
        disk = stack.enter_context(tmpfs(at=store_dir)) if who == "broker" else store_dir
        store_dir.mkdir(mode=0o700, exist_ok=True)
        broker = SmallDiskBroker(root, ("--delivery-lease", LEASE_S), store_dir=store_dir)
        stack.callback(broker.cleanup)
        broker.start()
        invite = broker.create_mesh().invite
        daemons: list[DaemonHandle] = []
        for name in ("alice", "bob"):
            daemon = joined_daemon(invite, name, start=False)
            stack.callback(shutil.rmtree, daemon.config_dir, True)
            if who == name:
                disk = stack.enter_context(tmpfs(at=daemon.paths.daemon_dir))
            stack.callback(daemon.cleanup)  # first: the daemon stops before its unmount
            daemon.start()
            daemons.append(daemon)
        yield Mesh2(broker, daemons[0], daemons[1], invite), disk


def dm(mesh: Mesh2, cmid: str) -> tuple[int, dict[str, object]]:
    answer = mesh.alice.send({"to": mesh.bob_key, "message": f"hello {cmid}",
                              "client_message_id": cmid})
    return answer.status, answer.body


def received(mesh: Mesh2) -> list[str]:
    return [item["client_message_id"] for item in inbox(mesh.bob)]


def unacked(mesh: Mesh2, cmid: str) -> int:
    [(count,)] = mesh.broker.query(
        "SELECT count(*) FROM delivery_queue q JOIN message m ON m.id = q.message_id"
        " WHERE q.acked_at IS NULL AND m.client_message_id = ?", cmid)
    return int(count)


def integrity(path: Path) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def test_a_full_disk_answers_507_keeps_nothing_and_the_daemon_resumes_by_itself() -> None:
    """1. alice's daemon directory is a 2 MB tmpfs; a first DM reaches bob.
    2. Fill the tmpfs: every send answers 507 with the JSON error body, never 202.
    3. outbox.db passes its integrity check and holds only the first row.
    4. Delete the filler: the next send is 202 and reaches bob; a refused id was never
       consumed, so it is accepted now too."""
    with small_disk("alice") as (mesh, disk):
        assert dm(mesh, "before")[0] == 202
        wait_for(lambda: received(mesh) == ["before"])
        filler = fill(disk)
        for cmid in ("full-1", "full-2", "full-3"):
            status, body = dm(mesh, cmid)
            assert status == 507, body
            assert body["error"] == "insufficient_storage"
            assert isinstance(body["detail"], str) and body["detail"]
        assert integrity(mesh.alice.paths.outbox_db) == [("ok",)]
        assert [r[0] for r in mesh.alice.db_rows()] == ["before"]
        assert mesh.alice.uds().call("GET", "/v1/health")["meshes"][0]["link"] == "open"
        filler.unlink()
        assert dm(mesh, "after")[0] == 202
        assert dm(mesh, "full-1")[0] == 202
        wait_for(lambda: sorted(received(mesh)) == ["after", "before", "full-1"])
        assert {r["status"] for r in mesh.alice.outbox()} == {"done"}


def test_a_full_inbox_is_not_acked_and_the_broker_pushes_it_again_once_there_is_room() -> None:
    """1. bob's daemon directory is a 2 MB tmpfs, and the broker's lease is 1 s.
    2. Fill it; alice's DM is accepted by the broker (her row goes done) but bob cannot
       store it, so he does not ack it; the lease expires, the re-push fails too.
    3. Delete the filler: the next re-push lands, once, and is acked."""
    with small_disk("bob") as (mesh, disk):
        assert dm(mesh, "before")[0] == 202
        wait_for(lambda: received(mesh) == ["before"])
        log = mesh.broker.root / "broker.log"
        seen = log.read_text().count("delivery_lease_expired")
        filler = fill(disk)
        assert dm(mesh, "while-full")[0] == 202
        wait_for(lambda: {r["status"] for r in mesh.alice.outbox()} == {"done"})
        wait_for(lambda: log.read_text().count("delivery_lease_expired") > seen)  # again
        time.sleep(0.5)  # and the re-push refused as well
        assert received(mesh) == ["before"]
        assert unacked(mesh, "while-full") == 1
        filler.unlink()
        wait_for(lambda: received(mesh) == ["before", "while-full"])
        wait_for(lambda: unacked(mesh, "while-full") == 0)  # stored, then acked
        assert integrity(mesh.bob.paths.inbox_db) == [("ok",)]


def test_a_full_broker_store_answers_a_retryable_507_and_the_retry_delivers() -> None:
    """1. The broker's SQLite file is on a 2 MB tmpfs; a first DM reaches bob.
    2. Fill it: alice's send is 202 (her disk is fine), the broker answers the drain's
       send with ``send_result`` 507, and the row stays pending with that error.
    3. The broker keeps running and keeps the links; delete the filler: the drain's next
       retry is accepted and reaches bob, and the store passes its integrity check."""
    with small_disk("broker") as (mesh, disk):
        assert dm(mesh, "before")[0] == 202
        wait_for(lambda: received(mesh) == ["before"])
        filler = fill(disk)
        assert dm(mesh, "while-full")[0] == 202

        def refused() -> bool:
            rows = {r["client_message_id"]: r for r in mesh.alice.outbox()}
            row = rows["while-full"]
            return row["status"] == "pending" and "507" in str(row["last_error"])

        wait_for(refused)
        assert mesh.broker.proc is not None and mesh.broker.proc.poll() is None
        assert received(mesh) == ["before"]
        filler.unlink()
        wait_for(lambda: received(mesh) == ["before", "while-full"], timeout=30)
        assert {r["status"] for r in mesh.alice.outbox()} == {"done"}
        assert integrity(Path(mesh.broker.db)) == [("ok",)]


def status_of(daemon: DaemonHandle, cmid: str) -> str:
    """The row's status read straight from outbox.db (the API would answer the same)."""
    return next(str(status) for c, status, *_ in daemon.db_rows() if c == cmid)


def test_rows_queued_before_the_disk_filled_go_out_once_there_is_room() -> None:
    """1. The broker stops; alice queues a DM (202, pending), and her disk fills.
    2. The broker comes back: the link opens and the drain's claim fails (no room); the
       drain does not die, it tries again after a backoff.
    3. Delete the filler: the row is claimed, sent, done, and reaches bob."""
    with small_disk("alice") as (mesh, disk):
        assert dm(mesh, "before")[0] == 202
        wait_for(lambda: received(mesh) == ["before"])
        mesh.broker.stop()
        wait_for(lambda: link_state(mesh.alice) != "open")
        assert dm(mesh, "queued")[0] == 202
        filler = fill(disk)
        mesh.broker.start()
        wait_for(lambda: link_state(mesh.alice) == "open", timeout=30)
        time.sleep(1.0)  # the drain's claim has run into the full disk
        assert status_of(mesh.alice, "queued") == "pending"
        filler.unlink()
        wait_for(lambda: received(mesh) == ["before", "queued"], timeout=30)
        wait_for(lambda: status_of(mesh.alice, "queued") == "done")


def test_an_answer_that_arrives_while_the_disk_is_full_is_written_once_there_is_room() -> None:
    """1. The broker is frozen; alice's DM is claimed and sent (inflight), and her disk
       fills.
    2. The broker thaws and accepts it (bob receives it), but alice cannot write the
       ``done``: the row stays inflight, and the drain keeps the answer.
    3. Delete the filler: the kept answer is written and the row is done, without a
       restart (before, it stayed inflight until the next one)."""
    with small_disk("alice") as (mesh, disk):
        assert dm(mesh, "before")[0] == 202
        wait_for(lambda: received(mesh) == ["before"])
        assert mesh.broker.proc is not None
        freeze(mesh.broker.proc.pid)
        try:
            assert dm(mesh, "late")[0] == 202
            wait_for(lambda: status_of(mesh.alice, "late") == "inflight")
            filler = fill(disk)
        finally:
            thaw(mesh.broker.proc.pid)
        wait_for(lambda: received(mesh) == ["before", "late"])
        time.sleep(1.0)  # the answer came, and its write was refused
        assert status_of(mesh.alice, "late") == "inflight"
        filler.unlink()
        wait_for(lambda: status_of(mesh.alice, "late") == "done", timeout=30)
