"""Finding a daemon that answers, as ``claudemesh send`` does (issue 5, R-ROUTE-1).

1. Probe ``GET /v1/version`` with a short timeout: a socket file proves nothing.
2. None answering: if a service is installed that its manager can start, wait for it
   (never race it with a second daemon); otherwise start one (``daemon up``, detached).
3. A daemon that answers with another ``ipc_api`` is an error, not "no daemon".

The process work (the service manager, spawning with
:func:`claudemesh.daemon.process.spawn_daemon`, which the CLI uses too) is imported only
when a daemon must be started: ``import claudemesh.sdk`` stays light.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from claudemesh.errors import DaemonAlreadyRunning, DaemonUnreachable
from claudemesh.sdk.client import Client

if TYPE_CHECKING:
    from claudemesh.sdk.aio import AsyncClient

__all__ = ["IPC_API", "PROBE_TIMEOUT_S", "SERVICE_WAIT_S", "check_compatible", "ensure_daemon",
           "ensure_daemon_async", "probe", "probe_async"]

IPC_API: Final = "v1"
REQUIRED_FEATURES: Final = ("send",)
PROBE_TIMEOUT_S: Final = 1.0
SERVICE_WAIT_S: Final = 8.0


def check_compatible(info: Any) -> None:
    """A daemon we can talk to speaks ``ipc_api`` v1 with ``send`` (R-NEG-8).

    Raises:
        DaemonUnreachable: it speaks another API; upgrade one side.
    """
    body = info if isinstance(info, dict) else {}
    features = body.get("ipc_features")
    if body.get("ipc_api") != IPC_API or not isinstance(features, list) or not all(
            f in features for f in REQUIRED_FEATURES):
        raise DaemonUnreachable(f"the running daemon speaks ipc_api {body.get('ipc_api')!r};"
                                " upgrade it or the CLI so they match")


def probe(api: Client) -> bool:
    """A compatible daemon answers /v1/version (R-ROUTE-1, R-NEG-8)."""
    try:
        info = api.call("GET", "/v1/version")
    except DaemonUnreachable:
        return False
    check_compatible(info)
    return True


async def probe_async(api: AsyncClient) -> bool:
    try:
        info = await api.call("GET", "/v1/version")
    except DaemonUnreachable:
        return False
    check_compatible(info)
    return True


def _quick(api: Client) -> Client:
    return Client(api.paths, transport=api.transport, timeout=PROBE_TIMEOUT_S)


def ensure_daemon(api: Client, *, start: bool = True) -> None:
    """Return once a daemon answers ``api``: running, its service started, or one we start.

    Raises:
        DaemonUnreachable: none answers and ``start`` is false, or it never came up.
        DaemonStartFailed: the daemon we started exited or did not report ready.
    """
    quick = _quick(api)
    if not probe(quick):
        _start(quick, start=start)


async def ensure_daemon_async(api: AsyncClient, *, start: bool = True) -> None:
    """:func:`ensure_daemon` for the async client; starting runs in a worker thread."""
    import asyncio  # noqa: PLC0415 - the sync path never loads asyncio

    from claudemesh.sdk.aio import AsyncClient  # noqa: PLC0415

    quick = AsyncClient(api.paths, transport=api.transport, timeout=PROBE_TIMEOUT_S)
    if not await probe_async(quick):
        sync = Client(api.paths, transport=api.transport, timeout=PROBE_TIMEOUT_S)
        await asyncio.to_thread(_start, sync, start=start)


def _start(quick: Client, *, start: bool) -> None:
    if not start:
        raise DaemonUnreachable(f"no daemon answers for {quick.paths.daemon_dir}; start one"
                                " with `claudemesh daemon up`")
    unit = _installed_unit()
    if unit is not None:
        _wait_for(quick, SERVICE_WAIT_S, f"the service ({unit}) is installed but its"
                  " daemon does not answer; see `claudemesh daemon logs`")
        return
    from claudemesh.daemon.process import spawn_daemon  # noqa: PLC0415

    try:
        spawn_daemon(quick.paths, [])
    except DaemonAlreadyRunning:
        _wait_for(quick, SERVICE_WAIT_S, "another daemon is starting but does not answer")


def _installed_unit() -> Path | None:
    """An installed service that its manager can start: then wait for it, never race it.

    A unit file that no service manager can act on (a container without a user bus)
    does not count: then we start the daemon ourselves.
    """
    from claudemesh.daemon.service import service_state, unit_installed  # noqa: PLC0415

    unit = unit_installed(Path.home(), sys.platform)
    if unit is None or service_state(sys.platform) in (None, "inactive", "failed",
                                                        "not-loaded"):
        return None
    return unit


def _wait_for(api: Client, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe(api):
            return
        time.sleep(0.1)
    raise DaemonUnreachable(failure)
