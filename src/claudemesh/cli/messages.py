"""``claudemesh inbox | peers | profile | events``: read and act through the daemon."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from claudemesh.cli.common import client, current_paths, json_option
from claudemesh.cli.output import PRINTER, format_table
from claudemesh.errors import ClaudemeshError, InvalidRequest

if TYPE_CHECKING:
    from claudemesh.sdk.inbox import InboxItem
    from claudemesh.sdk.peers import Peer

__all__ = ["events", "format_inbox", "format_peers", "inbox", "peers", "profile"]


@click.command()
@click.option("--mesh", help="Only this mesh.")
@click.option("--from", "sender", help="Only from this pubkey or display name.")
@click.option("--topic", help="Only this topic (#name, @group or *).")
@click.option("--since", help="Only received since this ISO time (e.g. 2026-11-26T15:00:00Z).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--cursor", help="Continue after the next_cursor of a previous page.")
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@json_option
def inbox(*, mesh: str | None, sender: str | None, topic: str | None, since: str | None,
          limit: int, cursor: str | None, oldest_first: bool) -> int:
    """Show received messages."""
    page = client(current_paths()).inbox(mesh=mesh, sender=sender, topic=topic, since=since,
                                         limit=limit, cursor=cursor,
                                         order="asc" if oldest_first else "desc")
    PRINTER.result(page.raw, format_inbox(page.items, page.next_cursor))
    return 0


def format_inbox(items: list[InboxItem], next_cursor: str | None) -> str:
    if not items:
        return "inbox is empty"
    rows = [(i.seq, i.received_at, i.mesh, i.sender_name,
             i.destination if i.topic else "(dm)",
             _one_line(i.body if i.body is not None else f"[{i.undecryptable}]"))
            for i in items]
    text = format_table(["SEQ", "RECEIVED", "MESH", "FROM", "TO", "MESSAGE"], rows)
    return text + (f"\nmore: --cursor {next_cursor}" if next_cursor else "")


def _one_line(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


@click.command()
@click.option("--mesh", help="Only this mesh.")
@json_option
def peers(mesh: str | None) -> int:
    """List the members of your meshes, live from the broker."""
    listed = client(current_paths()).peers(mesh)
    PRINTER.result(listed.raw, format_peers(listed.peers, listed.unavailable))
    return 0


def format_peers(listed: list[Peer], unavailable: list[str]) -> str:
    rows = [(p.mesh, p.display_name, "online" if p.online else "offline",
             p.status, _one_line(p.summary or "", 40), p.pubkey[:16] + "…")
            for p in listed]
    text = format_table(["MESH", "NAME", "PRESENCE", "STATUS", "SUMMARY", "PUBKEY"], rows)
    if unavailable:
        text += f"\nnot connected (peers unknown): {', '.join(unavailable)}"
    return text


@click.command()
@click.option("--mesh", help="The mesh (needed when several are joined).")
@click.option("--summary", help="What you are doing, in a line.")
@click.option("--status", type=click.Choice(["idle", "working", "dnd"]))
@click.option("--visible/--hidden", default=None, help="Show or hide yourself to peers.")
@click.option("--avatar")
@click.option("--title")
@click.option("--bio")
@click.option("--capability", "capabilities", multiple=True, help="Repeat for several.")
@json_option
def profile(*, mesh: str | None, summary: str | None, status: str | None, visible: bool | None,
            avatar: str | None, title: str | None, bio: str | None,
            capabilities: tuple[str, ...]) -> int:
    """Update your profile in a mesh; answered once the broker applied it."""
    fields: dict[str, Any] = {
        "summary": summary, "status": status, "visible": visible, "avatar": avatar,
        "title": title, "bio": bio, "capabilities": list(capabilities) or None}
    if all(v is None for v in fields.values()):
        raise InvalidRequest("give at least one of --summary, --status, --visible/--hidden,"
                             " --avatar, --title, --bio, --capability")
    result = client(current_paths()).set_profile(mesh=mesh, **fields)
    PRINTER.result(result, f"profile updated in {result['mesh']}: {', '.join(result['applied'])}")
    return 0


@click.command()
@click.option("--last-event-id", help="Replay messages after this event id first.")
@click.option("--no-reconnect", is_flag=True, help="Stop when the stream ends.")
@json_option
def events(last_event_id: str | None, no_reconnect: bool) -> int:
    """Stream events as NDJSON: {"event", "id", "data"} per line, until Ctrl-C.

    After a disconnect it reconnects and resumes from the last message id, so no message
    is missed; peer and status events are live only.
    """
    def say(failure: ClaudemeshError | None) -> None:
        if failure is not None:
            sys.stderr.write(f"events: {failure.detail}; reconnecting\n")

    stream = client(current_paths()).events(last_event_id=last_event_id,
                                            reconnect=not no_reconnect, on_reconnect=say)
    for event in stream:
        sys.stdout.write(json.dumps({"event": event.kind, "id": event.id,
                                     "data": event.data}) + "\n")
        sys.stdout.flush()
    return 0
