"""One exception tree for the whole project, translated once at each edge.

::

    ClaudemeshError
    ├── RequestError                 the caller got it wrong (4xx); nothing was written
    │   ├── InvalidRequest           400 invalid_request
    │   ├── TokenInQuery             400 token_in_query          (R-AUTH-5)
    │   ├── Unauthorized             401 unauthorized            (R-AUTH-2, A-39)
    │   ├── ForbiddenHost            403 forbidden_host          (R-AUTH-9, A-38)
    │   ├── ForbiddenOrigin          403 forbidden_origin        (R-AUTH-10)
    │   ├── PreflightRefused         403 cors_preflight_refused  (R-AUTH-11)
    │   ├── RouteNotFound            404 not_found
    │   ├── OutboxRowNotFound        404 outbox_row_not_found
    │   ├── SessionNotFound          404 session_not_found
    │   ├── MessageNotFound          404 message_not_found
    │   ├── FileNotFound             404 file_not_found          (no such shared file for you)
    │   ├── PathNotFound             404 path_not_found          (the local file to share)
    │   ├── PathNotAllowed           403 path_not_allowed        (A-55: out of the allowed dir)
    │   ├── MethodNotAllowed         405 method_not_allowed
    │   ├── RequestTimeout           408 request_timeout
    │   ├── PayloadTooLarge          413 payload_too_large       (R-LIM-1)
    │   ├── NoMeshJoined             422 no_mesh_joined
    │   ├── MeshRequired             422 mesh_required
    │   ├── UnknownMesh              422 unknown_mesh
    │   ├── UnknownDestination       422 unknown_destination     (A-14f)
    │   ├── UnknownSession           422 unknown_session
    │   ├── ProcessNotFound          422 process_not_found
    │   ├── FileDestinationUnsupported 422 file_destination_unsupported
    │   ├── SessionNameTaken         409 session_name_taken
    │   ├── BlobExists               409 blob_exists             (a file id taken by another upload)
    │   ├── BlobOffsetMismatch       409 blob_offset_mismatch    (resume from ``received``)
    │   ├── IdempotencyKeyReused     409 idempotency_key_reused  (R-ACC-2/3), exit 5
    │   ├── RequeueNotAllowed        409 requeue_not_allowed     (R-RQ-3)
    │   ├── ClientMessageIdInUse     409 client_message_id_in_use (R-DLV-3), exit 5
    │   ├── DaemonBusy               429 daemon_busy             (R-LIM-3)
    │   ├── TooManyStreams           429 too_many_streams        (R-LIM-4)
    │   │   broker side (answers on the WebSocket; docs/protocol.md)
    │   ├── InvalidEnvelope          400 invalid_envelope        (B1 schema)
    │   ├── HelloRequired            400 hello_required
    │   ├── AlreadyAuthenticated     400 already_authenticated
    │   ├── AuthFailed               401 (close 4001)
    │   │   ├── BadSignature         401 bad_signature
    │   │   ├── StaleTimestamp       401 stale_timestamp          (±60 s)
    │   │   ├── ReplayedNonce        401 replayed_nonce
    │   │   └── UnknownMember        401 unknown_member
    │   ├── MemberRevoked            403 member_revoked          (close 4002)
    │   ├── InviteRejected           403 invite_rejected
    │   ├── DestinationNotFound      404 destination_not_found   (B2)
    │   ├── EpochConflict            409 epoch_conflict          (topic_epoch CAS)
    │   ├── TopicEncrypted           400 topic_encrypted         (plain to an E2E topic)
    │   ├── UnknownEpoch             400 unknown_epoch
    │   ├── MeshExists               409 mesh_exists
    │   ├── DisplayNameTaken         409 display_name_taken
    │   ├── MemberAlreadyConnected   409 member_already_connected (close 4004)
    │   └── RateLimited              429 rate_limited            (B1; A-8: transient)
    ├── ServiceError                 the daemon or its store failed (5xx)
    │   ├── ShuttingDown             503 shutting_down           (R-LIFE-3)
    │   ├── BrokerUnavailable        503 broker_unavailable      (the link to that mesh is down)
    │   ├── BrokerIncompatible       503 broker_incompatible     (close 4010), exit 6
    │   ├── BrokerRejected           502 broker_rejected         (the broker refused a request)
    │   ├── BrokerUntrusted          502 broker_untrusted        (not the pinned TLS key), exit 7
    │   ├── FileCorrupt              502 file_corrupt            (a download failed its check)
    │   ├── StoreError               500 store_error
    │   │   ├── StoreCorrupt         500 store_corrupt           (R-REC-2)
    │   │   └── InsufficientStorage  507 insufficient_storage    (disk full, fsync failed)
    │   └── InternalError            500 internal
    └── LocalError                   raised by the CLI or the process, never on the wire
        ├── ConfigError              exit 2 config_invalid
        ├── HostMismatch             exit 4 host_mismatch         (R-ID-12)
        ├── SocketPathTooLong        exit 2 socket_path_too_long
        ├── DaemonAlreadyRunning     exit 1 daemon_already_running
        ├── DaemonStartFailed        exit 1 daemon_start_failed
        ├── DaemonStopFailed         exit 1 daemon_stop_failed
        ├── DaemonUnreachable        exit 3 daemon_unreachable
        │   └── DaemonTimeout        exit 3 daemon_timeout
        ├── BrokerUnreachable        exit 1 broker_unreachable
        ├── WaitTimedOut             exit 1 wait_timed_out
        ├── AlreadyJoined            exit 1 already_joined
        ├── AgentSettingsInvalid     exit 2 agent_settings_invalid (file left as is)
        ├── AgentSettingsWriteFailed exit 1 agent_settings_write_failed
        ├── ExecutableNotFound       exit 2 executable_not_found
        └── RemoteError              exit 1: an answer whose code this build does not know

Every concrete class declares its wire ``code``, ``http_status`` and CLI ``exit_code``
(an :class:`ExitCode`: DESIGN §4's 0-6, and 7). ``tests/unit/test_errors.py`` fails when a
class lacks one or when two classes share a code, and ``error_from_wire`` rebuilds the
same class on the client side from ``{error, detail, ...}``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar

from claudemesh.protocol.close import CloseCode

if TYPE_CHECKING:
    from claudemesh.protocol.replies import Refusal

__all__ = ["AbortNotAllowed", "AgentSettingsInvalid", "AgentSettingsWriteFailed",
           "AlreadyAuthenticated", "AlreadyJoined", "AuthFailed", "BadSignature", "BlobExists",
           "BlobOffsetMismatch", "BrokerIncompatible", "BrokerRejected", "BrokerUnavailable",
           "BrokerUnreachable", "BrokerUntrusted", "ClaudemeshError", "ClientMessageIdInUse",
           "ConfigError", "DaemonAlreadyRunning", "DaemonBusy", "DaemonStartFailed",
           "DaemonStopFailed", "DaemonTimeout", "DaemonUnreachable", "DestinationNotFound",
           "DisplayNameTaken", "EpochConflict", "ExecutableNotFound", "ExitCode", "FileCorrupt",
           "FileDestinationUnsupported", "FileNotFound", "ForbiddenHost", "ForbiddenOrigin",
           "HelloRequired", "HostMismatch", "IdempotencyKeyReused", "InsufficientStorage",
           "InternalError", "InvalidEnvelope", "InvalidRequest", "InviteRejected", "LocalError",
           "MemberAlreadyConnected", "MemberRevoked", "MeshExists", "MeshRequired",
           "MessageNotFound", "MethodNotAllowed", "NoMeshJoined", "NotSubscribed",
           "OutboxRowNotFound", "PathNotAllowed", "PathNotFound", "PayloadTooLarge",
           "PreflightRefused", "ProcessNotFound", "RateLimited", "RemoteError", "ReplayedNonce",
           "RequestError", "RequestTimeout", "RequeueNotAllowed", "RouteNotFound", "ServiceError",
           "SessionNameTaken", "SessionNotFound", "ShuttingDown", "SocketPathTooLong",
           "StaleEpoch", "StaleTimestamp", "StoreCorrupt", "StoreError", "TokenInQuery",
           "TooManyStreams", "TopicEncrypted", "Unauthorized", "UnknownDestination",
           "UnknownEpoch", "UnknownMember", "UnknownMesh", "UnknownSession", "WaitTimedOut",
           "error_classes", "error_from_frame", "error_from_wire"]


class ExitCode(enum.IntEnum):
    """The CLI's exit statuses (DESIGN §4): scripts branch on them, and the service
    manager is told never to restart after 4, 6 or 7, which no restart can fix."""

    OK = 0
    FAILURE = 1
    USAGE = 2  # usage or configuration
    DAEMON_UNREACHABLE = 3
    HOST_MISMATCH = 4  # the daemon directory was made on another machine (R-ID-12)
    SEND_CONFLICT = 5  # the send was refused with 409
    BROKER_INCOMPATIBLE = 6  # close 4010: the broker lacks a required feature
    BROKER_UNTRUSTED = 7  # the broker's TLS key is not the one the invite pinned


class ClaudemeshError(Exception):
    """Base of every error we raise on purpose. ``fields`` are structured extras that
    travel with it on the wire (a conflict's ``conflict``, ``client_message_id``...)."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[ExitCode] = ExitCode.FAILURE
    close_code: ClassVar[CloseCode | None] = None  # WebSocket close code, where one applies
    default_detail: ClassVar[str] = "unexpected error"

    def __init__(self, detail: str | None = None, **fields: Any) -> None:
        self.detail = detail or self.default_detail
        self.fields: dict[str, Any] = fields
        super().__init__(self.detail)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"

    def to_wire(self) -> dict[str, Any]:
        """The JSON body of an error answer: ``{error, detail, ...fields}``."""
        return {"error": self.code, "detail": self.detail, **self.fields}


class RequestError(ClaudemeshError):
    """The caller sent something we refuse; nothing was written."""

    http_status = 400


class InvalidRequest(RequestError):
    code = "invalid_request"
    http_status = 400
    exit_code = ExitCode.USAGE
    default_detail = "the request is malformed"


class TokenInQuery(RequestError):
    code = "token_in_query"
    http_status = 400
    default_detail = "the token is accepted only in the Authorization header, never in the URL"


class Unauthorized(RequestError):
    code = "unauthorized"
    http_status = 401
    default_detail = "missing or invalid bearer token"


class ForbiddenHost(RequestError):
    code = "forbidden_host"
    http_status = 403
    default_detail = "the Host header must be localhost, 127.0.0.1 or [::1]"


class ForbiddenOrigin(RequestError):
    code = "forbidden_origin"
    http_status = 403
    default_detail = "requests carrying an Origin header are refused"


class PreflightRefused(RequestError):
    code = "cors_preflight_refused"
    http_status = 403
    default_detail = "the daemon does not answer CORS preflight requests"


class RouteNotFound(RequestError):
    code = "not_found"
    http_status = 404
    default_detail = "no such route"


class OutboxRowNotFound(RequestError):
    code = "outbox_row_not_found"
    http_status = 404
    default_detail = "no outbox row has that id"


class SessionNotFound(RequestError):
    code = "session_not_found"
    http_status = 404
    default_detail = "no live session has that id; register one with POST /v1/sessions"


class MessageNotFound(RequestError):
    code = "message_not_found"
    http_status = 404
    default_detail = "this daemon sent no message with that client_message_id"


class FileNotFound(RequestError):
    code = "file_not_found"
    http_status = 404
    default_detail = "no shared file with that id is known to this member"


class PathNotFound(RequestError):
    code = "path_not_found"
    http_status = 404
    exit_code = ExitCode.USAGE
    default_detail = "no readable regular file at that path"


class PathNotAllowed(RequestError):
    code = "path_not_allowed"
    http_status = 403
    exit_code = ExitCode.USAGE
    default_detail = "that path is outside the directory files may be written to"


class FileDestinationUnsupported(RequestError):
    code = "file_destination_unsupported"
    http_status = 422
    exit_code = ExitCode.USAGE
    default_detail = "files go to one member or to an encrypted #topic"


class BlobExists(RequestError):
    code = "blob_exists"
    http_status = 409
    default_detail = "another upload already uses that file id"


class BlobOffsetMismatch(RequestError):
    code = "blob_offset_mismatch"
    http_status = 409
    default_detail = "the blob does not end at that offset; resume from 'received'"


class MethodNotAllowed(RequestError):
    code = "method_not_allowed"
    http_status = 405
    default_detail = "method not allowed on this route"


class RequestTimeout(RequestError):
    code = "request_timeout"
    http_status = 408
    default_detail = "the request body did not arrive in time"


class PayloadTooLarge(RequestError):
    code = "payload_too_large"
    http_status = 413
    default_detail = "request body too large"


class NoMeshJoined(RequestError):
    code = "no_mesh_joined"
    http_status = 422
    exit_code = ExitCode.USAGE
    default_detail = "this daemon has joined no mesh; run `claudemesh join <invite>`"


class MeshRequired(RequestError):
    code = "mesh_required"
    http_status = 422
    exit_code = ExitCode.USAGE
    default_detail = "several meshes are joined; say which one with 'mesh'"


class UnknownMesh(RequestError):
    code = "unknown_mesh"
    http_status = 422
    exit_code = ExitCode.USAGE
    default_detail = "this daemon has not joined that mesh"


class UnknownDestination(RequestError):
    code = "unknown_destination"
    http_status = 422
    exit_code = ExitCode.USAGE
    default_detail = "no known peer has that display name"


class UnknownSession(RequestError):
    code = "unknown_session"
    http_status = 422
    exit_code = ExitCode.USAGE
    default_detail = "the sending session is not a live session of this daemon"


class ProcessNotFound(RequestError):
    code = "process_not_found"
    http_status = 422
    exit_code = ExitCode.USAGE
    default_detail = "no running process of this user has that pid"


class SessionNameTaken(RequestError):
    code = "session_name_taken"
    http_status = 409
    default_detail = "a live session of another process holds that name"


class IdempotencyKeyReused(RequestError):
    """A ``client_message_id`` tied to a row the caller cannot reuse. ``conflict`` is an
    R-ACC-2 value; ``daemon_fingerprint_prefix`` is 16 hex of the fingerprint stored with
    that id (R-ACC-3), ``request_fingerprint_prefix`` the same for the refused request."""

    code = "idempotency_key_reused"
    http_status = 409
    exit_code = ExitCode.SEND_CONFLICT
    default_detail = "this client_message_id is already used by another request"

    @property
    def conflict(self) -> str:
        return str(self.fields.get("conflict", ""))


class RequeueNotAllowed(RequestError):
    code = "requeue_not_allowed"
    http_status = 409
    default_detail = "only pending, scheduled or dead rows can be requeued"


class AbortNotAllowed(RequestError):
    code = "abort_not_allowed"
    http_status = 409
    default_detail = "only pending, scheduled or dead rows can be aborted"


class ClientMessageIdInUse(RequestError):
    code = "client_message_id_in_use"
    http_status = 409
    exit_code = ExitCode.SEND_CONFLICT
    default_detail = "that client_message_id already belongs to an outbox row"


class DaemonBusy(RequestError):
    code = "daemon_busy"
    http_status = 429
    default_detail = "too many requests in flight; retry shortly"


class InvalidEnvelope(RequestError):
    code = "invalid_envelope"
    http_status = 400
    default_detail = "the send envelope is invalid"


class HelloRequired(RequestError):
    code = "hello_required"
    http_status = 400
    default_detail = "send a hello first"


class AlreadyAuthenticated(RequestError):
    code = "already_authenticated"
    http_status = 400
    default_detail = "this connection already said hello"


class AuthFailed(RequestError):
    """The hello was refused; the connection is closed with 4001."""

    http_status = 401
    close_code = CloseCode.AUTH_FAILED


class BadSignature(AuthFailed):
    code = "bad_signature"
    default_detail = "the signature does not verify with that pubkey"


class StaleTimestamp(AuthFailed):
    code = "stale_timestamp"
    default_detail = "the timestamp is more than 60 s away from the broker's clock"


class ReplayedNonce(AuthFailed):
    code = "replayed_nonce"
    default_detail = "this hello nonce was already used"


class UnknownMember(AuthFailed):
    code = "unknown_member"
    default_detail = "no member of that mesh has that pubkey and id"


class MemberRevoked(RequestError):
    code = "member_revoked"
    http_status = 403
    close_code = CloseCode.MEMBER_REVOKED
    default_detail = "this member has been revoked"


class InviteRejected(RequestError):
    code = "invite_rejected"
    http_status = 403
    default_detail = "the invite is unknown, revoked, expired or used up"


class DestinationNotFound(RequestError):
    code = "destination_not_found"
    http_status = 404
    default_detail = "no such member, topic or group in this mesh"


class NotSubscribed(RequestError):
    code = "not_subscribed"
    http_status = 403
    default_detail = "only a subscriber of the topic may read its history"


class EpochConflict(RequestError):
    """A ``topic_epoch`` lost the compare-and-set (another epoch won, or the topic's
    membership moved); the fields carry the current state, so the caller re-reads."""

    code = "epoch_conflict"
    http_status = 409
    default_detail = "the topic's epoch or membership changed; read topic_keys again"


class TopicEncrypted(RequestError):
    """A plain body to a topic that has key epochs: its posts must be ``topic_box``."""

    code = "topic_encrypted"
    http_status = 400
    default_detail = "this topic is end-to-end encrypted; post a topic_box body"


class StaleEpoch(RequestError):
    """A ``topic_box`` sealed under an epoch made for an older membership of the topic
    (someone left or joined since): the sender re-seals under a new epoch and sends again
    with the same ``client_message_id``. Checked only for a new claim, so a retry of a
    post the broker already took is answered as the duplicate it is."""

    code = "stale_epoch"
    http_status = 409
    default_detail = "the topic's membership changed since this epoch; seal with a new one"


class UnknownEpoch(RequestError):
    code = "unknown_epoch"
    http_status = 400
    default_detail = "no such key epoch for this topic"


class MeshExists(RequestError):
    code = "mesh_exists"
    http_status = 409
    default_detail = "a mesh with that name already exists"


class DisplayNameTaken(RequestError):
    code = "display_name_taken"
    http_status = 409
    default_detail = "another member of this mesh already uses that display name"


class MemberAlreadyConnected(RequestError):
    code = "member_already_connected"
    http_status = 409
    close_code = CloseCode.ALREADY_CONNECTED
    default_detail = "this member is already connected and the mesh prefers the oldest connection"


class RateLimited(RequestError):
    code = "rate_limited"
    http_status = 429
    default_detail = "too many sends; retry after retry_after_ms"


class TooManyStreams(RequestError):
    code = "too_many_streams"
    http_status = 429
    default_detail = "too many event streams are open"


class ServiceError(ClaudemeshError):
    """The daemon (or its store) could not do what was asked; the caller may retry."""

    http_status = 500


class ShuttingDown(ServiceError):
    code = "shutting_down"
    http_status = 503
    default_detail = "the daemon is shutting down"


class BrokerUnavailable(ServiceError):
    code = "broker_unavailable"
    http_status = 503
    default_detail = "the broker link for that mesh is down; retry when it reconnects"


class BrokerIncompatible(ServiceError):
    code = "broker_incompatible"
    http_status = 503
    exit_code = ExitCode.BROKER_INCOMPATIBLE
    close_code = CloseCode.FEATURE_UNAVAILABLE
    default_detail = "the broker lacks a feature this daemon requires"


class BrokerRejected(ServiceError):
    code = "broker_rejected"
    http_status = 502
    default_detail = "the broker refused the request"


class BrokerUntrusted(ServiceError):
    """The broker's TLS public key is not the pinned one: nothing was sent to it."""
    code = "broker_untrusted"
    http_status = 502
    exit_code = ExitCode.BROKER_UNTRUSTED
    default_detail = "the broker's TLS key does not match the key pinned by the invite"


class FileCorrupt(ServiceError):
    code = "file_corrupt"
    http_status = 502
    default_detail = "the downloaded file failed its integrity check; nothing was written"


class StoreError(ServiceError):
    code = "store_error"
    http_status = 500
    default_detail = "the local database failed; nothing was written"


class StoreCorrupt(StoreError):
    code = "store_corrupt"
    http_status = 500
    default_detail = "a local database failed its integrity check"


class InsufficientStorage(StoreError):
    code = "insufficient_storage"
    http_status = 507
    default_detail = "the disk is full or failed to sync; nothing was written, retry later"


class InternalError(ServiceError):
    code = "internal"
    http_status = 500
    default_detail = "internal error; see the daemon log"


class LocalError(ClaudemeshError):
    """Raised by the CLI or the daemon process itself; never sent on the wire."""


class ConfigError(LocalError):
    code = "config_invalid"
    exit_code = ExitCode.USAGE
    default_detail = "the configuration is invalid"


class HostMismatch(LocalError):
    code = "host_mismatch"
    exit_code = ExitCode.HOST_MISMATCH
    default_detail = "this daemon directory was made on another machine"


class SocketPathTooLong(LocalError):
    code = "socket_path_too_long"
    exit_code = ExitCode.USAGE
    default_detail = "the Unix socket path is longer than the OS allows"


class DaemonAlreadyRunning(LocalError):
    code = "daemon_already_running"
    default_detail = "a daemon already runs on this daemon directory"


class DaemonStartFailed(LocalError):
    code = "daemon_start_failed"
    default_detail = "the daemon did not start"


class DaemonStopFailed(LocalError):
    code = "daemon_stop_failed"
    default_detail = "the daemon did not stop"


class DaemonUnreachable(LocalError):
    code = "daemon_unreachable"
    exit_code = ExitCode.DAEMON_UNREACHABLE
    default_detail = "no daemon answers; start one with `claudemesh daemon up`"


class DaemonTimeout(DaemonUnreachable):
    code = "daemon_timeout"
    default_detail = "the daemon did not answer in time"


class BrokerUnreachable(LocalError):
    code = "broker_unreachable"
    default_detail = "the broker did not answer"


class WaitTimedOut(LocalError):
    code = "wait_timed_out"
    default_detail = "the awaited state was not reached in time"


class AlreadyJoined(LocalError):
    code = "already_joined"
    default_detail = "this machine already joined that mesh"


class AgentSettingsInvalid(LocalError):
    """An agent's settings file is not JSON we can merge into (left as is): ``path``, and
    ``where`` the key path inside it (``hooks.Stop[0]``), ``""`` for the whole file."""

    code = "agent_settings_invalid"
    exit_code = ExitCode.USAGE
    default_detail = "the agent's settings file is not valid JSON of the expected shape"


class AgentSettingsWriteFailed(LocalError):
    """Writing an agent's settings file failed, or it kept changing under us (``path``)."""

    code = "agent_settings_write_failed"
    default_detail = "could not write the agent's settings file"


class ExecutableNotFound(LocalError):
    code = "executable_not_found"
    exit_code = ExitCode.USAGE
    default_detail = "cannot find the claudemesh executable"


class RemoteError(LocalError):
    """An error answer whose code this build does not know; keeps status and body."""

    code = "remote_error"
    default_detail = "the daemon answered with an error"


def error_classes() -> dict[str, type[ClaudemeshError]]:
    """Every concrete error class, keyed by its code."""
    found: dict[str, type[ClaudemeshError]] = {}
    stack: list[type[ClaudemeshError]] = list(ClaudemeshError.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "code" in cls.__dict__:
            found[cls.code] = cls
    return found


def error_from_wire(status: int, body: Any) -> ClaudemeshError:
    """Rebuild the typed error from an HTTP error answer (client side of the edge)."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return RemoteError(f"HTTP {status} with an unexpected body", status=status)
    fields = {k: v for k, v in body.items() if k not in ("error", "detail")}
    detail = body.get("detail") if isinstance(body.get("detail"), str) else None
    cls = error_classes().get(body["error"])
    if cls is None:
        return RemoteError(detail or body["error"], status=status, error=body["error"], **fields)
    return cls(detail, **fields)


def error_from_frame(reply: Refusal, context: str | None = None) -> ClaudemeshError:
    """Rebuild the typed error a broker's ``error`` frame or refused ``send_result`` carries
    (the WebSocket side of the edge, as :func:`error_from_wire` is the HTTP side);
    ``context`` says what was refused."""
    detail = f"{context}: {reply.detail}" if context else reply.detail
    cls = error_classes().get(reply.code or "")
    if cls is None:
        return RemoteError(detail if context else f"{reply.code}: {reply.detail}",
                           error=reply.code, **reply.fields)
    return cls(detail, **reply.fields)
