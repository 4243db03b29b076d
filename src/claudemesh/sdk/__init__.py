"""The Python SDK for the claudemesh daemon's local API (docs/sdk.md).

::

    from claudemesh.sdk import Client
    client = Client.connect()          # finds (or starts) the daemon, as `claudemesh send`
    client.send("bob", "the build is green")
    for event in client.events():      # resumes by Last-Event-ID after a disconnect
        ...

:class:`Client` is synchronous (stdlib sockets) and :class:`AsyncClient` its asyncio
twin; both return the frozen models below and raise the errors of :mod:`claudemesh.errors`
(re-exported here and in :mod:`claudemesh.sdk.errors`).

Names load on first use (PEP 562): ``from claudemesh.sdk import Client`` imports the
sync client and nothing else, so ``claudemesh send`` and hooks stay fast; asyncio
loads only with :class:`AsyncClient`, each group of models only with its first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from claudemesh.sdk import errors
from claudemesh.sdk.errors import (
    BrokerRejected,
    BrokerUnavailable,
    ClaudemeshError,
    ClientMessageIdInUse,
    DaemonBusy,
    DaemonStartFailed,
    DaemonTimeout,
    DaemonUnreachable,
    ForbiddenHost,
    IdempotencyKeyReused,
    InsufficientStorage,
    InvalidRequest,
    MeshRequired,
    MessageNotFound,
    NoMeshJoined,
    OutboxRowNotFound,
    PayloadTooLarge,
    ProcessNotFound,
    RemoteError,
    RequestError,
    RequeueNotAllowed,
    RouteNotFound,
    ServiceError,
    SessionNameTaken,
    SessionNotFound,
    ShuttingDown,
    TooManyStreams,
    Unauthorized,
    UnknownDestination,
    UnknownMesh,
    UnknownSession,
    error_from_wire,
)

if TYPE_CHECKING:
    from claudemesh.sdk.aio import AsyncClient
    from claudemesh.sdk.client import Client, Response
    from claudemesh.sdk.inbox import Event, InboxItem, InboxPage
    from claudemesh.sdk.info import MeshInfo, VersionInfo
    from claudemesh.sdk.messages import OutboxItem, SendResult
    from claudemesh.sdk.peers import Peer, PeerList, PeerSession
    from claudemesh.sdk.receipts import MessageStatus, Receipt
    from claudemesh.sdk.search import SearchHit, SearchPage, SentMessage, Thread
    from claudemesh.sdk.sessions import Session, SessionAddress

_LAZY: Final = {
    "AsyncClient": "aio",
    "Client": "client",
    "Response": "client",
    "Event": "inbox",
    "InboxItem": "inbox",
    "InboxPage": "inbox",
    "MeshInfo": "info",
    "VersionInfo": "info",
    "MessageStatus": "receipts",
    "OutboxItem": "messages",
    "Receipt": "receipts",
    "SendResult": "messages",
    "SearchHit": "search",
    "SearchPage": "search",
    "SentMessage": "search",
    "Thread": "search",
    "Peer": "peers",
    "PeerList": "peers",
    "PeerSession": "peers",
    "Session": "sessions",
    "SessionAddress": "sessions",
}

__all__ = [
    "AsyncClient",
    "BrokerRejected",
    "BrokerUnavailable",
    "ClaudemeshError",
    "Client",
    "ClientMessageIdInUse",
    "DaemonBusy",
    "DaemonStartFailed",
    "DaemonTimeout",
    "DaemonUnreachable",
    "Event",
    "ForbiddenHost",
    "IdempotencyKeyReused",
    "InboxItem",
    "InboxPage",
    "InsufficientStorage",
    "InvalidRequest",
    "MeshInfo",
    "MeshRequired",
    "MessageNotFound",
    "MessageStatus",
    "NoMeshJoined",
    "OutboxItem",
    "OutboxRowNotFound",
    "PayloadTooLarge",
    "Peer",
    "PeerList",
    "PeerSession",
    "ProcessNotFound",
    "Receipt",
    "RemoteError",
    "RequestError",
    "RequeueNotAllowed",
    "Response",
    "RouteNotFound",
    "SearchHit",
    "SearchPage",
    "SendResult",
    "SentMessage",
    "ServiceError",
    "Session",
    "SessionAddress",
    "SessionNameTaken",
    "SessionNotFound",
    "ShuttingDown",
    "Thread",
    "TooManyStreams",
    "Unauthorized",
    "UnknownDestination",
    "UnknownMesh",
    "UnknownSession",
    "VersionInfo",
    "error_from_wire",
    "errors",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'claudemesh.sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"claudemesh.sdk.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
