"""Blob frames (shared files) against a real broker process, on both stores: upload in
slices, resume after a kill -9, the size cap, and who may read a blob."""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
from pathlib import Path

from brokerkit import BrokerProcess, Client, Mesh, clients, pg_query
from claudemesh.protocol.features import validate_features
from meshkit import wait_for


def blob_dir(broker: BrokerProcess) -> Path:
    """Where the broker keeps blob bytes: beside the SQLite file, or under its config dir
    (the PostgreSQL default of ``broker up``)."""
    if broker.dsn is None:
        return Path(f"{broker.db}.blobs")
    return broker.root / "home" / "broker" / "blobs"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def file_id() -> str:
    return secrets.token_hex(12).upper()


async def upload(client: Client, fid: str, data: bytes, start: int = 0,
                 step: int = 64 * 1024) -> dict[str, object]:
    answers = await client.request_many([
        {"type": "blob_put", "file_id": fid, "offset": off, "data": b64(data[off:off + step])}
        for off in range(start, len(data), step)])
    assert all(a["type"] == "result" for a in answers), answers[:2]
    return answers[-1]


async def test_upload_status_get_and_list_for_uploader_and_recipient_only(
        broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob, carol = mesh.join("alice"), mesh.join("bob"), mesh.join("carol")
    data = os.urandom(300_000)
    fid = file_id()
    async with clients((broker.url, alice), (broker.url, bob), (broker.url, carol)) as (a, b, c):
        begun = await a.request({"type": "blob_begin", "file_id": fid, "size": len(data),
                                 "recipients": [bob.pubkey]})
        assert (begun["type"], begun["received"], begun["complete"]) == ("result", 0, False)
        assert (await b.request({"type": "blob_get", "file_id": fid, "offset": 0,
                                 "length": 10}))["code"] == "file_not_found"  # not whole yet
        last = await upload(a, fid, data)  # pipelined: answers in order
        assert (last["received"], last["complete"]) == (len(data), True)
        again = await a.request({"type": "blob_put", "file_id": fid, "offset": 0,
                                 "data": b64(data[:100])})
        assert again["received"] == len(data)  # a resent slice is a no-op
        got = b""
        while len(got) < len(data):
            part = await b.request({"type": "blob_get", "file_id": fid, "offset": len(got),
                                    "length": 160 * 1024})
            assert part["type"] == "result", part
            got += base64.b64decode(part["data"])
        assert got == data
        for frame in ({"type": "blob_get", "file_id": fid, "offset": 0, "length": 10},
                      {"type": "blob_status", "file_id": fid}):
            refused = await c.request(frame)
            assert (refused["type"], refused["code"]) == ("error", "file_not_found")
        stolen = await c.request({"type": "blob_begin", "file_id": fid, "size": len(data),
                                  "recipients": [carol.pubkey]})
        assert stolen["code"] == "blob_exists"
        listed = (await b.request({"type": "list_blobs"}))["blobs"]
        assert [(x["file_id"], x["uploader_pubkey"], x["complete"]) for x in listed] == [
            (fid, alice.pubkey, True)]
        assert (await c.request({"type": "list_blobs"}))["blobs"] == []
    stored = blob_dir(broker) / fid
    assert stored.read_bytes() == data
    assert (oct(stored.stat().st_mode & 0o777), oct(blob_dir(broker).stat().st_mode & 0o777)) == (
        "0o600", "0o700")


async def test_oversize_is_413_with_the_limit_and_nothing_is_stored() -> None:
    from brokerkit import new_broker  # noqa: PLC0415
    broker = new_broker("--max-file-bytes", "100000")
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        async with clients((broker.url, alice)) as (a,):
            refused = await a.request({"type": "blob_begin", "file_id": file_id(),
                                       "size": 200_000, "recipients": [bob.pubkey]})
            assert (refused["type"], refused["code"], refused["limit"]) == (
                "error", "payload_too_large", 100_000)
            client, ack = await Client.hello(broker.url, bob)
            await client.close()
            assert ack["features"]["max_payload"]["params"]["blob_bytes"] == 100_000
            assert validate_features(ack["features"]).inline_bytes == 65536
        assert broker.query("SELECT count(*) FROM blob") == [(0,)]
        assert not blob_dir(broker).exists() or list(blob_dir(broker).iterdir()) == []
    finally:
        broker.cleanup()


async def test_puts_out_of_place_or_past_the_size_are_refused(
        broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    fid = file_id()
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await a.request({"type": "blob_begin", "file_id": fid, "size": 1000,
                         "recipients": [bob.pubkey]})
        gap = await a.request({"type": "blob_put", "file_id": fid, "offset": 10,
                               "data": b64(b"x" * 10)})
        assert (gap["code"], gap["received"]) == ("blob_offset_mismatch", 0)
        over = await a.request({"type": "blob_put", "file_id": fid, "offset": 0,
                                "data": b64(b"x" * 1001)})
        assert over["code"] == "invalid_request"
        for junk in ("not base64!", "é" * 8, "abc"):
            refused = await a.request({"type": "blob_put", "file_id": fid, "offset": 0,
                                       "data": junk})
            assert refused["code"] == "invalid_request", (junk, refused)
        theirs = await b.request({"type": "blob_put", "file_id": fid, "offset": 0,
                                  "data": b64(b"x")})
        assert theirs["code"] == "file_not_found"  # a recipient cannot write
        bad = await a.request({"type": "blob_begin", "file_id": "../../etc", "size": 1,
                               "recipients": [bob.pubkey]})
        assert (bad["type"], bad["code"]) == ("error", "invalid_frame")


async def test_an_upload_resumes_after_kill_9_from_what_was_stored(
        broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    data, fid = os.urandom(1_000_000), file_id()
    async with clients((broker.url, alice)) as (a,):
        await a.request({"type": "blob_begin", "file_id": fid, "size": len(data),
                         "recipients": [bob.pubkey]})
        half = await upload(a, fid, data[:500_000])
        assert half["received"] == 500_000
    broker.kill9()
    broker.start()
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        resumed = await a.request({"type": "blob_begin", "file_id": fid, "size": len(data),
                                   "recipients": [bob.pubkey]})
        assert (resumed["received"], resumed["complete"]) == (500_000, False)
        status = await b.request({"type": "blob_status", "file_id": fid})
        assert status["received"] == 500_000
        done = await upload(a, fid, data, start=500_000)
        assert (done["received"], done["complete"]) == (len(data), True)
    assert (blob_dir(broker) / fid).read_bytes() == data


async def test_the_sweep_deletes_expired_blobs_rows_and_bytes(store_kind: str) -> None:
    """An upload left incomplete for over a day goes, row and file (both stores)."""
    from brokerkit import new_broker  # noqa: PLC0415
    broker = new_broker("--sweep-interval", "0.2")
    try:
        mesh = broker.create_mesh()
        alice, bob = mesh.join("alice"), mesh.join("bob")
        fid = file_id()
        async with clients((broker.url, alice)) as (a,):
            await a.request({"type": "blob_begin", "file_id": fid, "size": 1000,
                             "recipients": [bob.pubkey]})
            await a.request({"type": "blob_put", "file_id": fid, "offset": 0,
                             "data": b64(b"x" * 10)})
        assert (blob_dir(broker) / fid).exists()
        two_days_ago = 1_000_000  # epoch ms: long before any retention
        if broker.dsn is None:
            with sqlite3.connect(broker.db) as conn:
                conn.execute("UPDATE blob SET created_at = ?", (two_days_ago,))
        else:
            pg_query(broker.dsn, "UPDATE blob SET created_at = ?", two_days_ago)
        wait_for(lambda: not (blob_dir(broker) / fid).exists())
        assert broker.query("SELECT count(*) FROM blob") == [(0,)]
    finally:
        broker.cleanup()


async def test_a_blob_bound_to_a_topic_is_read_by_its_subscribers_at_fetch_time(
        broker: BrokerProcess, mesh: Mesh) -> None:
    """``blob_begin`` with ``topic``: the topic must exist; its subscribers of the moment
    (and the uploader) may fetch it, any other member gets ``not_subscribed`` (403)."""
    alice, bob, carol = mesh.join("alice"), mesh.join("bob"), mesh.join("carol")
    data, fid = os.urandom(200_000), file_id()
    async with clients((broker.url, alice), (broker.url, bob), (broker.url, carol)) as (a, b, c):
        missing = await a.request({"type": "blob_begin", "file_id": fid, "size": len(data),
                                   "topic": "news"})
        assert (missing["type"], missing["code"]) == ("error", "destination_not_found")
        for both in ({"recipients": [bob.pubkey], "topic": "news"}, {}):
            bad = await a.request({"type": "blob_begin", "file_id": fid, "size": 1, **both})
            assert (bad["type"], bad["code"]) == ("error", "invalid_frame"), bad
        assert (await b.request({"type": "subscribe", "topic": "news"}))["type"] == "result"
        begun = await a.request({"type": "blob_begin", "file_id": fid, "size": len(data),
                                 "topic": "news"})
        assert (begun["type"], begun["received"]) == ("result", 0), begun
        other = await a.request({"type": "blob_begin", "file_id": fid, "size": len(data),
                                 "recipients": [bob.pubkey]})
        assert other["code"] == "blob_exists"  # the same id bound otherwise: not a resume
        await upload(a, fid, data)
        got = await b.request({"type": "blob_get", "file_id": fid, "offset": 0,
                               "length": 160 * 1024})
        assert base64.b64decode(got["data"]) == data[:160 * 1024]
        refused = await c.request({"type": "blob_get", "file_id": fid, "offset": 0,
                                   "length": 10})
        assert (refused["type"], refused["code"]) == ("error", "not_subscribed")
        assert [(x["file_id"], x["topic"], x["recipients"]) for x in (await b.request(
            {"type": "list_blobs"}))["blobs"]] == [(fid, "news", [])]
        assert (await c.request({"type": "list_blobs"}))["blobs"] == []
        await c.request({"type": "subscribe", "topic": "news"})
        await b.request({"type": "unsubscribe", "topic": "news"})
        late = await c.request({"type": "blob_status", "file_id": fid})
        assert (late["type"], late["complete"]) == ("result", True)
        gone = await b.request({"type": "blob_get", "file_id": fid, "offset": 0, "length": 10})
        assert gone["code"] == "not_subscribed"
        assert (await b.request({"type": "list_blobs"}))["blobs"] == []
        mine = await a.request({"type": "blob_status", "file_id": fid})  # the uploader
        assert mine["type"] == "result"
