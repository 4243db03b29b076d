"""The table of ``claudemesh sessions`` (pure formatter)."""

from __future__ import annotations

from typing import Any

from claudemesh.cli.output import format_table
from claudemesh.cli.sessions import format_sessions
from claudemesh.sdk import Session

HEADERS = ["NAME", "ADDRESS", "HARNESS", "PID", "UNREAD", "STATUS", "SUMMARY", "ID"]
FOOTER = "(* default: bare DMs to you are filed for it)"


def session(name: str, **fields: Any) -> Session:
    doc: dict[str, Any] = {"session_id": f"s-{name}", "name": name, "address": f"bob/{name}",
                           "addresses": [], "harness": "claude-code", "pid": 4242,
                           "default": False, "summary": None, "status": "idle", "unread": 0}
    return Session.from_wire({**doc, **fields})


def test_no_sessions_says_how_an_agent_gets_one() -> None:
    assert format_sessions([]) == (
        "no sessions; an agent registers one through `claudemesh mcp` or the hooks"
        " (see `claudemesh setup claude-code`)")


def test_the_default_session_is_starred_and_the_footer_says_what_that_means() -> None:
    items = [session("build", default=True, unread=3, summary="running tests"),
             session("script", harness=None, pid=None, address=None, status=None)]
    assert format_sessions(items) == format_table(HEADERS, [
        ("build *", "bob/build", "claude-code", 4242, 3, "idle", "running tests", "s-build"),
        ("script", None, None, None, 0, None, None, "s-script")]) + "\n" + FOOTER
