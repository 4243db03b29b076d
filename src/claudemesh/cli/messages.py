"""``claudemesh inbox | peers | profile | events``: read and act through the daemon."""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

import click

from claudemesh.cli.common import client, current_paths, json_option
from claudemesh.cli.output import PRINTER, format_table
from claudemesh.errors import DaemonUnreachable, InvalidRequest

__all__ = ["events", "format_inbox", "format_peers", "inbox", "parse_sse", "peers", "profile"]


def _query(**params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, False)}
    return ("?" + urllib.parse.urlencode(kept)) if kept else ""


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
    path = "/v1/inbox" + _query(mesh=mesh, **{"from": sender}, topic=topic, since=since,
                                limit=limit, cursor=cursor, order="asc" if oldest_first else None)
    page = client(current_paths()).call("GET", path)
    PRINTER.result(page, format_inbox(page["items"], page.get("next_cursor")))
    return 0


def format_inbox(items: list[dict[str, Any]], next_cursor: str | None) -> str:
    if not items:
        return "inbox is empty"
    rows = [(i["seq"], i["received_at"], i["mesh"], i["sender_name"],
             i["destination"] if i["topic"] else "(dm)",
             _one_line(i["body"] if i["body"] is not None else f"[{i['undecryptable']}]"))
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
    data = client(current_paths()).call("GET", "/v1/peers" + _query(mesh=mesh))
    PRINTER.result(data, format_peers(data["peers"], data.get("unavailable", [])))
    return 0


def format_peers(listed: list[dict[str, Any]], unavailable: list[str]) -> str:
    rows = [(p["mesh"], p["display_name"], "online" if p.get("online") else "offline",
             p.get("status"), _one_line(p.get("summary") or "", 40), p["pubkey"][:16] + "…")
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
    body: dict[str, Any] = {k: v for k, v in {
        "mesh": mesh, "summary": summary, "status": status, "visible": visible,
        "avatar": avatar, "title": title, "bio": bio,
        "capabilities": list(capabilities) or None}.items() if v is not None}
    if set(body) <= {"mesh"}:
        raise InvalidRequest("give at least one of --summary, --status, --visible/--hidden,"
                             " --avatar, --title, --bio, --capability")
    result = client(current_paths()).call("POST", "/v1/profile", body)
    PRINTER.result(result, f"profile updated in {result['mesh']}: {', '.join(result['applied'])}")
    return 0


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str | None, str]]:
    """SSE lines -> (event, id, data) triples; comments and unknown fields are skipped."""
    event: str = "message"
    ident: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event, ident, "\n".join(data)
            event, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                ident = value
            elif name == "data":
                data.append(value)


@click.command()
@click.option("--last-event-id", help="Replay messages after this event id first.")
@click.option("--no-reconnect", is_flag=True, help="Stop when the stream ends.")
@json_option
def events(last_event_id: str | None, no_reconnect: bool) -> int:
    """Stream events as NDJSON: {"event", "id", "data"} per line, until Ctrl-C.

    After a disconnect it reconnects and resumes from the last message id, so no message
    is missed; peer and status events are live only.
    """
    api = client(current_paths())
    last = last_event_id
    while True:
        headers = {"Last-Event-ID": last} if last else {}
        try:
            for kind, ident, data in parse_sse(api.stream_lines("/v1/events", headers)):
                if ident is not None:
                    last = ident
                sys.stdout.write(json.dumps({"event": kind, "id": ident,
                                             "data": json.loads(data)}) + "\n")
                sys.stdout.flush()
        except DaemonUnreachable as exc:
            if no_reconnect:
                raise
            sys.stderr.write(f"events: {exc.detail}; reconnecting\n")
        if no_reconnect:
            return 0
        time.sleep(1.0)
