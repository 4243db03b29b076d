"""``claudemesh search <query>``: full-text search of what this daemon received and sent.

The daemon searches its own decrypted copies (``GET /v1/inbox?q=`` and
``GET /v1/outbox?q=``); the broker never sees the words. Received and sent results are
ranked separately (each database scores its own rows), so they are shown as two lists.
``--from`` and ``--topic`` describe received messages, so they search those alone.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click

from claudemesh.cli.common import client, current_paths, json_option
from claudemesh.cli.output import PRINTER, format_table
from claudemesh.errors import InvalidRequest

__all__ = ["format_search", "search"]


@click.command()
@click.argument("query")
@click.option("--mesh", help="Only this mesh.")
@click.option("--from", "sender", help="Only received from this pubkey or display name.")
@click.option("--topic", help="Only received through this topic (#name, @group or *).")
@click.option("--sent", "which", flag_value="sent", help="Only messages this daemon sent.")
@click.option("--received", "which", flag_value="received",
              help="Only messages this daemon received.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True,
              help="Results per list.")
@json_option
def search(*, query: str, mesh: str | None, sender: str | None, topic: str | None,
           which: str | None, limit: int) -> int:
    """Search received and sent messages for words.

    QUERY is words; "a phrase", prefix*, AND, OR, NOT and NEAR(a b, 5) work too.
    """
    if which == "sent" and (sender or topic):
        raise InvalidRequest("--from and --topic describe received messages; drop --sent")
    if which is None:
        which = "received" if sender or topic else "both"
    api = client(current_paths())
    result: dict[str, Any] = {}
    if which in ("received", "both"):
        params = {k: v for k, v in (("q", query), ("mesh", mesh), ("from", sender),
                                    ("topic", topic), ("limit", str(limit))) if v}
        result["received"] = api.call("GET", f"/v1/inbox?{urlencode(params)}")["items"]
    if which in ("sent", "both"):
        params = {k: v for k, v in (("q", query), ("mesh", mesh), ("limit", str(limit))) if v}
        result["sent"] = api.call("GET", f"/v1/outbox?{urlencode(params)}")["items"]
    PRINTER.result(result, format_search(result))
    return 0


def format_search(result: dict[str, Any]) -> str:
    parts: list[str] = []
    if "received" in result:
        rows = [(i["seq"], i["received_at"], i["mesh"], i["sender_name"],
                 i["destination"] if i["topic"] else "(dm)", _flat(i["highlight"]))
                for i in result["received"]]
        parts.append("received: no match" if not rows else "received:\n" + format_table(
            ["SEQ", "RECEIVED", "MESH", "FROM", "TO", "MATCH"], rows))
    if "sent" in result:
        rows = [(i["client_message_id"], i["enqueued_at"], i["mesh"], i["destination"],
                 i["status"], _flat(i["highlight"])) for i in result["sent"]]
        parts.append("sent: no match" if not rows else "sent:\n" + format_table(
            ["ID", "SENT", "MESH", "TO", "STATUS", "MATCH"], rows))
    return "\n".join(parts)


def _flat(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"
