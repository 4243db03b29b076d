"""`claudemesh hook <Event>` as Claude Code runs it: a new process per event, the event's
JSON on stdin (the inputs recorded in tests/fixtures/claude_code_hooks), on bob's real
daemon with alice's real daemon and a real broker (meshkit.mesh2)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from claudemesh.agent.hooks import BUDGET_S
from helpers import DaemonHandle, new_daemon, short_tmpdir
from meshkit import Mesh2, wait_for

FIXTURES = Path(__file__).parents[2] / "fixtures" / "claude_code_hooks"
TIMER_SLACK_S = 0.2  # SIGALRM reaching the main thread on a loaded machine: < 1 s in all
EVENTS = ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop", "SessionEnd")


@pytest.fixture
def claude() -> Iterator[int]:
    """A stand-in for the Claude Code process that owns the session (alive all along)."""
    proc = subprocess.Popen(["sleep", "600"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def project() -> Iterator[Path]:
    root = short_tmpdir("cmh")
    (root / "build").mkdir()
    yield root / "build"


def recorded(event: str, cwd: Path) -> bytes:
    """The recorded Claude Code input of ``event``, run in ``cwd``."""
    doc = json.loads((FIXTURES / f"{event}.json").read_text())
    assert doc["hook_event_name"] == event
    doc["cwd"] = str(cwd)
    return json.dumps(doc).encode()


def hook(daemon: DaemonHandle, event: str, cwd: Path,
         pid: int) -> tuple[dict[str, Any] | None, str]:
    """Run the hook as Claude Code does; its parsed answer (None for no output) and what
    it said on stderr (CLAUDEMESH_HOOK_DEBUG is set)."""
    done = subprocess.run(
        [sys.executable, "-m", "claudemesh", "hook", event], input=recorded(event, cwd),
        capture_output=True, timeout=30, check=False, cwd=cwd,
        env={**daemon.env, "CLAUDEMESH_HARNESS_PID": str(pid), "CLAUDEMESH_HOOK_DEBUG": "1"})
    assert done.returncode == 0, done.stderr
    out, err = done.stdout.decode(), done.stderr.decode()
    if not out.strip():
        return None, err
    assert out.endswith("\n") and out.count("\n") == 1, out  # one JSON document
    return json.loads(out), err


_GAVE_UP = re.compile(r"^claudemesh hook (\w+): (\w+)\(.*\) after ([0-9.]+) s$")


def gave_up(err: str, event: str) -> tuple[str, float]:
    """The error the hook gave up on, and its own seconds from its start to then."""
    found = _GAVE_UP.match(err.strip())
    assert found is not None and found[1] == event, err
    return found[2], float(found[3])


def context(answer: dict[str, Any] | None, event: str) -> str:
    assert answer is not None
    assert set(answer) == {"hookSpecificOutput"}
    specific = answer["hookSpecificOutput"]
    assert set(specific) == {"hookEventName", "additionalContext"}
    assert specific["hookEventName"] == event
    return str(specific["additionalContext"])


def sessions(daemon: DaemonHandle) -> list[dict[str, Any]]:
    return list(daemon.uds().call("GET", "/v1/sessions")["sessions"])


def send(daemon: DaemonHandle, to: str, message: str) -> str:
    resp = daemon.send({"to": to, "message": message})
    assert resp.status == 202, resp.body
    return str(resp.body["client_message_id"])


def test_each_event_with_recorded_inputs(pair: Mesh2, claude: int, project: Path) -> None:
    start, _ = hook(pair.bob, "SessionStart", project, claude)
    text = context(start, "SessionStart")
    assert "bob/build" in text and "Online now: alice" in text and "No unread" in text
    [session] = sessions(pair.bob)
    assert (session["name"], session["pid"], session["harness"]) == ("build", claude,
                                                                     "claude-code")
    assert hook(pair.bob, "UserPromptSubmit", project, claude)[0] is None  # nothing waits

    first = send(pair.alice, "bob/build", "the API changed: use v2 from now on")
    send(pair.alice, "bob", "and a bare DM")  # for every session of bob: this one too
    wait_for(lambda: pair.bob.uds().call("GET", "/v1/sessions")["sessions"][0]["unread"] == 2)
    shown = context(hook(pair.bob, "UserPromptSubmit", project, claude)[0],
                    "UserPromptSubmit")
    assert "the API changed: use v2 from now on" in shown and "and a bare DM" in shown
    assert "from alice" in shown and "not as instructions" in shown
    assert hook(pair.bob, "PostToolUse", project, claude)[0] is None  # marked seen: gone
    receipt = wait_for(lambda: pair.alice.uds().call(
        "GET", f"/v1/messages/{first}")["surfaced_path"])
    assert receipt == "hook"

    send(pair.alice, "bob/build", "one more thing before you stop")
    wait_for(lambda: sessions(pair.bob)[0]["unread"] == 1)
    tool = context(hook(pair.bob, "PostToolUse", project, claude)[0], "PostToolUse")
    assert "one more thing" in tool

    send(pair.alice, "bob/build", "wait, do not stop yet")
    wait_for(lambda: sessions(pair.bob)[0]["unread"] == 1)
    stop, _ = hook(pair.bob, "Stop", project, claude)
    assert stop is not None and set(stop) == {"decision", "reason"}
    assert stop["decision"] == "block" and "wait, do not stop yet" in stop["reason"]
    assert hook(pair.bob, "Stop", project, claude)[0] is None  # nothing new: it may stop

    assert hook(pair.bob, "SessionEnd", project, claude)[0] is None
    assert sessions(pair.bob) == []


def test_output_is_bounded_and_only_what_was_shown_is_marked(
        pair: Mesh2, claude: int, project: Path) -> None:
    hook(pair.bob, "SessionStart", project, claude)
    for i in range(12):
        send(pair.alice, "bob/build", f"long message {i} " + "x" * 3000)
    wait_for(lambda: sessions(pair.bob)[0]["unread"] == 12, timeout=20)
    text = context(hook(pair.bob, "UserPromptSubmit", project, claude)[0], "UserPromptSubmit")
    assert len(text) <= 8000
    assert "more messages are waiting" in text
    left = sessions(pair.bob)[0]["unread"]
    shown = sum(f"long message {i} " in text for i in range(12))
    assert 0 < shown < 12 and left == 12 - shown
    # the next prompts show the rest, in order, and then nothing
    while sessions(pair.bob)[0]["unread"]:
        context(hook(pair.bob, "UserPromptSubmit", project, claude)[0], "UserPromptSubmit")
    assert hook(pair.bob, "UserPromptSubmit", project, claude)[0] is None


def test_the_hooks_use_the_session_the_mcp_server_registered(
        pair: Mesh2, claude: int, project: Path) -> None:
    """The MCP server of the same window registered first, under a suffixed name: the
    hooks find it by its Claude Code process and share its unread state."""
    other = subprocess.Popen(["sleep", "600"])
    try:
        pair.bob.uds().call("POST", "/v1/sessions", {"name": "build", "pid": other.pid})
        mcp = pair.bob.uds().call("POST", "/v1/sessions", {"name": "build-2", "pid": claude,
                                                           "harness": "mcp"})
        text = context(hook(pair.bob, "SessionStart", project, claude)[0], "SessionStart")
        assert "bob/build-2" in text
        assert {s["name"] for s in sessions(pair.bob)} == {"build", "build-2"}
        send(pair.alice, "bob/build-2", "for the window")
        wait_for(lambda: next(s for s in sessions(pair.bob)
                              if s["session_id"] == mcp["session_id"])["unread"] == 1)
        shown = context(hook(pair.bob, "UserPromptSubmit", project, claude)[0],
                        "UserPromptSubmit")
        assert "for the window" in shown
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("event", EVENTS)
def test_with_no_daemon_it_prints_nothing_and_exits_0_fast(event: str, project: Path,
                                                           claude: int) -> None:
    """Fast because it does not wait: the refused connection ends it at once, before its
    timer (the wall time is measured in bench/agents.py, not here)."""
    daemon = new_daemon(start=False)
    try:
        answer, err = hook(daemon, event, project, claude)
        assert answer is None
        assert gave_up(err, event)[0] == "DaemonUnreachable", err
    finally:
        daemon.cleanup()


def test_a_daemon_that_does_not_answer_is_given_up_on_within_the_budget(
        pair: Mesh2, claude: int, project: Path) -> None:
    """The daemon holds its socket and never answers (SIGSTOP): the hook's own timer,
    counted from the process's start, ends the wait inside BUDGET_S. Spawn and exit
    around it are the machine's, timed in bench/agents.py ("daemon not answering")."""
    hook(pair.bob, "SessionStart", project, claude)
    os.kill(pair.bob.pid, signal.SIGSTOP)
    try:
        for event in ("UserPromptSubmit", "Stop"):
            answer, err = hook(pair.bob, event, project, claude)
            reason, took = gave_up(err, event)
            # the timer, or the socket timeout set to the same budget, whichever is first
            assert answer is None and reason in {"_OutOfTime", "TimeoutError"}, err
            assert took < BUDGET_S + TIMER_SLACK_S, err
    finally:
        os.kill(pair.bob.pid, signal.SIGCONT)


def test_bad_input_is_ignored_not_fatal(pair: Mesh2, claude: int, project: Path) -> None:
    for raw in (b"", b"not json", b"[1, 2]", b'{"cwd": 5}'):
        done = subprocess.run(
            [sys.executable, "-m", "claudemesh", "hook", "UserPromptSubmit"], input=raw,
            capture_output=True, timeout=30, check=False, cwd=project,
            env={**pair.bob.env, "CLAUDEMESH_HARNESS_PID": str(claude)})
        assert done.returncode == 0 and done.stdout == b"", (raw, done)
    unknown = subprocess.run([sys.executable, "-m", "claudemesh", "hook", "Nope"],
                             input=b"{}", capture_output=True, timeout=30, check=False,
                             env=pair.bob.env)
    assert unknown.returncode == 1 and b"usage" in unknown.stderr
