"""The errors an SDK caller may catch: the project's one tree (:mod:`claudemesh.errors`).

Every error answer of the daemon (``{error, detail, ...}``) becomes the class with that
``code``, its extra fields in ``.fields``; a code this build does not know becomes
:class:`RemoteError` with the status and code kept. Catch :class:`DaemonUnreachable` for
"no daemon" (also timeouts: :class:`DaemonTimeout`), :class:`RequestError` for "you got it
wrong" (4xx), :class:`ServiceError` for "the daemon or broker could not" (5xx). Sessions
add :class:`SessionNotFound` (404), :class:`SessionNameTaken` (409, ``fields["holder"]``),
:class:`ProcessNotFound` and :class:`UnknownSession` (422); :meth:`message_status` of an
id this daemon never sent raises :class:`MessageNotFound`. A send (or any write) on a
daemon whose disk is full raises :class:`InsufficientStorage` (507): nothing was kept,
retry once there is room.
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
    "InsufficientStorage",
    "InvalidRequest",
    "MeshRequired",
    "MessageNotFound",
    "NoMeshJoined",
    "OutboxRowNotFound",
    "PayloadTooLarge",
    "ProcessNotFound",
    "RemoteError",
    "RequestError",
    "RequeueNotAllowed",
    "RouteNotFound",
    "ServiceError",
    "SessionNameTaken",
    "SessionNotFound",
    "ShuttingDown",
    "TooManyStreams",
    "Unauthorized",
    "UnknownDestination",
    "UnknownMesh",
    "UnknownSession",
    "error_from_wire",
]
