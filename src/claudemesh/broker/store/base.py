"""The broker's store interface: the few operations the server needs, as one contract.

SQLite (``sqlite/``, the embedded default) implements it; PostgreSQL (``postgres/``,
issue 6) implements the same methods, and one parametrized suite (tests/integration/store)
runs against both. Records are frozen dataclasses with no database types in them; both
stores map rows to them with ``rows.py``. Errors are the typed errors of
:mod:`claudemesh.errors`; no driver exception crosses this boundary (STYLE (b)7).

Several brokers may share one store (PostgreSQL, issue 6); then the tables are the truth
and a :class:`Notifier` only wakes brokers up. Presence is rows: a member is ``online``
on one session of one broker, or ``leased`` until a time; brokers heartbeat, and the
members of a broker that stopped heartbeating count as leased from its last heartbeat.

Invariants every implementation keeps (daemon-spec §4.3-4.7):
* ``accept`` is one transaction: the dedupe claim, the message, its history row and one
  delivery row per recipient commit together or not at all (R-DLV-5, R-BRK-8). A B2
  failure (unknown destination, sender revoked) rolls the claim back (R-BRK-6).
* A delivery stays pending until its recipient acks it (DESIGN §5.7); nothing marks a
  delivery done at push time.
* Ids once in the dedupe table resolve to the same ``broker_message_id`` until the row
  expires (R-DLV-4).
"""

from __future__ import annotations

import abc
import asyncio
import enum
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from claudemesh.errors import ClaudemeshError, DestinationNotFound, MemberRevoked, StoreError
from claudemesh.protocol.topic_epochs import TopicState

__all__ = [
    "NOTIFY_KINDS",
    "AcceptInput",
    "AcceptKind",
    "AcceptOutcome",
    "Blob",
    "BrokerStore",
    "Delivery",
    "GroupMembership",
    "LocalNotifier",
    "Member",
    "Mesh",
    "NewInvite",
    "Notifier",
    "PresenceChange",
    "SealedEpochKey",
    "SessionProfile",
    "SweepResult",
    "TopicKeyView",
    "b2_refusal",
    "sessions_from_json",
    "sessions_to_json",
]

NOTIFY_KINDS = ("deliver", "presence", "replace", "profile")


def b2_refusal(what: str, ref: str) -> ClaudemeshError:
    """The B2 error (R-BRK-5) of an accept, worded alike by every store. ``what`` names
    the check that failed: "sender" (revoked), "dm", "group" or "topic" (not found)."""
    if what == "sender":
        return MemberRevoked("the sender is no longer a member of this mesh")
    if what == "dm":
        return DestinationNotFound(f"no member of this mesh has pubkey {ref[:16]}…",
                                   destination=ref)
    if what == "group":
        return DestinationNotFound(f"no group {ref} in this mesh", destination=ref)
    return DestinationNotFound(f"no topic #{ref} in this mesh; subscribe to create it",
                               destination=ref)


@dataclass(frozen=True, slots=True)
class Mesh:
    id: str
    name: str
    created_at: int
    dedupe_mode: str  # retention_scoped | permanent
    dedupe_retention_days: int
    message_retention_days: int
    connection_policy: str  # prefer_newest | prefer_oldest
    invite_pubkey: str


@dataclass(frozen=True, slots=True)
class SessionProfile:
    """One live session a member published (``member_sessions``); None: not given."""

    name: str
    summary: str | None = None
    status: str | None = None  # idle | working | dnd
    harness: str | None = None


def sessions_to_json(sessions: Iterable[SessionProfile]) -> str:
    """The ``member.sessions`` column: a JSON list, every entry with all four keys.

    Raises:
        StoreError: an entry is not a SessionProfile (a caller's bug, refused before any
            write rather than stored as something no reader understands).
    """
    entries = list(sessions)
    if not all(isinstance(s, SessionProfile) for s in entries):
        raise StoreError("setting a profile: sessions must be SessionProfile records")
    return json.dumps([{"name": s.name, "summary": s.summary, "status": s.status,
                        "harness": s.harness} for s in entries], separators=(",", ":"))


