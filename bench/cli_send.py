"""Wall time of ``claudemesh send`` through a running daemon (issue 5's CLI target).

What is measured
    A real broker and a real daemon (alice) are started in a fresh directory; bob joins
    the mesh (no daemon needed: the broker queues for him). Each run executes
    ``claudemesh send <bob's pubkey> <text> --json`` as a new process, exactly as a script
    or hook would, and times it from spawn to exit. The command probes the daemon, posts
    the send, and waits until the broker has accepted it ("delivered"), so the figure is
    the whole user-visible path. For reference the script also times a bare interpreter
    (``python -c pass``) and ``import claudemesh.cli.main``, and reads the import's
    cumulative time from ``-X importtime``.

Run::

    .venv/bin/python bench/cli_send.py [--runs 20] [--json]

Target: median <= 150 ms on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lib.procs import Broker, Member
from _lib.stats import spread

PY = sys.executable
TARGET_MS = 150.0


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "claudemesh", *args], env=env, capture_output=True,
                          text=True, check=False, timeout=60)


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        times.append((time.perf_counter() - started) * 1000)
        if result.returncode != 0:
            raise SystemExit(f"{argv[-3:]} failed: {result.stderr or result.stdout}")
    return times


def import_time_ms(env: dict[str, str]) -> float:
    out = subprocess.run([PY, "-X", "importtime", "-c", "import claudemesh.cli.main"], env=env,
                         capture_output=True, text=True, check=True).stderr
    last = [line for line in out.splitlines() if line.rstrip().endswith("claudemesh.cli.main")]
    return int(last[-1].split("|")[1]) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cmc", dir="/tmp"))
    broker = Broker(root)
    alice, bob = Member("alice", root / "a"), Member("bob", root / "b")
    try:
        broker.start()
        invite = broker.create_mesh("bench", max_uses=10)
        for member in (alice, bob):
            member.join(invite)
        alice.start()
        env, bob_key = alice.env, bob.pubkey
        warm = run(env, "send", bob_key, "warm-up", "--json")
        assert warm.returncode == 0, warm.stderr
        baseline = timed([PY, "-c", "pass"], env, args.runs)
        imports = timed([PY, "-c", "import claudemesh.cli.main"], env, args.runs)
        sends = timed([PY, "-m", "claudemesh", "send", bob_key, "bench message", "--json"],
                      env, args.runs)
        last = json.loads(run(env, "send", bob_key, "last", "--json").stdout)
        figures: dict[str, Any] = {
            "runs": args.runs, "python_startup_ms": spread(baseline),
            "import_cli_ms": spread(imports), "import_cli_cumulative_ms": import_time_ms(env),
            "send_wall_ms": spread(sends), "last_status": last["status"],
            "target_ms": TARGET_MS,
            "met": spread(sends)["median"] <= TARGET_MS,
        }
    finally:
        alice.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    s = figures["send_wall_ms"]
    print(f"python {sys.version.split()[0]}; {args.runs} runs each")
    print(f"python -c pass:            median {figures['python_startup_ms']['median']:.1f} ms")
    print(f"import claudemesh.cli.main: median {figures['import_cli_ms']['median']:.1f} ms"
          f" (process), {figures['import_cli_cumulative_ms']:.1f} ms cumulative import time")
    print(f"claudemesh send (via daemon, until the broker accepted it, status"
          f" {figures['last_status']}): median {s['median']:.1f} ms, p90 {s['p90']:.1f},"
          f" min {s['min']:.1f}, max {s['max']:.1f}")
    print(f"target median <= {TARGET_MS:.0f} ms: {'met' if figures['met'] else 'MISSED'}")
    if args.json:
        print(json.dumps(figures))
    return 0 if figures["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
