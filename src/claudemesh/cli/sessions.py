"""``claudemesh sessions``: the agent sessions registered with this daemon."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from claudemesh.cli.common import client, current_paths, json_option
from claudemesh.cli.output import PRINTER, format_table

if TYPE_CHECKING:
    from claudemesh.sdk.sessions import Session

__all__ = ["format_sessions", "sessions"]


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def sessions(ctx: click.Context) -> int:
    """List the live sessions (each has its own address and unread messages)."""
    if ctx.invoked_subcommand is not None:
        return 0
    listed = client(current_paths()).sessions()
    PRINTER.result({"sessions": [s.raw for s in listed]}, format_sessions(listed))
    return 0


@sessions.command("end")
@click.argument("session_id")
@json_option
def end(session_id: str) -> int:
    """End a session now (its read state is kept under its name)."""
    client(current_paths()).end_session(session_id)
    PRINTER.result({"session_id": session_id, "deleted": True}, f"session {session_id} ended")
    return 0


def format_sessions(items: list[Session]) -> str:
    if not items:
        return ("no sessions; an agent registers one through `claudemesh mcp` or the hooks"
                " (see `claudemesh setup claude-code`)")
    rows = [(s.name + (" *" if s.default else ""), s.address, s.harness, s.pid, s.unread,
             s.status, s.summary, s.session_id) for s in items]
    return format_table(["NAME", "ADDRESS", "HARNESS", "PID", "UNREAD", "STATUS", "SUMMARY",
                         "ID"], rows) + "\n(* default: bare DMs to you are filed for it)"
