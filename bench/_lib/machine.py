"""How busy and how fast the shared machine is while a benchmark runs."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Final

REFERENCE_ROUNDS: Final = 20_000


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def reference_loop_us() -> float:
    """How fast this machine runs Python right now: microseconds per round of a fixed,
    single-threaded mix of what the system does per message (JSON both ways, sha256, dict
    and str work). The shared machine's speed drifts by tens of percent within an hour;
    this figure, taken with the system idle, says which kind of hour a run had."""
    frame = {"type": "send", "req_id": "17", "client_message_id": "bench-0001",
             "destination_ref": "ab" * 32, "body": {"nonce": "n" * 32, "ciphertext": "c" * 200}}
    started = time.process_time()
    for n in range(REFERENCE_ROUNDS):
        raw = json.dumps({**frame, "req_id": str(n)})
        doc = json.loads(raw)
        digest = hashlib.sha256(raw.encode()).hexdigest()
        doc["fingerprint"] = digest[:16] + doc["client_message_id"].upper()
    return (time.process_time() - started) * 1e6 / REFERENCE_ROUNDS