def sessions_from_json(text: str) -> tuple[SessionProfile, ...]:
    return tuple(SessionProfile(e["name"], e.get("summary"), e.get("status"), e.get("harness"))
                 for e in json.loads(text))


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    mesh_id: str
    pubkey: str
    display_name: str
    joined_at: int
    revoked_at: int | None
    summary: str | None = None
    status: str = "idle"
    visible: bool = True
    avatar: str | None = None
    title: str | None = None
    bio: str | None = None
    capabilities: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    sessions: tuple[SessionProfile, ...] = ()  # the last list set_profile stored


@dataclass(frozen=True, slots=True)
class NewInvite:
    invite_id: str
    mesh_id: str
    secret: str = field(repr=False)
    expires_at: int = 0
    max_uses: int = 1


@dataclass(frozen=True, slots=True)
class AcceptInput:
    """A send that passed B1, with the broker's own fingerprint of it (DESIGN §5.2)."""

    mesh_id: str
    sender_member_id: str
    sender_pubkey: str
    sender_name: str
    broker_message_id: str  # minted before the transaction (R-BRK-3)
    client_message_id: str
    fingerprint: bytes
    destination_kind: str
    destination_ref: str
    priority: str
    reply_to: str | None
    meta_json: str | None
    body_json: str
    body_hash: str
    now_ms: int
    dedupe_expires_at: int | None  # None: permanent mode
    # a topic_box's epoch: a new claim is refused (StaleEpoch) when the epoch was made for
    # another membership version than the topic's current one
    epoch: int | None = None


class AcceptKind(enum.Enum):
    CREATED = "created"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    kind: AcceptKind
    broker_message_id: str
    history_id: str | None
    stored_fingerprint: bytes
    first_seen_at: int
    history_available: bool
    recipients: tuple[tuple[str, int], ...] = ()  # (member id, delivery id), CREATED only


@dataclass(frozen=True, slots=True)
class Delivery:
    """One pending push for one recipient."""

    delivery_id: int
    recipient_member_id: str
    mesh_id: str
    broker_message_id: str
    client_message_id: str
    history_id: str | None
    sender_pubkey: str
    sender_name: str
    destination_kind: str
    destination_ref: str
    priority: str
    reply_to: str | None
    meta: dict[str, Any] | None
    body: dict[str, Any]
    body_hash: str
    created_at: int
    epoch_key: dict[str, Any] | None = None  # topic_box: the recipient's sealed epoch key


@dataclass(frozen=True, slots=True)
class SealedEpochKey:
    """One epoch's key as sealed to one member (``topic_epoch_key``)."""

    epoch: int
    membership_version: int
    sealer_pubkey: str
    nonce: str
    ciphertext: str

    def wire(self) -> dict[str, Any]:
        """The ``epoch_key`` of a push."""
        return {"sealer_pubkey": self.sealer_pubkey, "nonce": self.nonce,
                "ciphertext": self.ciphertext, "membership_version": self.membership_version}


@dataclass(frozen=True, slots=True)
class TopicKeyView:
    """``topic_keys``' answer: the topic's state and the keys sealed to one member."""

    state: TopicState
    keys: tuple[SealedEpochKey, ...]


@dataclass(frozen=True, slots=True)
class GroupMembership:
    """One live member of one group (``list_groups``)."""

    group: str
    member_id: str
    pubkey: str
    display_name: str
    role: str | None


