"""The errors an SDK caller may catch: the project's one tree (:mod:`claudemesh.errors`).

Every error answer of the daemon (``{error, detail, ...}``) becomes the class with that
``code``, its extra fields in ``.fields``; a code this build does not know becomes
:class:`RemoteError` with the status and code kept. Catch :class:`DaemonUnreachable` for
"no daemon" (also timeouts: :class:`DaemonTimeout`), :class:`RequestError` for "you got it
wrong" (4xx), :class:`ServiceError` for "the daemon or broker could not" (5xx).
"""

from __future__ import annotations

from claudemesh.errors import (
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
    InvalidRequest,
    MeshRequired,
    NoMeshJoined,
    OutboxRowNotFound,
    PayloadTooLarge,
    RemoteError,
    RequestError,
    RequeueNotAllowed,
    RouteNotFound,
    ServiceError,
    ShuttingDown,
    TooManyStreams,
    Unauthorized,
    UnknownDestination,
    UnknownMesh,
    error_from_wire,
)

__all__ = [
    "BrokerRejected",
    "BrokerUnavailable",
    "ClaudemeshError",
    "ClientMessageIdInUse",
    "DaemonBusy",
    "DaemonStartFailed",
    "DaemonTimeout",
    "DaemonUnreachable",
    "ForbiddenHost",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "MeshRequired",
    "NoMeshJoined",
    "OutboxRowNotFound",
    "PayloadTooLarge",
    "RemoteError",
    "RequestError",
    "RequeueNotAllowed",
    "RouteNotFound",
    "ServiceError",
    "ShuttingDown",
    "TooManyStreams",
    "Unauthorized",
    "UnknownDestination",
    "UnknownMesh",
    "error_from_wire",
]
