"""``claudemesh file share | get | list``: shared files, through the daemon (issue 15).

``get`` asks the daemon to download into its downloads directory (the only place the
daemon writes to, A-55), then moves the verified file to ``--out`` (default: the file's
name in the current directory) with this user's own rights.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import click

from claudemesh.cli.common import client, current_paths, json_option
from claudemesh.cli.output import PRINTER, format_table
from claudemesh.errors import InvalidRequest

__all__ = ["file"]

TIMEOUT_S: Final = 330.0  # the daemon's own transfer deadline (300 s), and some


@click.group()
def file() -> None:
    """Share files with members, end to end encrypted."""


@file.command("share")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("to")
@click.option("-m", "--message", help="A message to go with the file.")
@click.option("--mesh", help="The mesh (needed when several are joined).")
@click.option("--id", "client_message_id", help="client_message_id: retrying with the same"
              " id resumes the same upload and sends the message once.")
@json_option
def share(*, path: Path, to: str, message: str | None, mesh: str | None,
          client_message_id: str | None) -> int:
    """Upload PATH encrypted and send it to TO (a member's name or pubkey, or an encrypted
    '#topic', whose subscribers may then fetch it)."""
    body: dict[str, Any] = {"path": str(path.resolve()), "to": to}
    for key, value in (("message", message), ("mesh", mesh),
                       ("client_message_id", client_message_id)):
        if value is not None:
            body[key] = value
    answer = client(current_paths(), timeout=TIMEOUT_S).call("POST", "/v1/file/share", body)
    info = answer["file"]
    PRINTER.result(answer, f"shared {info['name']} ({info['size']} bytes) as {info['id']};"
                           f" message {answer['client_message_id']} {answer['status']}")
    return 0


@file.command("get")
@click.argument("file_id")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Where to put it [default: its name, in the current directory].")
@click.option("--force", is_flag=True, help="Replace a file already at the destination.")
@json_option
def get(*, file_id: str, out: Path | None, force: bool) -> int:
    """Download FILE_ID, decrypt it and check it."""
    answer = client(current_paths(), timeout=TIMEOUT_S).call(
        "GET", "/v1/file/get?" + urlencode({"id": file_id}))
    fetched = Path(answer["path"])
    target = out if out is not None else Path.cwd() / answer["name"]
    if target.is_dir():
        target /= answer["name"]
    if target.exists() and not force:
        raise InvalidRequest(f"{target} exists; use --force to replace it"
                             f" (the download is at {fetched})")
    shutil.move(fetched, target)
    answer["path"] = str(target.resolve())
    PRINTER.result(answer, f"wrote {answer['path']} ({answer['size']} bytes, sha256 verified)")
    return 0


def _peer(row: dict[str, Any]) -> str:
    """Who it came from or went to: a member, a topic, or a member in a topic."""
    topic = row.get("topic")
    if topic and row["direction"] == "out":
        return f"#{topic}"
    who = str(row["peer_name"] or row["peer_pubkey"][:16] + "…")
    return f"{who} in #{topic}" if topic else who


@file.command("list")
@click.option("--mesh", help="Only this mesh.")
@json_option
def list_(*, mesh: str | None) -> int:
    """Files shared with you and by you."""
    query = "?" + urlencode({"mesh": mesh}) if mesh else ""
    answer = client(current_paths()).call("GET", "/v1/file/list" + query)
    rows = [(f["created_at"], "from" if f["direction"] == "in" else "to", _peer(f),
             f["name"], f["size"], f["id"]) for f in answer["files"]]
    PRINTER.result(answer, format_table(["WHEN", "", "PEER", "NAME", "BYTES", "ID"], rows)
                   if rows else "no files")
    return 0
