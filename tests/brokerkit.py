"""Test kit for the broker: a real broker process, real joins, a real signing WS client."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from claudemesh.crypto import MemberKey, box_encrypt
from claudemesh.joining import join_mesh
from claudemesh.protocol.fingerprint import body_hash
from claudemesh.protocol.handshake import hello_frame as protocol_hello
from claudemesh.protocol.invite import decode_invite
from helpers import cli_in_process, short_tmpdir
from pgkit import fresh_dsn, shared_cluster

# Which store ``new_broker`` gives a broker: "sqlite" (a file in the broker's directory)
# or "postgres" (a fresh database on the shared test cluster). The broker suite's
# conftest flips it per parametrization, so every broker test runs on both.
_store_kind = "sqlite"


@contextlib.contextmanager
def using_store(kind: str) -> Iterator[None]:
    """Within the block, ``new_broker`` puts brokers on ``kind`` ("sqlite" or "postgres")."""
    global _store_kind  # noqa: PLW0603
    before, _store_kind = _store_kind, kind
    try:
        yield
    finally:
        _store_kind = before


@dataclass
class BrokerProcess:
    root: Path
    extra: tuple[str, ...] = ()
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    dsn: str | None = None  # a PostgreSQL DSN; None means the SQLite file under root
    tls: bool = False  # serving wss:// (started with --tls-cert/--tls-key)
    pin: str | None = None  # then its key's pin, as the ready line reports it

    @property
    def db(self) -> str:
        """What ``--db`` gets: the SQLite path or the PostgreSQL DSN."""
        return self.dsn if self.dsn is not None else str(self.root / "broker.db")

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ws"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(self.root / "home")}

    def start(self) -> BrokerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "claudemesh", "broker", "up", "--port", str(self.port),
             "--db", str(self.db), "--json", *self.extra],
            env=self.env, stdout=subprocess.PIPE, stderr=open(self.root / "broker.log", "a"),  # noqa: SIM115
            text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, (self.root / "broker.log").read_text()[-2000:]
        ready = json.loads(line)
        self.port, self.tls, self.pin = ready["port"], bool(ready.get("tls")), ready.get("pin")
        atexit.register(self.reap)
        return self

    def reap(self) -> None:
        """At exit: a broker whose fixture failed before it could stop it does not outlive
        the test run (it would hold its port and its store's connections)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=20)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "claudemesh", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)

    def create_mesh(self, name: str = "demo", *extra: str) -> Mesh:
        result = cli_in_process(self.env, "mesh", "create", name, "--db", str(self.db),
                                "--broker-url", self.url, "--max-uses", "100", "--json", *extra)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        return Mesh(self, data["mesh_id"], data["invite"])

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the broker's store directly, written in SQLite's dialect for both stores."""
        if self.dsn is None:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as c:
                return c.execute(sql, args).fetchall()
        return pg_query(self.dsn, sql, *args)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Identity:
    mesh_id: str
    member_id: str
    key: MemberKey
    name: str

    @property
    def pubkey(self) -> str:
        return self.key.pubkey


@dataclass
class Mesh:
    broker: BrokerProcess
    mesh_id: str
    invite: str

    def join(self, name: str) -> Identity:
        key = MemberKey.generate()
        result = join_mesh(decode_invite(self.invite), key, name)
        return Identity(self.mesh_id, result.member_id, key, name)


def hello_frame(ident: Identity, *, timestamp_ms: int | None = None, nonce: str | None = None,
                key: MemberKey | None = None) -> dict[str, Any]:
    """The protocol's hello (protocol/handshake.py); a test may sign with another key."""
    ts = timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000
    return protocol_hello(mesh_id=ident.mesh_id, member_id=ident.member_id,
                          pubkey=ident.pubkey, sign=(key or ident.key).sign, timestamp_ms=ts,
                          nonce=nonce)


@dataclass
class Client:
    ws: ClientConnection
    ident: Identity | None = None
    inbox: list[dict[str, Any]] = field(default_factory=list)
    batches: int = 0  # batch frames received (recv hands out their frames one by one)
    _n: int = 0
    _unread: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def open(cls, url: str, ident: Identity | None = None) -> Client:
        return cls(await connect(url, max_size=4 * 1024 * 1024), ident)

    @classmethod
    async def hello(cls, url: str, ident: Identity, **kw: Any) -> tuple[Client, dict[str, Any]]:
        client = await cls.open(url, ident)
        await client.send(hello_frame(ident, **kw))
        return client, await client.recv()

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if not self._unread:
            frame = dict(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))
            if frame["type"] == "batch":
                self.batches += 1
                self._unread = list(frame["frames"])
            else:
                self._unread = [frame]
        return self._unread.pop(0)

    async def next(self, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame of ``kind`` (matching ``match``), keeping others in ``inbox``."""
        for i, frame in enumerate(self.inbox):
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.inbox.append(frame)

    async def nothing(self, kind: str, within: float, **match: Any) -> None:
        """Assert no frame of ``kind`` arrives within ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            frame = await self.next(kind, within, **match)
            raise AssertionError(f"unexpected {kind}: {frame}")

    def req_id(self) -> str:
        self._n += 1
        return f"r{self._n}"

    async def request(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        req_id = self.req_id()
        await self.send({**frame, "req_id": req_id})
        for kind in ("result", "send_result", "error", "feature_negotiation_response"):
            for i, f in enumerate(self.inbox):
                if f["type"] == kind and f.get("req_id") == req_id:
                    return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame.get("req_id") == req_id:
                return frame
            self.inbox.append(frame)

    async def request_many(self, frames: list[dict[str, Any]],
                           timeout: float = 30.0) -> list[dict[str, Any]]:
        """Pipeline: send every frame, then collect the answers in the same order."""
        ids = [self.req_id() for _ in frames]
        for req_id, frame in zip(ids, frames, strict=True):
            await self.send({**frame, "req_id": req_id})
        answers: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(ids):
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame.get("req_id") in ids:
                answers[frame["req_id"]] = frame
            else:
                self.inbox.append(frame)
        return [answers[i] for i in ids]

    async def post(self, to: str, text: str, cmid: str | None = None,
                   **extra: Any) -> dict[str, Any]:
        """Send plain text to #topic / @group / *, or a crypto_box DM to a 64-hex pubkey."""
        return await self.request(self.envelope(to, text, cmid or secrets.token_hex(8), **extra))

    def envelope(self, to: str, text: str, cmid: str, *, priority: str = "next",
                 meta: dict[str, Any] | None = None, reply_to: str | None = None,
                 body: dict[str, Any] | None = None, digest: str | None = None) -> dict[str, Any]:
        if len(to) == 64 and to != "*":
            assert self.ident is not None
            kind, ref = "dm", to
            boxed = box_encrypt(text.encode(), sender_secret_hex=self.ident.key.secret_key,
                                recipient_pubkey_hex=to)
            default_body: dict[str, Any] = {"kind": "crypto_box", "nonce": boxed.nonce,
                                            "ciphertext": boxed.ciphertext}
        else:
            kind, ref = "topic", to[1:] if to.startswith("#") else to
            default_body = {"kind": "plain", "text": text}
        return {"type": "send", "client_message_id": cmid, "envelope_version": "1",
                "destination_kind": kind, "destination_ref": ref, "priority": priority,
                "reply_to": reply_to, "meta": meta, "body_hash": digest or body_hash(text),
                "body": body or default_body}

    async def ack(self, *delivery_ids: str) -> None:
        await self.send({"type": "client_ack", "delivery_ids": list(delivery_ids)})

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Wait until the server closes us; returns (code, reason)."""
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        return self.ws.close_code, self.ws.close_reason or ""

    async def close(self) -> None:
        await self.ws.close()


@contextlib.asynccontextmanager
async def clients(*pairs: tuple[str, Identity]) -> AsyncIterator[list[Client]]:
    opened = []
    try:
        for url, ident in pairs:
            client, ack = await Client.hello(url, ident)
            assert ack["type"] == "hello_ack", ack
            opened.append(client)
        yield opened
    finally:
        for client in opened:
            await client.close()


def new_broker(*extra: str, dsn: str | None = None) -> BrokerProcess:
    """A started broker on the store ``STORE_KIND`` selects (or on ``dsn`` when given)."""
    if dsn is None and _store_kind == "postgres":
        dsn = fresh_dsn(shared_cluster())
    return BrokerProcess(short_tmpdir("cmk"), extra, dsn=dsn).start()


def pg_query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run a SQLite-dialect test query on PostgreSQL (schema ``mesh``), synchronously.

    Tests call this from inside their own event loop, so asyncpg runs on a private loop in
    a worker thread. Only the dialect the tests use is translated: ``?`` placeholders and
    ``hex(x)``.
    """
    counter = iter(range(1, len(args) + 1))
    text = re.sub(r"\?", lambda _m: f"${next(counter)}", sql)
    text = re.sub(r"\bhex\((\w+)\)", r"upper(encode(\1, 'hex'))", text)

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": "mesh"})
        try:
            return [tuple(row) for row in await conn.fetch(text, *args)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(timeout=30)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
