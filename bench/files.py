"""File throughput through the broker on loopback (issue 15): share, then get.

What is measured
    One broker (``claudemesh broker up``, fresh SQLite file, blobs in ``<db>.blobs``), one
    mesh, alice and bob each with a real daemon (bench/_lib/procs.py). A file of
    ``--size-mb`` random MiB is written once under the run's temp directory. Each run:

    * share: ``POST /v1/file/share`` on alice's socket, timed from the request to its 202
      (read, encrypt in 128 KiB secretbox chunks, upload with 8 ``blob_put`` in flight,
      each fsynced by the broker, then the reference DM queued);
    * delivery: until bob's ``GET /v1/inbox`` shows the message carrying the file
      (polled every 10 ms; reported, not part of the throughput);
    * get: ``GET /v1/file/get?id=`` on bob's socket, timed to its 200 (fetch with 8
      ``blob_get`` in flight, decrypt, write a temp file, fsync, check size and sha256,
      rename into the downloads directory). The file is deleted after each run.

    MB/s is the plaintext size (MiB) over each phase's wall time; runs -> median (and
    min/max). CPU seconds of alice, bob and the broker over all runs show which one is
    the bottleneck. All processes share the machine with this client.

    .venv/bin/python bench/files.py [--size-mb 32] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _lib.procs import Broker, Member
from _lib.procsample import process_cpu_s
from _lib.stats import median
from _lib.uds import Connection

MIB = 1024 * 1024


async def _call(sock: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = Connection(sock)
    try:
        status, data = await conn.request(method.encode(), path.encode(),
                                          b"" if body is None else json.dumps(body).encode())
    finally:
        conn.close()
    return status, json.loads(data) if data else None


async def _wait_file(bob: Member, file_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, page = await _call(bob.sock, "GET", "/v1/inbox?limit=20")
        if any((m.get("file") or {}).get("id") == file_id for m in page["items"]):
            return
        await asyncio.sleep(0.01)
    raise SystemExit(f"bob never saw file {file_id}")


async def _run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    broker = Broker(root / "broker")
    broker.root.mkdir()
    broker.start()
    alice, bob = Member("alice", root / "alice"), Member("bob", root / "bob")
    try:
        invite = broker.create_mesh("bench", max_uses=10)
        for member in (alice, bob):
            member.join(invite)
            member.start()
        source = root / "payload.bin"
        with source.open("wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(MIB))
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        cpu_before = {n: process_cpu_s(p) for n, p in
                      (("alice", alice.pid), ("bob", bob.pid), ("broker", broker.pid))}
        share_s, deliver_s, get_s = [], [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            status, shared = await _call(alice.sock, "POST", "/v1/file/share",
                                         {"path": str(source), "to": bob.pubkey})
            t1 = time.perf_counter()
            if status != 202:
                raise SystemExit(f"share failed: {status} {shared}")
            file_id = shared["file"]["id"]
            await _wait_file(bob, file_id)
            t2 = time.perf_counter()
            status, got = await _call(bob.sock, "GET", f"/v1/file/get?id={quote(file_id)}")
            t3 = time.perf_counter()
            if status != 200 or got["sha256"] != digest:
                raise SystemExit(f"get failed: {status} {got}")
            Path(got["path"]).unlink()
            share_s.append(t1 - t0)
            deliver_s.append(t2 - t1)
            get_s.append(t3 - t2)
        cpu = {n: round(process_cpu_s(p) - cpu_before[n], 2) for n, p in
               (("alice", alice.pid), ("bob", bob.pid), ("broker", broker.pid))}
    finally:
        for member in (alice, bob):
            with contextlib.suppress(Exception):
                member.stop()
        broker.stop()

    def rate(seconds: list[float]) -> dict[str, float]:
        rates = sorted(args.size_mb / s for s in seconds)
        return {"median": round(median(rates), 1), "min": round(rates[0], 1),
                "max": round(rates[-1], 1)}

    return {"size_mib": args.size_mb, "runs": args.runs,
            "share_mib_s": rate(share_s), "get_mib_s": rate(get_s),
            "round_trip_mib_s": rate([a + b for a, b in zip(share_s, get_s, strict=True)]),
            "delivery_after_share_ms": round(median(deliver_s) * 1000, 1),
            "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cmbf"))
    try:
        result = asyncio.run(_run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"file {result['size_mib']} MiB x {result['runs']} runs (median, min-max MiB/s)")
    for key in ("share_mib_s", "get_mib_s", "round_trip_mib_s"):
        r = result[key]
        print(f"  {key[:-6]:<11} {r['median']:>7} MiB/s  ({r['min']}-{r['max']})")
    print(f"  delivery after share: {result['delivery_after_share_ms']} ms;"
          f" cpu s: {result['cpu_s']}")


if __name__ == "__main__":
    main()
