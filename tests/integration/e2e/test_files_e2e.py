"""Shared files end to end (issue 15): real broker, real daemons, the real CLI.

A 20 MB file goes alice -> bob with the broker killed -9 mid-upload and restarted (the
upload resumes from what the broker had, and the sha256 matches); an oversize file is
413 with nothing stored; the broker holds no plaintext; bad input is refused; ``out`` is
confined to the downloads directory."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sharekit
from brokerkit import BrokerProcess
from helpers import DaemonHandle, cli
from meshkit import Mesh2, inbox, mesh2, wait_for
from sharekit import sha256

MARKER = b"PLAINTEXT-MARKER-4f1c9e"
SIZE = 20 * 1024 * 1024


def blob_dir(broker: BrokerProcess) -> Path:
    return Path(f"{broker.db}.blobs")


def make_file(where: Path, size: int, name: str = "payload.bin") -> Path:
    return sharekit.make_file(where, size, name, MARKER)


def share(daemon: DaemonHandle, body: dict[str, Any], timeout: float = 300) -> Any:
    return daemon.uds(timeout=timeout).request("POST", "/v1/file/share", body)


def get(daemon: DaemonHandle, **query: str) -> Any:
    return daemon.uds(timeout=300).request("GET", "/v1/file/get?" + urlencode(query))


def file_message(daemon: DaemonHandle) -> dict[str, Any] | None:
    return next((m for m in inbox(daemon) if m.get("file")), None)


def test_20_mb_round_trip_survives_a_broker_kill_9_mid_upload(pair: Mesh2) -> None:
    source = make_file(pair.alice.config_dir, SIZE)
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(share(pair.alice, {
        "path": str(source), "to": pair.bob_key, "message": "the build log"})))
    thread.start()

    def partly_uploaded() -> bool:
        files = list(blob_dir(pair.broker).glob("*"))
        return bool(files) and 2_000_000 < files[0].stat().st_size < SIZE

    wait_for(partly_uploaded, timeout=60, interval=0.002)
    pair.broker.kill9()
    held = max(f.stat().st_size for f in blob_dir(pair.broker).glob("*"))
    pair.broker.start()
    thread.join(timeout=300)
    [answer] = answers
    assert answer.status == 202, answer.body
    body = answer.body
    assert body["file"]["sha256"] == sha256(source)
    # It resumed from what the broker had on disk, not from zero.
    assert body["upload"]["resumed_at"] and body["upload"]["resumed_at"][0] >= held > 0
    assert body["upload"]["bytes_sent"] < body["upload"]["bytes"] + held
    message = wait_for(lambda: file_message(pair.bob), timeout=60)
    assert message["body"] == "the build log"
    assert message["file"] == body["file"]
    assert "key" not in message["file"]
    # The download resumes across a broker kill -9 too.
    gets: list[Any] = []
    thread = threading.Thread(target=lambda: gets.append(get(pair.bob, id=body["file"]["id"])))
    thread.start()

    def partly_downloaded() -> bool:
        parts = list((pair.bob.config_dir / "downloads").glob("*/.*.part"))
        return bool(parts) and 2_000_000 < parts[0].stat().st_size < SIZE

    wait_for(partly_downloaded, timeout=60, interval=0.002)
    pair.broker.kill9()
    pair.broker.start()
    thread.join(timeout=300)
    [got] = gets
    assert got.status == 200, got.body
    out = Path(got.body["path"])
    assert list(out.parent.glob(".*.part")) == []
    assert out.is_relative_to(pair.bob.config_dir / "downloads")
    assert (sha256(out), oct(out.stat().st_mode & 0o777)) == (sha256(source), "0o600")
    assert out.name == "payload.bin"
    # The broker only ever held ciphertext.
    for stored in blob_dir(pair.broker).glob("*"):
        assert MARKER not in stored.read_bytes()
    listed = pair.bob.uds().call("GET", "/v1/file/list")["files"]
    assert [(f["id"], f["direction"], f["peer_pubkey"]) for f in listed] == [
        (body["file"]["id"], "in", pair.alice_key)]
    mine = pair.alice.uds().call("GET", "/v1/file/list")["files"]
    assert [(f["id"], f["direction"]) for f in mine] == [(body["file"]["id"], "out")]


def test_oversize_is_413_and_nothing_is_stored() -> None:
    m = mesh2("--max-file-bytes", "1000000")
    try:
        source = make_file(m.alice.config_dir, 2_000_000)
        answer = share(m.alice, {"path": str(source), "to": m.bob_key})
        assert (answer.status, answer.body["error"], answer.body["limit"]) == (
            413, "payload_too_large", 1_000_000)
        assert m.broker.query("SELECT count(*) FROM blob") == [(0,)]
        assert not blob_dir(m.broker).exists() or list(blob_dir(m.broker).iterdir()) == []
        assert m.alice.outbox() == []
        assert m.alice.uds().call("GET", "/v1/file/list")["files"] == []
    finally:
        m.cleanup()


def test_bad_input_and_out_outside_the_downloads_dir_are_refused(pair: Mesh2) -> None:
    source = make_file(pair.alice.config_dir, 300_000, "notes.txt")
    for body, status, code in [
        ({"path": str(source)}, 400, "invalid_request"),
        ({"path": str(source), "to": pair.bob_key, "color": 1}, 400, "invalid_request"),
        ({"path": "notes.txt", "to": pair.bob_key}, 400, "invalid_request"),
        ({"path": str(source), "to": pair.bob_key, "message": 5}, 400, "invalid_request"),
        ({"path": str(source.parent), "to": pair.bob_key}, 400, "invalid_request"),
        ({"path": str(source) + ".missing", "to": pair.bob_key}, 404, "path_not_found"),
        ({"path": str(source), "to": "#news"}, 404, "destination_not_found"),  # no such topic
        ({"path": str(source), "to": "@ops"}, 422, "file_destination_unsupported"),
        ({"path": str(source), "to": "*"}, 422, "file_destination_unsupported"),
        ({"path": str(source), "to": pair.bob_key, "mesh": "nope"}, 422, "unknown_mesh"),
    ]:
        answer = share(pair.alice, body)
        assert (answer.status, answer.body["error"]) == (status, code), (body, answer.body)
    assert pair.alice.outbox() == []
    shared = share(pair.alice, {"path": str(source), "to": pair.bob_key})
    assert shared.status == 202, shared.body
    file_id = shared.body["file"]["id"]
    wait_for(lambda: file_message(pair.bob))
    for query, status, code in [
        ({"id": file_id, "out": "/tmp/evil.txt"}, 403, "path_not_allowed"),
        ({"id": file_id, "out": "../../evil.txt"}, 403, "path_not_allowed"),
        ({"id": file_id, "extra": "1"}, 400, "invalid_request"),
        ({"id": "../../etc/passwd"}, 400, "invalid_request"),
        ({"id": "0" * 26}, 404, "file_not_found"),
    ]:
        answer = get(pair.bob, **query)
        assert (answer.status, answer.body["error"]) == (status, code), (query, answer.body)
    assert not Path("/tmp/evil.txt").exists()
    inside = get(pair.bob, id=file_id, out="kept/notes.txt")
    assert inside.status == 200, inside.body
    assert Path(inside.body["path"]) == (pair.bob.config_dir / "downloads" / "kept"
                                         / "notes.txt").resolve()
    assert sha256(Path(inside.body["path"])) == sha256(source)
    # The same client_message_id again: the same file, one message.
    again = share(pair.alice, {"path": str(source), "to": pair.bob_key,
                               "client_message_id": shared.body["client_message_id"]})
    assert again.status == 202, again.body
    assert again.body["file"] == shared.body["file"]
    assert again.body["upload"]["bytes_sent"] == 0


def test_cli_share_list_get_with_json(pair: Mesh2, tmp_path: Path) -> None:
    source = make_file(tmp_path, 500_000, "report.pdf")
    shared = cli(pair.alice.env, "file", "share", str(source), pair.bob_key, "-m", "hi",
                 "--json")
    assert shared.returncode == 0, shared.stderr
    info = json.loads(shared.stdout)["file"]
    wait_for(lambda: file_message(pair.bob))
    listed = cli(pair.bob.env, "file", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [f["id"] for f in json.loads(listed.stdout)["files"]] == [info["id"]]
    out = tmp_path / "copy.pdf"
    got = cli(pair.bob.env, "file", "get", info["id"], "--out", str(out), "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["path"] == str(out.resolve())
    assert sha256(out) == sha256(source) == info["sha256"]
    again = cli(pair.bob.env, "file", "get", info["id"], "--out", str(out), "--json")
    assert again.returncode == 2, again.stdout  # exists: refused without --force
    missing = cli(pair.bob.env, "file", "get", "0" * 26, "--json")
    assert missing.returncode != 0
    assert json.loads(missing.stdout or missing.stderr)["error"] == "file_not_found"
