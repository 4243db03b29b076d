"""``claudemesh topic sub|unsub|list|post|history`` and ``claudemesh group join|leave|list``:
thin over the daemon's ``/v1/topic/*`` and ``/v1/group/*`` (through the SDK)."""

from __future__ import annotations

from typing import Any

import click

from claudemesh.cli.common import client, current_paths, json_option
from claudemesh.cli.output import PRINTER, format_table
from claudemesh.sdk import topics as api

__all__ = ["group", "topic"]

_mesh = click.option("--mesh", help="The mesh (needed when several are joined).")


@click.group()
def topic() -> None:
    """Subscribe to topics, post to them and read their history."""


@topic.command("sub")
@click.argument("name")
@_mesh
@click.option("--backfill", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Then file the newest N messages of the topic in the inbox.")
@json_option
def sub(name: str, mesh: str | None, backfill: int) -> int:
    """Subscribe to NAME (news or #news); it survives restarts of daemon and broker."""
    result = client(current_paths()).run(api.topic_subscribe(name, mesh=mesh,
                                                             backfill=backfill or None))
    text = (f"subscribed to #{result['topic']} in {result['mesh']}"
            + ("" if result["changed"] else " (already)"))
    if "backfill" in result:
        text += f"; {len(result['backfill']['items'])} earlier messages filed"
    PRINTER.result(result, text)
    return 0


@topic.command("unsub")
@click.argument("name")
@_mesh
@json_option
def unsub(name: str, mesh: str | None) -> int:
    """Unsubscribe from NAME."""
    result = client(current_paths()).run(api.topic_unsubscribe(name, mesh=mesh))
    PRINTER.result(result, f"unsubscribed from #{result['topic']} in {result['mesh']}"
                   + ("" if result["changed"] else " (was not subscribed)"))
    return 0


@topic.command("list")
@_mesh
@json_option
def list_topics(mesh: str | None) -> int:
    """The mesh's topics, with subscriber counts."""
    result = client(current_paths()).run(api.topic_list(mesh))
    rows = [(f"#{t['topic']}", t["subscribers"], "yes" if t["subscribed"] else "")
            for t in result["topics"]]
    PRINTER.result(result, format_table(["TOPIC", "SUBSCRIBERS", "SUBSCRIBED"], rows)
                   if rows else f"no topics in {result['mesh']}")
    return 0


@topic.command("post")
@click.argument("name")
@click.argument("message")
@_mesh
@click.option("--priority", type=click.Choice(["now", "next", "low"]), default="next",
              show_default=True)
@click.option("--client-message-id", help="Your own idempotency key (default: a new ULID).")
@click.option("--reply-to", help="The broker_message_id this answers.")
@json_option
def post(name: str, message: str, *, mesh: str | None, priority: str,
         client_message_id: str | None, reply_to: str | None) -> int:
    """Post MESSAGE to topic NAME (queued in the outbox, exactly like `send #NAME`)."""
    result = client(current_paths()).run(api.topic_post(
        name, message, mesh=mesh, priority=priority, client_message_id=client_message_id,
        reply_to=reply_to))
    state = "already sent" if result.get("duplicate") else result.get("status", "queued")
    PRINTER.result(result, f"{state} to #{name.removeprefix('#')}"
                   f" ({result['client_message_id']})")
    return 0


@topic.command("history")
@click.argument("name")
@_mesh
@click.option("--before", help="Older than this history_id (a previous page's next_before).")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@json_option
def history(name: str, mesh: str | None, before: str | None, limit: int) -> int:
    """A page of NAME's history (you must be subscribed), oldest first; it is also filed
    in your inbox, once."""
    result = client(current_paths()).run(api.topic_history(name, mesh=mesh, before=before,
                                                           limit=limit))
    PRINTER.result(result, format_history(result))
    return 0


def format_history(page: dict[str, Any]) -> str:
    items = list(reversed(page["items"]))  # the page is newest first; read it in order
    if not items:
        return f"no messages in #{page['topic']}"
    rows = [(i["history_id"], i["created_at"], i["sender_name"],
             " ".join((i["body"] if i["body"] is not None else f"[{i['undecryptable']}]")
                      .split())[:70]) for i in items]
    text = format_table(["HISTORY", "AT", "FROM", "MESSAGE"], rows)
    return text + (f"\nolder: --before {page['next_before']}" if page["next_before"] else "")


@click.group()
def group() -> None:
    """Join and leave groups (@name), and list them with their members."""


@group.command("join")
@click.argument("name")
@click.option("--role", help="Your role in the group (a label, e.g. lead).")
@_mesh
@json_option
def join(name: str, role: str | None, mesh: str | None) -> int:
    """Join group NAME (ops or @ops)."""
    result = client(current_paths()).run(api.group_join(name, role=role, mesh=mesh))
    as_role = f" as {result['role']}" if result.get("role") else ""
    PRINTER.result(result, f"in @{result['group']}{as_role} in {result['mesh']}"
                   + ("" if result["changed"] else " (already)"))
    return 0


@group.command("leave")
@click.argument("name")
@_mesh
@json_option
def leave(name: str, mesh: str | None) -> int:
    """Leave group NAME."""
    result = client(current_paths()).run(api.group_leave(name, mesh=mesh))
    PRINTER.result(result, f"left @{result['group']} in {result['mesh']}"
                   + ("" if result["changed"] else " (was not in it)"))
    return 0


@group.command("list")
@_mesh
@json_option
def list_groups(mesh: str | None) -> int:
    """The mesh's groups, their members, roles and who is online."""
    result = client(current_paths()).run(api.group_list(mesh))
    rows = [(f"@{g['group']}", m["display_name"], m["role"] or "",
             "online" if m["online"] else "offline")
            for g in result["groups"] for m in g["roster"]]
    PRINTER.result(result, format_table(["GROUP", "MEMBER", "ROLE", "PRESENCE"], rows)
                   if rows else f"no groups in {result['mesh']}")
    return 0
