"""The SDK's public names are pinned, and importing the sync client stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import claudemesh.sdk as sdk

NAMES = {
    "AsyncClient", "Client", "Event", "InboxItem", "InboxPage", "MeshInfo", "MessageStatus",
    "OutboxItem", "Peer", "PeerList", "PeerSession", "Receipt", "Response", "SendResult",
    "Session", "SessionAddress", "VersionInfo", "errors", "error_from_wire",
    "SearchHit", "SearchPage", "SentMessage", "Thread",
    "BrokerRejected", "BrokerUnavailable", "ClaudemeshError", "ClientMessageIdInUse",
    "DaemonBusy", "DaemonStartFailed", "DaemonTimeout", "DaemonUnreachable", "ForbiddenHost",
    "IdempotencyKeyReused", "InsufficientStorage", "InvalidRequest", "MeshRequired",
    "MessageNotFound", "NoMeshJoined",
    "OutboxRowNotFound", "PayloadTooLarge", "ProcessNotFound", "RemoteError", "RequestError",
    "RequeueNotAllowed", "RouteNotFound", "ServiceError", "SessionNameTaken", "SessionNotFound",
    "ShuttingDown", "TooManyStreams", "Unauthorized", "UnknownDestination", "UnknownMesh",
    "UnknownSession",
}


def test_the_public_names() -> None:
    assert set(sdk.__all__) == NAMES
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    assert set(sdk.errors.__all__) <= NAMES


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        sdk.Nope  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "Nope" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_the_sync_client_and_claudemesh_send_load_no_asyncio_and_no_unused_models() -> None:
    for statement in ("from claudemesh.sdk import Client", "import claudemesh.cli.send"):
        modules = loaded_after(statement)
        for heavy in ("asyncio", "aiohttp", "pydantic", "http.client", "email", "secrets",
                      "claudemesh.sdk.inbox", "claudemesh.sdk.sessions", "claudemesh.sdk.peers",
                      "claudemesh.sdk.receipts", "claudemesh.sdk.sse", "claudemesh.sdk.search",
                      "claudemesh.sdk.reconnect"):
            assert heavy not in modules, (statement, heavy)


def test_the_async_client_loads_asyncio_but_not_aiohttp() -> None:
    modules = loaded_after("from claudemesh.sdk import AsyncClient")
    assert "asyncio" in modules
    assert "aiohttp" not in modules and "pydantic" not in modules


def public_methods(cls: type) -> dict[str, object]:
    return {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_")
            and callable(getattr(cls, n))}


def test_the_async_client_has_every_method_of_the_sync_one_with_the_same_parameters() -> None:
    sync, aio = public_methods(sdk.Client), public_methods(sdk.AsyncClient)
    assert set(sync) == set(aio)
    for name, method in sync.items():
        assert inspect.signature(method).parameters.keys() == (
            inspect.signature(aio[name]).parameters.keys()), name
        if name == "events":
            assert inspect.isasyncgenfunction(aio[name])
        else:
            assert inspect.iscoroutinefunction(aio[name]), name


def test_docs_sdk_md_shows_every_method() -> None:
    text = (Path(__file__).parents[3] / "docs" / "sdk.md").read_text()
    for name in public_methods(sdk.Client):
        if name not in ("request", "call", "run"):
            assert f"c.{name}(" in text or f"Client.{name}(" in text, name