@dataclass(frozen=True, slots=True)
class Blob:
    """A shared file's ciphertext, as the store knows it: who may read it, and whether
    it is whole. The bytes are files on disk (``broker/blobfiles.py``); how many of them
    arrived is the file's length there, fsynced before each ``blob_put`` is answered.
    A blob bound to a ``topic`` has no ``recipients``: its readers are the topic's
    subscribers at the time they fetch it (the handler asks the store)."""

    file_id: str
    mesh_id: str
    uploader_member_id: str
    uploader_pubkey: str
    recipients: tuple[str, ...]  # pubkeys that may fetch it (besides the uploader)
    size: int  # ciphertext bytes
    created_at: int
    completed_at: int | None = None
    topic: str | None = None

    def readable_by(self, pubkey: str) -> bool:
        """By the uploader or a named recipient (a topic's subscribers are not named)."""
        return pubkey == self.uploader_pubkey or pubkey in self.recipients


@dataclass(frozen=True, slots=True)
class SweepResult:
    dedupe_rows_expired: int
    messages_pruned: int
    nonces_expired: int


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """What a member's presence was before this session attached."""

    previous_session_id: str | None
    previous_broker_id: str | None
    previous_state: str | None  # "online" | "leased" | None (absent: a real join)


Handler = Callable[[str, dict[str, Any]], None]


