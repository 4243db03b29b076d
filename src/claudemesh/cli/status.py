"""``claudemesh status <client_message_id>``: how far a sent message got.

queued -> accepted (the broker has it) -> stored (the recipient's daemon filed it) ->
surfaced (one of its sessions read it, and how). The last two come from receipts the
recipient signed, verified by this daemon (docs/api.md, "Receipts").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import click

from claudemesh.cli.common import client, current_paths, json_option
from claudemesh.cli.output import PRINTER, paint
from claudemesh.errors import WaitTimedOut

if TYPE_CHECKING:
    from claudemesh.sdk.receipts import MessageStatus

__all__ = ["format_status", "status"]

STEPS: Final = ("queued", "accepted", "stored", "surfaced")
POLL_S: Final = 0.1


@click.command()
@click.argument("client_message_id")
@click.option("--wait", "wait_for", type=click.Choice(["accepted", "stored", "surfaced"]),
              help="Wait until the message got at least this far.")
@click.option("--timeout", type=click.FloatRange(0, 3600), default=30.0, show_default=True,
              help="Seconds --wait waits before giving up (exit 1).")
@json_option
def status(client_message_id: str, wait_for: str | None, timeout: float) -> int:
    """Show where a message you sent is: queued, accepted, stored, surfaced."""
    api = client(current_paths())
    deadline = time.monotonic() + timeout
    while True:
        info = api.message_status(client_message_id)
        if wait_for is None or _reached(info.state, wait_for):
            break
        if info.state in ("failed", "aborted") or time.monotonic() >= deadline:
            PRINTER.result(info.raw, format_status(info))
            raise WaitTimedOut(f"the message is {info.state}, not {wait_for}, after"
                                f" {timeout:g}s")
        time.sleep(POLL_S)
    PRINTER.result(info.raw, format_status(info))
    return 0


def _reached(state: str, target: str) -> bool:
    return state in STEPS and STEPS.index(state) >= STEPS.index(target)


def format_status(info: MessageStatus) -> str:
    state = info.state
    color = {"surfaced": "green", "stored": "green", "failed": "red"}.get(state, "yellow")
    lines = [f"{info.client_message_id} to {info.destination} in {info.mesh}:"
             f" {paint(state, color)}"]
    for step, at in (("queued", info.enqueued_at), ("accepted", info.accepted_at),
                     ("stored", info.stored_at), ("surfaced", info.surfaced_at)):
        if at is None:
            continue
        line = f"  {step:<9} {at}"
        if step == "surfaced":
            how = ", ".join(x for x in (f"via {info.surfaced_path}",
                                        info.surfaced_session and
                                        f"session {info.surfaced_session}") if x)
            line += f"  {how}"
        lines.append(line)
    if state == "failed":
        lines.append("  the broker refused it; see `claudemesh daemon outbox list --failed`")
    return "\n".join(lines)
