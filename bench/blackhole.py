"""Recovery after a network partition: how long after the network heals the backlog drains.

Alice's daemon reaches the broker through the tests' fault proxy (tests/faultproxy.py);
bob's connects directly. After a warm-up, the proxy partitions alice (her open
connection freezes in both directions and new ones are held: ``HalfOpen`` +
``Blackhole``) for ``--partition-s`` seconds while alice keeps sending ``--rate``
messages per second (each accepted into her outbox, 202). Then the network heals and we
time until the last of them is in bob's inbox. Issue 14's target: within 5 s of healing.

Each run is done twice in the same process: with the daemon's default keepalive (30 s
ping + 45 s timeout: a 30 s partition is shorter than the liveness bound, so the frozen
connection simply resumes) and with a short one (``--short-keepalive``, default 2 s + 3
s: the link is cut during the partition and must reconnect, paying its backoff). Figures
are medians over ``--runs``.

Run::

    .venv/bin/python bench/blackhole.py                   # 30 s partitions, 3 runs
    .venv/bin/python bench/blackhole.py --partition-s 10 --runs 1 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _lib.procs import Broker, Member
from _lib.stats import median
from _lib.uds import Connection, get_json
from faultproxy import Blackhole, FaultProxy, HalfOpen

TARGET_S: Final = 5.0
POLL_S: Final = 0.02


@dataclass
class Run:
    keepalive: str
    sent: int = 0
    during_partition: int = 0
    drained_after_heal_s: float | None = None
    link_cut: bool = False


@dataclass
class Report:
    partition_s: float
    rate: float
    runs: list[Run] = field(default_factory=list)

    def medians(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for kind in ("default", "short"):
            values = [r.drained_after_heal_s for r in self.runs
                      if r.keepalive == kind and r.drained_after_heal_s is not None]
            out[kind] = median(values) if values else None
        return out


def _body(to: str, cmid: str) -> bytes:
    return json.dumps({"to": to, "message": f"blackhole {cmid}",
                       "client_message_id": cmid}).encode()


async def _inbox_ids(member: Member) -> set[str]:
    ids: set[str] = set()
    cursor = ""
    while True:
        page = await get_json(member.sock, f"/v1/inbox?limit=500{cursor}")
        ids |= {str(item["client_message_id"]) for item in page["items"]}
        if not page.get("next_cursor"):
            return ids
        cursor = f"&cursor={page['next_cursor']}"


async def _link(member: Member) -> str:
    return str((await get_json(member.sock, "/v1/health"))["meshes"][0]["link"])


async def _wait(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not done within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


async def _measure(alice: Member, bob: Member, proxy: FaultProxy, run: Run,
                   args: argparse.Namespace) -> None:
    """Warm up, partition while sending, heal, and time the drain (fills ``run``)."""
    async def opened() -> bool:
        return await _link(alice) == "open" and await _link(bob) == "open"

    await _wait(opened, 15, "links open")
    conn = Connection(alice.sock)
    expected: set[str] = set()

    async def send(cmid: str) -> bool:
        status, _ = await conn.request(b"POST", b"/v1/send", _body(bob.pubkey, cmid))
        if status == 202:
            expected.add(cmid)
        return status == 202

    async def drained() -> bool:
        return expected <= await _inbox_ids(bob)

    try:
        tag = f"{run.keepalive}-{int(time.time() * 1000)}"
        for n in range(5):
            if not await send(f"w-{tag}-{n}"):
                raise SystemExit("warm-up send refused")
        await _wait(drained, 15, "warm-up")
        proxy.set(HalfOpen(), Blackhole())
        start = time.monotonic()
        n = 0
        while time.monotonic() < start + args.partition_s:
            run.during_partition += await send(f"p-{tag}-{n}")
            n += 1
            run.link_cut = run.link_cut or await _link(alice) != "open"
            await asyncio.sleep(max(0.0, start + n / args.rate - time.monotonic()))
        proxy.clear()
        healed = time.monotonic()
        await _wait(drained, 120, "drain after heal")
        run.drained_after_heal_s = time.monotonic() - healed
        run.sent = len(expected)
    finally:
        conn.close()


def through(member: Member, url: str) -> None:
    path = member.config_dir / "config.json"
    config = json.loads(path.read_text())
    for mesh in config["meshes"]:
        mesh["broker_url"] = url
    path.write_text(json.dumps(config))


def one_run(root: Path, keepalive: str, args: argparse.Namespace) -> Run:
    broker = Broker(root / "broker")
    (root / "broker").mkdir(parents=True)
    alice, bob = Member("alice", root / "a"), Member("bob", root / "b")
    run = Run(keepalive)
    try:
        broker.start()
        invite = broker.create_mesh("demo", max_uses=10)
        alice.join(invite)
        bob.join(invite)
        proxy = FaultProxy(("127.0.0.1", broker.port)).start()
        try:
            through(alice, proxy.url())
            flags = () if keepalive == "default" else (
                "--ping-interval", str(args.short_ping),
                "--ping-timeout", str(args.short_ping_timeout))
            alice.start(*flags)
            bob.start()
            asyncio.run(_measure(alice, bob, proxy, run, args))
        finally:
            proxy.clear()
            alice.stop()
            bob.stop()
            proxy.stop()
    finally:
        broker.stop()
    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--partition-s", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=50.0, help="sends per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--short-ping", type=float, default=2.0)
    parser.add_argument("--short-ping-timeout", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(args.partition_s, args.rate)
    out = sys.stderr if args.json else sys.stdout
    for n in range(args.runs):
        for keepalive in ("default", "short"):
            root = Path(tempfile.mkdtemp(prefix="cmbh", dir="/tmp"))
            try:
                run = one_run(root, keepalive, args)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            report.runs.append(run)
            print(f"run {n + 1} {keepalive:<7} sent {run.sent} ({run.during_partition} during"
                  f" the {args.partition_s:g} s partition), link cut: {run.link_cut},"
                  f" drained {run.drained_after_heal_s:.2f} s after healing", file=out,
                  flush=True)
    for kind, value in report.medians().items():
        verdict = "met" if value is not None and value <= TARGET_S else "MISSED"
        print(f"median drain after healing ({kind} keepalive): "
              f"{'n/a' if value is None else f'{value:.2f} s'}"
              f" (target <= {TARGET_S:g} s: {verdict})", file=out)
    if args.json:
        print(json.dumps({**asdict(report), "medians": report.medians()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