class Notifier(abc.ABC):
    """Cluster wake-ups: ``deliver`` (members with new deliveries), ``presence``
    (peer_joined / peer_left), ``replace`` (close an older session), ``profile``.

    Best effort by design: every fact they announce is already committed in the store,
    so a lost notification delays, never loses (a reconnect or a lease re-reads).
    """

    @abc.abstractmethod
    async def start(self, handler: Handler) -> None: ...

    @abc.abstractmethod
    async def publish(self, kind: str, payload: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class LocalNotifier(Notifier):
    """One process: publishing calls the handler on the next loop iteration."""

    def __init__(self) -> None:
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def publish(self, kind: str, payload: dict[str, Any]) -> None:
        if self._handler is not None:
            asyncio.get_running_loop().call_soon(self._handler, kind, payload)

    async def close(self) -> None:
        self._handler = None


class BrokerStore(abc.ABC):
    """Everything the broker persists."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # -- meshes, invites, members ------------------------------------------------------

    @abc.abstractmethod
    async def create_mesh(self, mesh: Mesh, invite_secret_key: str) -> Mesh:
        """Raises MeshExists when the name is taken."""

    @abc.abstractmethod
    async def get_mesh(self, mesh_ref: str) -> Mesh | None:
        """By id, or by name."""

    @abc.abstractmethod
    async def mesh_invite_key(self, mesh_id: str) -> str:
        """The mesh's invite signing key (128 hex)."""

    @abc.abstractmethod
    async def create_invite(self, invite: NewInvite, *, secret_sha256: str, now_ms: int) -> None:
        ...

    @abc.abstractmethod
    async def redeem_invite(self, *, invite_id: str, mesh_id: str, secret_sha256: str,
                            member: Member, now_ms: int) -> Member:
        """Atomically check the invite and add the member (or return the same pubkey's
        existing membership without using the invite up).

        Raises:
            InviteRejected: unknown, revoked, expired, used up, or the secret is wrong.
            DisplayNameTaken / MemberRevoked.
        """

    @abc.abstractmethod
    async def get_member(self, mesh_id: str, pubkey: str) -> Member | None: ...

    @abc.abstractmethod
    async def revoke_member(self, pubkey: str, *, mesh_id: str | None, now_ms: int) -> list[Member]:
        """Revoke every live membership of ``pubkey`` (in one mesh, or all)."""

    @abc.abstractmethod
    async def revoked_since(self, since_ms: int) -> list[Member]: ...

    @abc.abstractmethod
    async def list_members(self, mesh_id: str) -> list[Member]:
        """Every non-revoked member of the mesh, with groups."""

    @abc.abstractmethod
    async def set_profile(self, member_id: str, fields: dict[str, Any]) -> Member:
        """Update the given profile fields (unknown names are ignored). ``sessions`` is a
        sequence of :class:`SessionProfile` and replaces the stored list whole.

        Raises:
            StoreError: no such member, or a value the schema refuses.
        """

    @abc.abstractmethod
    async def remember_nonce(self, pubkey: str, nonce: str, *, expires_at_ms: int) -> bool:
        """False when this (pubkey, nonce) was seen before: a replayed hello."""

    # -- topics and groups -------------------------------------------------------------

    @abc.abstractmethod
    async def subscribe(self, mesh_id: str, member_id: str, topic: str, now_ms: int) -> bool: ...

    @abc.abstractmethod
    async def unsubscribe(self, mesh_id: str, member_id: str, topic: str) -> bool: ...

    @abc.abstractmethod
    async def list_topics(self, mesh_id: str, member_id: str) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def join_group(self, mesh_id: str, member_id: str, group: str, now_ms: int,
                         role: str | None = None) -> bool:
        """Join (or, already in, set a new ``role``; None keeps the one held). True when
        something changed."""

    @abc.abstractmethod
    async def group_members(self, mesh_id: str) -> list[GroupMembership]:
        """Every live member of every group of the mesh, by group then display name."""

    @abc.abstractmethod
    async def topic_history(self, mesh_id: str, member_id: str, topic: str, *,
                            before: int | None, limit: int) -> list[Delivery]:
        """The topic's stored messages (what retention left), newest first, with
        ``history_id < before``; each as a Delivery to ``member_id`` with id 0.

        Raises:
            NotSubscribed: ``member_id`` is not a subscriber of ``topic``.
        """

    # -- encrypted topics (docs/protocol.md, Encrypted topics) --------------------------
    # subscribe, unsubscribe and revoke_member bump the topics' membership_version.

    @abc.abstractmethod
    async def topic_keys(self, mesh_id: str, topic: str, member_id: str) -> TopicKeyView | None:
        """The topic's state and every epoch key sealed to ``member_id``; None: no topic."""

    @abc.abstractmethod
    async def topic_members(self, mesh_id: str, topic: str) -> list[str]:
        """The member ids of the topic's live subscribers."""

    @abc.abstractmethod
    async def create_topic_epoch(self, mesh_id: str, topic: str, *, epoch: int,
                                 membership_version: int, creator: Member,
                                 keys: dict[str, tuple[str, str]], now_ms: int) -> TopicState:
        """Compare-and-set the next epoch (``keys``: pubkey -> (nonce, ciphertext)), in one
        transaction against the topic's current state (protocol.topic_epochs.epoch_refusal).

        Raises:
            DestinationNotFound: no such topic.
            EpochConflict: refused; its fields carry the current state.
        """

    @abc.abstractmethod
    async def epoch_keys(self, mesh_id: str, topic: str,
                         epoch: int) -> dict[str, SealedEpochKey] | None:
        """The epoch's sealed keys by member id; None when the epoch does not exist."""

    @abc.abstractmethod
    async def topic_epoch(self, mesh_id: str, topic: str) -> int | None:
        """The topic's current epoch (0: none yet); None when there is no such topic."""

    @abc.abstractmethod
    async def leave_group(self, mesh_id: str, member_id: str, group: str) -> bool: ...

    # -- accept and delivery -----------------------------------------------------------

    @abc.abstractmethod
    async def accept(self, request: AcceptInput) -> AcceptOutcome:
        """The §4.7.2 transaction.

        Raises:
            DestinationNotFound / MemberRevoked: B2 refused it; nothing was written.
        """

    @abc.abstractmethod
    async def pending_deliveries(self, member_id: str, *, after: int, limit: int,
                                 session_id: str = "", now_ms: int = 0,
                                 lease_ms: int = 0) -> list[Delivery]:
        """Unacked deliveries for ``member_id`` with ``delivery_id > after``, oldest first.

        With several brokers, the rows are claimed for ``session_id`` until
        ``now_ms + lease_ms`` (``FOR UPDATE SKIP LOCKED``), and rows another live session
        claimed are skipped: two sessions never push one row at once. A single-process
        store may ignore the claim arguments.
        """

    @abc.abstractmethod
    async def ack_deliveries(self, member_id: str, delivery_ids: list[int], now_ms: int) -> int:
        """Mark acked the given deliveries that belong to ``member_id``; returns how many."""

    # -- presence, brokers, notifications (cluster-wide) -------------------------------

    @abc.abstractmethod
    def notifier(self) -> Notifier:
        """The wake-up channel shared by every broker on this store."""

    @abc.abstractmethod
    async def broker_heartbeat(self, broker_id: str, *, now_ms: int) -> None:
        """This broker is alive (registers it on first call)."""

    @abc.abstractmethod
    async def presence_attach(self, mesh_id: str, member_id: str, *, broker_id: str,
                              session_id: str, now_ms: int, prefer_oldest: bool,
                              dead_after_ms: int) -> PresenceChange:
        """Make ``session_id`` the member's live session, atomically.

        A session on a broker silent for ``dead_after_ms`` does not count as live.

        Raises:
            MemberAlreadyConnected: ``prefer_oldest`` and another live session holds it.
        """

    @abc.abstractmethod
    async def presence_detach(self, mesh_id: str, member_id: str, *, session_id: str,
                              lease_until_ms: int) -> bool:
        """online -> leased, if ``session_id`` still holds the member; False otherwise."""

    @abc.abstractmethod
    async def presence_drop(self, mesh_id: str, member_id: str) -> bool:
        """Remove the member's presence at once (revoked); True if there was one."""

    @abc.abstractmethod
    async def presence_expired(self, now_ms: int, *, dead_after_ms: int,
                               lease_ms: int) -> list[tuple[str, str]]:
        """Delete leases that ran out, returning (mesh_id, member_id): each exactly once
        across all brokers. Members of dead brokers are leased from the last heartbeat."""

    @abc.abstractmethod
    async def presence_online(self, mesh_id: str) -> set[str]:
        """Member ids that are online or inside their lease."""

    @abc.abstractmethod
    async def get_member_by_id(self, member_id: str) -> Member | None: ...

    # -- operations (GET /readyz, GET /metrics) ----------------------------------------

    @abc.abstractmethod
    async def ping(self) -> None:
        """Answer a trivial query on the store's tables (GET /readyz).

        Raises:
            StoreError: the store cannot answer (its file is gone, its server is down).
        """

    @abc.abstractmethod
    async def pending_by_mesh(self, *, limit: int) -> dict[str, int]:
        """Unacked deliveries per mesh name, for the ``limit`` meshes with the most."""

    # -- maintenance -------------------------------------------------------------------

    @abc.abstractmethod
    async def orphan_check(self) -> list[dict[str, Any]]:
        """§4.7.3: dedupe rows whose message is gone while ``history_available`` is true,
        and delivery rows without a message. Each finding is a dict with its ids."""


    # -- blobs (shared files) ----------------------------------------------------------

    @abc.abstractmethod
    async def blob_begin(self, blob: Blob) -> Blob:
        """Record a new upload, or return the row already under ``blob.file_id`` (the
        caller compares: a resumed upload finds its own row)."""

    @abc.abstractmethod
    async def get_blob(self, file_id: str) -> Blob | None: ...

    @abc.abstractmethod
    async def blob_completed(self, file_id: str, now_ms: int) -> None:
        """Every byte is on disk: the blob can be fetched."""

    @abc.abstractmethod
    async def list_blobs(self, mesh_id: str, pubkey: str) -> list[Blob]:
        """The mesh's blobs ``pubkey`` uploaded or may fetch (named, or bound to a topic
        it subscribes to), newest first."""

    @abc.abstractmethod
    async def expire_blobs(self, now_ms: int, *, abandoned_after_ms: int) -> list[str]:
        """Delete the rows of blobs past their mesh's message retention, and of uploads
        left incomplete longer than ``abandoned_after_ms``; their ids (to delete the
        bytes)."""

    @abc.abstractmethod
    async def sweep(self, now_ms: int) -> SweepResult:
        """Delete expired dedupe rows and nonces; prune messages past their mesh's
        retention and flip their dedupe rows' ``history_available`` (R-BRK-2)."""
