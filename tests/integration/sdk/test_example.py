"""docs/sdk.md's runnable example, run as a user would, against a real mesh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from claudemesh.sdk import Client
from meshkit import Mesh2, wait_for

EXAMPLE = Path(__file__).parents[3] / "examples" / "sdk_quickstart.py"


def test_the_quickstart_sends_gets_a_stored_receipt_and_a_reply(pair: Mesh2) -> None:
    """1. Run the example as alice, to bob.
    2. As bob, wait for its DM and answer the address it gives (alice/quickstart).
    3. The example reports the delivery, prints the reply, marks it seen, exits 0."""
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "bob", "ping from the example",
                             "--reply-within", "30"], env=pair.alice.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        bob = Client(pair.bob.paths)
        [item] = wait_for(lambda: [i for i in bob.inbox().items
                                   if i.body == "ping from the example"], timeout=30)
        assert (item.from_session, item.reply_to_address) == ("quickstart", "alice/quickstart")
        bob.send(item.reply_to_address or "", "pong")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith("daemon ") and lines[0].endswith("meshes: demo")
    assert lines[1] == "session quickstart: replies reach alice/quickstart"
    assert "peer bob: online" in lines
    assert any(line.startswith("sent ") and line.endswith(": queued") for line in lines)
    assert "delivery: stored" in lines or "delivery: surfaced" in lines
    assert "reply from bob: pong" in lines
    assert lines[-2].startswith("marked seen: [") and lines[-1] == "session ended"
    assert Client(pair.alice.paths).sessions() == []


def test_the_quickstart_starts_the_daemon_when_none_runs(pair: Mesh2) -> None:
    pair.alice.stop()
    result = subprocess.run([sys.executable, str(EXAMPLE), "bob", "--reply-within", "0.5"],
                            env=pair.alice.env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[-2:] == ["no reply within 0.5s", "session ended"]
    pid = Client(pair.alice.paths).version().pid
    pair.alice.info = {"pid": pid}
    wait_for(lambda: [i for i in Client(pair.bob.paths).inbox().items
                      if i.body == "hello from the claudemesh SDK"])
