"""``claudemesh send``: through the daemon when there is one, never twice (issue 5, item 3).

1. Mint the ``client_message_id`` first, so every retry below is the same message.
2. Probe the daemon with ``GET /v1/version`` (a short timeout; a socket file proves
   nothing, R-ROUTE-1). None answering: wait for the installed service, or start a daemon.
3. ``POST /v1/send``, retrying a timeout or a broken connection with the same id: the
   daemon's lookup table makes a retry a no-op (R-ACC-2). A refusal (4xx, 409) is
   reported and never retried another way (R-ROUTE-4).
4. Wait briefly for the row to reach the broker, and say ``delivered`` or ``queued``.

``--no-daemon`` sends over a short broker connection of its own (:mod:`claudemesh.direct`)
with the same id and fingerprint rules. It refuses while a daemon runs, because the
broker would then replace the daemon's connection with ours.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Final

import click

from claudemesh.cli.common import current_paths, json_option
from claudemesh.cli.output import PRINTER, paint
from claudemesh.client import DaemonClient
from claudemesh.config import Paths
from claudemesh.errors import (
    DaemonAlreadyRunning,
    DaemonUnreachable,
    IdempotencyKeyReused,
    InvalidRequest,
    RemoteError,
    error_classes,
)
from claudemesh.protocol.ids import is_valid_client_message_id, new_ulid

__all__ = ["send"]

PROBE_TIMEOUT_S: Final = 1.0
SERVICE_WAIT_S: Final = 8.0
SEND_ATTEMPTS: Final = 3


@click.command()
@click.argument("to")
@click.argument("message", required=False)
@click.option("--mesh", help="The mesh (needed when several are joined).")
@click.option("--priority", type=click.Choice(["now", "next", "low"]), default="next",
              show_default=True)
@click.option("--client-message-id", help="Your own idempotency key (default: a new ULID).")
@click.option("--meta", help="A JSON object sent along (part of the fingerprint).")
@click.option("--reply-to", help="The broker_message_id this answers.")
@click.option("--no-daemon", is_flag=True, help="Send over a direct broker connection.")
@click.option("--wait", type=click.FloatRange(0, 60), default=2.0, show_default=True,
              help="Seconds to wait for the broker's acceptance before saying 'queued'.")
@click.option("--timeout", type=click.FloatRange(0.05, 120), default=5.0, show_default=True,
              help="Seconds per attempt to talk to the daemon.")
@json_option
def send(*, to: str, message: str | None, mesh: str | None, priority: str,
         client_message_id: str | None, meta: str | None, reply_to: str | None,
         no_daemon: bool, wait: float, timeout: float) -> int:
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
    paths = current_paths()
    if no_daemon:
        return _send_direct(paths, body)
    api = ensure_daemon(paths, timeout=timeout)
    answer = _post(api, body)
    if answer.get("duplicate"):
        return _report("delivered", body, answer, note="already sent earlier")
    row = _await_outcome(api, cmid, wait)
    if row is not None and row["status"] == "dead":
        _report("failed", body, row, note=row.get("last_error"))
        return 1
    status = "delivered" if row is not None and row["status"] == "done" else "queued"
    return _report(status, body, row or answer)


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


def probe(api: DaemonClient) -> bool:
    """A compatible daemon answers /v1/version (R-ROUTE-1, R-NEG-8)."""
    try:
        info = api.call("GET", "/v1/version")
    except DaemonUnreachable:
        return False
    if info.get("ipc_api") != "v1" or "send" not in info.get("ipc_features", []):
        raise DaemonUnreachable(f"the running daemon speaks ipc_api {info.get('ipc_api')!r};"
                                " upgrade it or the CLI so they match")
    return True


def ensure_daemon(paths: Paths, *, timeout: float) -> DaemonClient:
    """A client for a daemon that answers: running, its service started, or one we start."""
    quick = DaemonClient(paths, timeout=PROBE_TIMEOUT_S)
    if not probe(quick):
        unit = _installed_unit()
        if unit is not None:
            _wait_for(quick, SERVICE_WAIT_S, f"the service ({unit}) is installed but its"
                      " daemon does not answer; see `claudemesh daemon logs`")
        else:
            from claudemesh.cli.daemon import spawn_daemon  # noqa: PLC0415

            try:
                spawn_daemon(paths, [])
            except DaemonAlreadyRunning:
                _wait_for(quick, SERVICE_WAIT_S, "another daemon is starting but does not answer")
    return DaemonClient(paths, timeout=timeout)


def _installed_unit() -> Path | None:
    """An installed service that its manager can start: then wait for it, never race it.

    A unit file that no service manager can act on (a container without a user bus)
    does not count: then the CLI starts the daemon itself.
    """
    from claudemesh.daemon.service import service_state, unit_installed  # noqa: PLC0415

    unit = unit_installed(Path.home(), sys.platform)
    if unit is None or service_state(sys.platform) in (None, "inactive", "failed",
                                                        "not-loaded"):
        return None
    return unit


def _wait_for(api: DaemonClient, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe(api):
            return
        time.sleep(0.1)
    raise DaemonUnreachable(failure)


def _post(api: DaemonClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST with the same id until the daemon answers: a retry can never double-send."""
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            return dict(api.call("POST", "/v1/send", body))
        except DaemonUnreachable as exc:
            if attempt == SEND_ATTEMPTS:
                raise DaemonUnreachable(
                    f"{exc.detail}; the message may still be queued: look for client_message_id"
                    f" {body['client_message_id']} in `claudemesh daemon outbox list`, or send"
                    f" again with --client-message-id {body['client_message_id']} (safe: it"
                    " cannot double-send)") from exc
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _await_outcome(api: DaemonClient, cmid: str, wait: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + wait
    row: dict[str, Any] | None = None
    while True:
        items = api.call("GET", f"/v1/outbox?client_message_id={cmid}&limit=1")["items"]
        row = items[0] if items else None
        if row is None or row["status"] in ("done", "dead") or time.monotonic() >= deadline:
            return row
        time.sleep(0.01)


def _send_direct(paths: Paths, body: dict[str, Any]) -> int:
    from claudemesh.config import load_meshes  # noqa: PLC0415
    from claudemesh.direct import send_direct  # noqa: PLC0415

    if probe(DaemonClient(paths, timeout=PROBE_TIMEOUT_S)):
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
                         reply_to=body.get("reply_to"))
    code = result.get("code")
    if code in (200, 201):
        return _report("delivered", {**body, "mesh": chosen[0].slug}, result,
                       note="already sent earlier" if code == 200 else None)
    if code == 409:
        raise IdempotencyKeyReused(f"the broker already holds {body['client_message_id']!r}"
                                   " with a different message", **result)
    cls = error_classes().get(str(result.get("error")), RemoteError)
    raise cls(f"the broker refused it ({code}): {result.get('detail')}")


def _report(status: str, body: dict[str, Any], row: dict[str, Any],
            note: str | None = None) -> int:
    data = {"status": status, "client_message_id": body["client_message_id"],
            "to": body["to"], "mesh": row.get("mesh", body.get("mesh")),
            "outbox_id": row.get("id", row.get("outbox_id")),
            "broker_message_id": row.get("broker_message_id")}
    if note:
        data["note"] = note
    word = {"delivered": paint("delivered", "green"), "queued": paint("queued", "yellow"),
            "failed": paint("failed", "red")}[status]
    detail = {"delivered": "the broker accepted it",
              "queued": "stored; it goes out when the broker is reachable",
              "failed": "the broker refused it"}[status]
    text = f"{word} to {body['to']}: {detail} ({body['client_message_id']})"
    if note:
        text += f"\n  {note}"
    PRINTER.result(data, text)
    return 0 if status != "failed" else 1

