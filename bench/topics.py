"""Topic fan-out with end-to-end encryption: deliveries/s, encrypted vs plain, same run.

What is measured
    A real broker (``claudemesh broker up``, fresh SQLite file under ``/tmp``, rate limit
    off) with one mesh; one sender and ``--receivers`` members (default 100) join through
    the real ``join`` exchange, are made invisible (no presence traffic) and subscribe to
    two topics: ``plain`` and ``sealed``. The sender then starts epoch 1 of ``sealed``
    the way a daemon does: ``topic_keys``, a random 32-byte key sealed with crypto_box to
    every subscriber, ``topic_epoch``.

    Each run is two fan-outs on the same broker, in alternating order: ``--messages``
    posts (default 500) to ``#plain`` as ``plain`` bodies, and as many to ``#sealed`` as
    ``topic_box`` bodies (crypto_secretbox under the epoch key, sealed by the sender per
    post). The receivers (split over ``--recv-procs`` processes) read every push and ack
    in batches, as ``bench/broker.py`` scenario B does; for ``#sealed`` they also open
    each post: the push's own ``epoch_key`` is opened once per epoch (crypto_box), then
    every body with secretbox, so the figure is end to end. Reported per run and as the
    median of ``--runs`` runs (default 3): deliveries/s of each path (unique deliveries
    over the wall time from the first send to the last push), and encrypted / plain.

Run::

    .venv/bin/python bench/topics.py [--runs 3] [--messages 500] [--receivers 100]
        [--recv-procs 1] [--pipeline 8] [--json]

Exit status 1 when a delivery is missing, a post does not open, or a send was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from websockets.asyncio.client import ClientConnection

from claudemesh.crypto import (
    BoxedBody,
    box_decrypt,
    box_encrypt,
    new_topic_key,
    secretbox_decrypt,
    secretbox_encrypt,
)
from claudemesh.protocol.topic_epochs import key_from_plaintext, key_plaintext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lib.children import Children, split
from _lib.procs import Broker
from _lib.stats import median
from broker import (
    join_members,
    make_invisible,
    open_session,
    read_pushes,
    request,
    subscribe_and_leave,
)

PLAIN: Final = "plain"
SEALED: Final = "sealed"
REPLY_TIMEOUT_S: Final = 30.0


def body_of(topic: str, text: str, key: tuple[int, bytes] | None) -> dict[str, Any]:
    if key is None:
        return {"kind": "plain", "text": text}
    boxed = secretbox_encrypt(text.encode(), key[1])
    return {"kind": "topic_box", "epoch": key[0], "nonce": boxed.nonce,
            "ciphertext": boxed.ciphertext}


async def send_all(ws: ClientConnection, topic: str, messages: int, pipeline: int,
                   key: tuple[int, bytes] | None) -> tuple[float, int]:
    """``messages`` posts, ``pipeline`` in flight; (first write's perf_counter, refusals)."""
    slots = asyncio.Semaphore(pipeline)
    refused = 0
    answered = 0
    done = asyncio.Event()
    tag = secrets.token_hex(3)

    async def reader() -> None:
        nonlocal refused, answered
        while answered < messages:
            frame = json.loads(await ws.recv())
            if frame.get("type") != "send_result":
                continue
            answered += 1
            refused += frame.get("code") != 201
            slots.release()
        done.set()

    task = asyncio.create_task(reader())
    started = time.perf_counter()
    for n in range(messages):
        await slots.acquire()
        text = f"bench {topic} post {n}"
        await ws.send(json.dumps({
            "type": "send", "req_id": f"r{n}", "client_message_id": f"{tag}-{topic}-{n}",
            "envelope_version": "1", "destination_kind": "topic", "destination_ref": topic,
            "priority": "next", "reply_to": None, "meta": None,
            "body_hash": hashlib.sha256(text.encode()).hexdigest(),
            "body": body_of(topic, text, key)}))
    await asyncio.wait_for(done.wait(), REPLY_TIMEOUT_S)
    await task
    return started, refused


def _open(frame: dict[str, Any], member: dict[str, str], keys: dict[int, bytes]) -> bool:
    body = frame["body"]
    if body["kind"] != "topic_box":
        return True
    epoch = int(body["epoch"])
    if epoch not in keys:
        sealed = frame.get("epoch_key")
        if not sealed:
            return False
        raw = box_decrypt(BoxedBody(sealed["nonce"], sealed["ciphertext"]),
                          recipient_secret_hex=member["secret_key"],
                          sender_pubkey_hex=sealed["sealer_pubkey"])
        key = key_from_plaintext(raw, member["mesh_id"], frame["destination_ref"], epoch)
        if key is None:
            return False
        keys[epoch] = key
    text = secretbox_decrypt(BoxedBody(body["nonce"], body["ciphertext"]), keys[epoch])
    return hashlib.sha256(text).hexdigest() == frame["body_hash"]


async def _receive(ws: ClientConnection, member: dict[str, str],
                   expected: int) -> tuple[int, float, int]:
    """(unique pushes, perf_counter of the last, posts that did not open)."""
    seen: set[str] = set()
    keys: dict[int, bytes] = {}
    last, failed = 0.0, 0

    def on_push(frame: dict[str, Any]) -> None:
        nonlocal last, failed
        if frame["client_message_id"] not in seen:
            seen.add(frame["client_message_id"])
            failed += not _open(frame, member, keys)
            last = time.perf_counter()

    await read_pushes(ws, lambda: len(seen) >= expected, on_push)
    return len(seen), last, failed


async def _receiver_child(job: dict[str, Any], barrier: Any) -> dict[str, Any]:
    conns = list(await asyncio.gather(*(open_session(job["url"], m) for m in job["members"])))
    try:
        await asyncio.to_thread(barrier.wait)  # ready
        await asyncio.to_thread(barrier.wait)  # go
        got = await asyncio.gather(*(_receive(ws, m, job["expected"])
                                     for ws, m in zip(conns, job["members"], strict=True)))
        return {"deliveries": sum(g[0] for g in got), "last": max(g[1] for g in got),
                "unopened": sum(g[2] for g in got)}
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


@dataclass(slots=True)
class Fanout:
    topic: str
    deliveries: int
    expected: int
    refused: int
    undecryptable: int
    wall_s: float
    deliveries_per_s: float


@dataclass(slots=True)
class Report:
    settings: dict[str, Any]
    runs: list[dict[str, Fanout]] = field(default_factory=list)

    def median_of(self, topic: str) -> float:
        return median(r[topic].deliveries_per_s for r in self.runs)

    @property
    def ratio(self) -> float:
        plain = self.median_of(PLAIN)
        return self.median_of(SEALED) / plain if plain else 0.0

    @property
    def ok(self) -> bool:
        return all(f.deliveries == f.expected and not f.refused and not f.undecryptable
                   for r in self.runs for f in r.values())


async def fanout(url: str, sender: dict[str, str], receivers: list[dict[str, str]], *,
                 topic: str, key: tuple[int, bytes] | None, args: argparse.Namespace) -> Fanout:
    jobs = [{"url": url, "members": g, "expected": args.messages}
            for g in split(receivers, args.recv_procs)]
    children = Children(_receiver_child, jobs)
    try:
        ws = await open_session(url, sender)
        try:
            await asyncio.to_thread(children.meet)
            await asyncio.to_thread(children.meet)
            started, refused = await send_all(ws, topic, args.messages, args.pipeline, key)
        finally:
            await ws.close()
        results = await asyncio.to_thread(children.results)
    finally:
        children.close()
    deliveries = sum(r["deliveries"] for r in results)
    wall = max(r["last"] for r in results) - started
    return Fanout(topic, deliveries, args.messages * len(receivers), refused,
                  sum(r["unopened"] for r in results), wall,
                  deliveries / wall if wall > 0 else 0.0)


async def start_epoch(url: str, sender: dict[str, str]) -> tuple[int, bytes]:
    """What a daemon does before its first post to an encrypted topic."""
    ws = await open_session(url, sender)
    try:
        state = await request(ws, {"type": "topic_keys", "topic": SEALED})
        key, epoch = new_topic_key(), int(state["current_epoch"]) + 1
        sealed = []
        for pubkey in state["subscribers"]:
            box = box_encrypt(key_plaintext(sender["mesh_id"], SEALED, epoch, key),
                              sender_secret_hex=sender["secret_key"], recipient_pubkey_hex=pubkey)
            sealed.append({"pubkey": pubkey, "nonce": box.nonce, "ciphertext": box.ciphertext})
        made = await request(ws, {"type": "topic_epoch", "topic": SEALED, "epoch": epoch,
                                  "membership_version": state["membership_version"],
                                  "keys": sealed})
        if made.get("type") != "result":
            raise RuntimeError(f"topic_epoch refused: {made}")
        return epoch, key
    finally:
        await ws.close()


async def measure(broker: Broker, report: Report, args: argparse.Namespace) -> None:
    invite = broker.create_mesh("bench", max_uses=args.receivers + 5)
    members = join_members(invite, ["sender", *(f"r{i}" for i in range(args.receivers))])
    sender, receivers = members[0], members[1:]
    await make_invisible(broker.url, members)
    for member in receivers:
        for topic in (PLAIN, SEALED):
            await subscribe_and_leave(broker.url, member, topic)
    key = await start_epoch(broker.url, sender)
    for n in range(args.runs):
        order = (PLAIN, SEALED) if n % 2 == 0 else (SEALED, PLAIN)
        run = {}
        for topic in order:
            run[topic] = await fanout(broker.url, sender, receivers, topic=topic,
                                      key=key if topic == SEALED else None, args=args)
        report.runs.append(run)
        print(f"run {n + 1}: plain {run[PLAIN].deliveries_per_s:,.0f}/s,"
              f" encrypted {run[SEALED].deliveries_per_s:,.0f}/s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--recv-procs", type=int, default=1)
    parser.add_argument("--pipeline", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.runs, args.messages, args.receivers, args.recv_procs, args.pipeline) < 1:
        parser.error("every count must be at least 1")
    report = Report({k: v for k, v in vars(args).items() if k != "json"})
    workdir = Path(tempfile.mkdtemp(prefix="cmbt", dir="/tmp"))
    broker = Broker(workdir)
    try:
        broker.start()
        asyncio.run(measure(broker, report, args))
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({**asdict(report), "median_plain_per_s": report.median_of(PLAIN),
                          "median_encrypted_per_s": report.median_of(SEALED),
                          "ratio": report.ratio, "ok": report.ok}, indent=2))
    else:
        print(f"fan-out to {args.receivers} subscribers, {args.messages} posts, median of"
              f" {args.runs} runs: plain {report.median_of(PLAIN):,.0f} deliveries/s,"
              f" encrypted {report.median_of(SEALED):,.0f} deliveries/s,"
              f" ratio {report.ratio:.2f}" + ("" if report.ok else "  (ERRORS)"))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
