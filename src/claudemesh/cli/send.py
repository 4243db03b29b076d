"""``claudemesh send``: through the daemon when there is one, never twice (issue 5, item 3).

1. Mint the ``client_message_id`` first, so every retry below is the same message.
2. Find the daemon as the SDK does (:meth:`claudemesh.sdk.Client.connect`): probe
   ``GET /v1/version``, else wait for the installed service, or start a daemon.
3. ``POST /v1/send`` through the SDK, which retries a timeout or a broken connection with
   the same id: the daemon's lookup table makes a retry a no-op (R-ACC-2). A refusal
   (4xx, 409) is reported and never retried another way (R-ROUTE-4).
4. Wait briefly for the row to reach the broker, and say ``delivered`` or ``queued``;
   a send with ``--in``/``--at`` is ``scheduled`` and answered at once (issue 15).

``--no-daemon`` sends over a short broker connection of its own (:mod:`claudemesh.direct`)
with the same id and fingerprint rules. It refuses while a daemon runs, because the
broker would then replace the daemon's connection with ours.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from claudemesh.cli.common import current_paths, json_option
from claudemesh.cli.output import PRINTER, paint
from claudemesh.cli.schedule import deliver_at, schedule_options
from claudemesh.config import Paths
from claudemesh.errors import (
    DaemonUnreachable,
    ExitCode,
    IdempotencyKeyReused,
    InvalidRequest,
    error_from_frame,
)
from claudemesh.protocol.ids import is_valid_client_message_id, new_ulid
from claudemesh.sdk.client import Client
from claudemesh.sdk.discovery import PROBE_TIMEOUT_S, probe

if TYPE_CHECKING:
    from claudemesh.sdk.messages import OutboxItem, SendResult

__all__ = ["send"]

@click.command()
@click.argument("to")
@click.argument("message", required=False)
@click.option("--mesh", help="The mesh (needed when several are joined).")
@click.option("--priority", type=click.Choice(["now", "next", "low"]), default="next",
              show_default=True)
@click.option("--client-message-id", help="Your own idempotency key (default: a new ULID).")
@click.option("--meta", help="A JSON object sent along (part of the fingerprint).")
@click.option("--reply-to", help="The broker_message_id this answers.")
@click.option("--anycast", is_flag=True,
              help="With an @group: one member gets it (online ones first, in turn).")
@click.option("--no-daemon", is_flag=True, help="Send over a direct broker connection.")
@schedule_options
@click.option("--wait", type=click.FloatRange(0, 60), default=2.0, show_default=True,
              help="Seconds to wait for the broker's acceptance before saying 'queued'.")
@click.option("--timeout", type=click.FloatRange(0.05, 120), default=5.0, show_default=True,
              help="Seconds per attempt to talk to the daemon.")
@json_option
def send(*, to: str, message: str | None, mesh: str | None, priority: str,
         client_message_id: str | None, meta: str | None, reply_to: str | None,
         anycast: bool, no_daemon: bool, wait: float, timeout: float,
         delay: str | None = None, at: str | None = None) -> int:
    """Send MESSAGE (or standard input) to TO: a peer's name, a 64-hex pubkey, #topic,
    @group or *."""
    text = _message_text(message)
    cmid = client_message_id or new_ulid()
    if not is_valid_client_message_id(cmid):
        raise InvalidRequest("--client-message-id must be 1-128 printable ASCII characters")
    body: dict[str, Any] = {"to": to, "message": text, "priority": priority,
                            "client_message_id": cmid}
    if mesh:
        body["mesh"] = mesh
    if meta is not None:
        body["meta"] = _meta(meta)
    if reply_to:
        body["reply_to"] = reply_to
    if anycast:
        body["anycast"] = True
    when = deliver_at(delay, at)
    if when is not None:
        body["deliver_at"] = when
    paths = current_paths()
    if no_daemon:
        if when is not None:
            raise InvalidRequest("--in/--at need the daemon (the send waits in its outbox);"
                                 " drop --no-daemon")
        return _send_direct(paths, body)
    api = Client.connect(paths, timeout=timeout, start=True)
    answer = _post(api, body)
    if answer.duplicate:
        return _report("delivered", body, answer.raw, note="already sent earlier")
    if answer.status == "scheduled":
        return _report("scheduled", body, answer.raw)
    row = _await_outcome(api, cmid, wait)
    if row is not None and row.status == "dead":
        _report("failed", body, row.raw, note=row.last_error)
        return ExitCode.FAILURE
    status = "delivered" if row is not None and row.status == "done" else "queued"
    return _report(status, body, row.raw if row is not None else answer.raw)


def _message_text(message: str | None) -> str:
    if message is not None and message != "-":
        return message
    if message is None and sys.stdin.isatty():
        raise InvalidRequest("give the message as an argument, or pipe it on standard input")
    text = sys.stdin.read()
    if not text:
        raise InvalidRequest("the message is empty")
    return text


def _meta(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"--meta is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("--meta must be a JSON object")
    return value


def _post(api: Client, body: dict[str, Any]) -> SendResult:
    """The SDK repeats a broken attempt with the same id; here we only word the failure."""
    try:
        return api.send(body["to"], body["message"], mesh=body.get("mesh"),
                        priority=body["priority"], client_message_id=body["client_message_id"],
                        meta=body.get("meta"), reply_to=body.get("reply_to"),
                        anycast=body.get("anycast", False), deliver_at=body.get("deliver_at"))
    except DaemonUnreachable as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, DaemonUnreachable) else exc
        cmid = body["client_message_id"]
        raise DaemonUnreachable(
            f"{cause.detail}; the message may still be queued: look for client_message_id"
            f" {cmid} in `claudemesh daemon outbox list`, or send again with"
            f" --client-message-id {cmid} (safe: it cannot double-send)") from exc


def _await_outcome(api: Client, cmid: str, wait: float) -> OutboxItem | None:
    deadline = time.monotonic() + wait
    while True:
        items = api.outbox(client_message_id=cmid, limit=1)
        row = items[0] if items else None
        if row is None or row.status in ("done", "dead") or time.monotonic() >= deadline:
            return row
        time.sleep(0.01)


def _send_direct(paths: Paths, body: dict[str, Any]) -> int:
    from claudemesh.config import load_meshes  # noqa: PLC0415
    from claudemesh.direct import send_direct  # noqa: PLC0415

    if probe(Client(paths, timeout=PROBE_TIMEOUT_S)):
        raise InvalidRequest("a daemon is running and holds this identity; send without"
                             " --no-daemon (a direct connection would displace it)")
    meshes = load_meshes(paths.config_file)
    chosen = [m for m in meshes if body.get("mesh") in (None, m.slug)]
    if not meshes or not chosen:
        raise InvalidRequest(f"no joined mesh {body.get('mesh', '')!r}; run `claudemesh join`")
    if len(chosen) > 1:
        raise InvalidRequest("several meshes are joined; say which with --mesh")
    result = send_direct(chosen[0], body["to"], body["message"],
                         client_message_id=body["client_message_id"],
                         priority=body["priority"], meta=body.get("meta"),
                         reply_to=body.get("reply_to"), anycast=body.get("anycast", False))
    if result.accepted:
        return _report("delivered", {**body, "mesh": chosen[0].slug},
                       {"broker_message_id": result.broker_message_id},
                       note="already sent earlier" if result.status == 200 else None)
    if result.status == 409:
        raise IdempotencyKeyReused(f"the broker already holds {body['client_message_id']!r}"
                                   " with a different message",
                                   **result.model_dump(by_alias=True, exclude_unset=True))
    raise error_from_frame(result, f"the broker refused it ({result.status})")


def _report(status: str, body: dict[str, Any], row: dict[str, Any],
            note: str | None = None) -> int:
    data = {"status": status, "client_message_id": body["client_message_id"],
            "to": body["to"], "mesh": row.get("mesh", body.get("mesh")),
            "outbox_id": row.get("id", row.get("outbox_id")),
            "broker_message_id": row.get("broker_message_id")}
    if row.get("deliver_at"):
        data["deliver_at"] = row["deliver_at"]
    if note:
        data["note"] = note
    word = {"delivered": paint("delivered", "green"), "queued": paint("queued", "yellow"),
            "scheduled": paint("scheduled", "bold"), "failed": paint("failed", "red")}[status]
    detail = {"delivered": "the broker accepted it",
              "queued": "stored; it goes out when the broker is reachable",
              "scheduled": f"stored; it goes out at {row.get('deliver_at')}",
              "failed": "the broker refused it"}[status]
    text = f"{word} to {body['to']}: {detail} ({body['client_message_id']})"
    if note:
        text += f"\n  {note}"
    PRINTER.result(data, text)
    return 0 if status != "failed" else 1

