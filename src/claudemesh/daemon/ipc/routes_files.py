"""``POST /v1/file/share``, ``GET /v1/file/get``, ``GET /v1/file/list`` (issue 15).

A share reads a local regular file, encrypts it with a fresh key in chunks, uploads the
ciphertext to the mesh's broker (resuming across link drops, daemon/transfer.py), then
queues the message that carries the file's reference and key through the normal outbox
accept, so it is delivered (and deduplicated by ``client_message_id``) like any message.
To a member, that is a DM (crypto_box) and the blob names the member; to an encrypted
``#topic``, a post sealed with the topic's epoch key (as ``/v1/topic/post`` seals) and
the blob is bound to the topic, so the broker lets its subscribers fetch it. A topic
with no epoch (no subscriber yet) is refused: the reference would travel in the clear;
so are ``@group`` and ``*``, which have no key. The call is synchronous: it answers once
the upload is whole and the message is queued, or fails after :data:`SHARE_DEADLINE_S`
(what was stored stays for a retry with the same id, which resumes it).

``get`` writes only inside the downloads directory (A-55: a caller must not make the
daemon write any path the user can write): ``out`` is a path in it (relative paths are
taken from it), by default ``<file id>/<name>``. The CLI moves the file from there to
where its user asked, with its user's own rights.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import Annotated, Final, Literal

from aiohttp import web
from pydantic import StringConstraints

from claudemesh.clock import iso_ms
from claudemesh.daemon.ipc.context import CONTEXT, DaemonContext
from claudemesh.daemon.ipc.http import json_reply, read_body
from claudemesh.daemon.ipc.requests import ClientId, StrictModel, parse_json_object, validate
from claudemesh.daemon.ipc.routes_send import choose_client_message_id, resolve_destination
from claudemesh.daemon.store.files import FileRow, FileStore
from claudemesh.daemon.store.outbox import NewSend, OutboxStore
from claudemesh.daemon.store.outbox_rules import Reply
from claudemesh.daemon.topic_keys import EpochKey, TopicSender
from claudemesh.daemon.transfer import download, upload
from claudemesh.errors import (
    BrokerUnavailable,
    DestinationNotFound,
    FileDestinationUnsupported,
    FileNotFound,
    IdempotencyKeyReused,
    InvalidRequest,
    PathNotAllowed,
    PathNotFound,
)
from claudemesh.filecrypt import CHUNK_BYTES, new_file_key, new_nonce_prefix
from claudemesh.protocol.destination import (
    Destination,
    DestinationError,
    DestinationKind,
    PeerName,
    parse_address,
)
from claudemesh.protocol.fingerprint import fingerprint_prefix
from claudemesh.protocol.ids import new_ulid
from claudemesh.protocol.sealed import MAX_FILE_NAME, FileRef
from claudemesh.sending import prepare_file

__all__ = ["SHARE_DEADLINE_S", "downloads_dir", "get_file", "list_files", "post_share"]

SHARE_DEADLINE_S: Final = 300.0  # a share or get resumes across link drops this long
GET_PARAMS: Final = frozenset({"id", "out", "mesh"})
LIST_PARAMS: Final = frozenset({"mesh"})
_FILE_ID: Final = re.compile(r"[0-9A-Za-z]{16,32}")


class ShareRequest(StrictModel):
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    to: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    message: Annotated[str, StringConstraints(min_length=1, max_length=16384)] | None = None
    mesh: str | None = None
    priority: Literal["now", "next", "low"] = "next"
    client_message_id: ClientId | None = None


def downloads_dir(ctx: DaemonContext) -> Path:
    """Where ``get`` may write: ``$CLAUDEMESH_CONFIG_DIR/downloads`` (0700)."""
    return ctx.config.paths.config_dir / "downloads"


def _source(text: str) -> tuple[Path, int]:
    """The file to share and its size: an absolute path to a readable regular file."""
    path = Path(text)
    if not path.is_absolute():
        raise InvalidRequest("field 'path' must be absolute (the daemon has its own cwd)")
    try:
        info = path.stat()
    except OSError:
        raise PathNotFound(f"no file at {text}", path=text) from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidRequest(f"{text} is not a regular file", path=text)
    if not os.access(path, os.R_OK):
        raise PathNotFound(f"{text} is not readable by the daemon", path=text)
    try:
        name_bytes = len(path.name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequest("the file's name is not valid UTF-8; rename it first") from None
    if name_bytes > MAX_FILE_NAME:
        raise InvalidRequest(f"file names are limited to {MAX_FILE_NAME} bytes")
    return path, info.st_size


def _topic_of(dest: Destination, to: str) -> str | None:
    """The topic a share goes to (None: a DM). Raises 422 for a group or a broadcast."""
    if dest.kind is DestinationKind.DM:
        return None
    if dest.kind is DestinationKind.TOPIC and dest.ref[0] not in "@*":
        return dest.ref
    raise FileDestinationUnsupported(
        f"files go to one member or to an encrypted #topic; {to!r} is a group or broadcast,"
        " whose messages travel in the clear, and so would the file's key",
        destination=to)


async def _topic_key(topics: TopicSender, topic: str) -> EpochKey:
    """The epoch key the reference is sealed with, as a post to ``#topic`` gets it.

    Raises:
        DestinationNotFound: no such topic (404, as the broker answers a post to it).
        FileDestinationUnsupported: the topic has no epoch and no subscriber (422).
        BrokerUnavailable / EpochConflict: as for a post.
    """
    key = await topics.key_for_post(topic)
    if key is not None:
        return key
    try:  # None: no such topic, or nobody to seal a key to yet
        await topics.refresh(topic)
    except DestinationNotFound:
        raise DestinationNotFound(f"no topic #{topic} in mesh {topics.mesh.slug!r};"
                                  " subscribe to create it", topic=topic) from None
    except TimeoutError:
        raise BrokerUnavailable(f"the broker did not answer topic_keys for #{topic}",
                                mesh=topics.mesh.slug) from None
    raise FileDestinationUnsupported(
        f"#{topic} has no subscriber yet, so no key to seal the file's reference with (it"
        " would travel in the clear); share it once its readers have subscribed",
        destination=f"#{topic}")


async def post_share(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    req = validate(ShareRequest, parse_json_object(await read_body(request, ctx.config.limits)))
    cmid = choose_client_message_id(request.headers.get("Idempotency-Key"),
                                    req.client_message_id) or new_ulid(ctx.clock())
    mesh = ctx.pick_mesh(req.mesh)
    try:
        address = parse_address(req.to)
    except DestinationError as exc:
        raise InvalidRequest(f"field 'to': {exc}") from None
    if address.session is not None:
        raise InvalidRequest("field 'to': files go to a member, not to one of its sessions")
    dest = resolve_destination(address.target, mesh.slug, ctx.directory)
    topic = _topic_of(dest, req.to)
    path, size = _source(req.path)
    runtime = ctx.runtime(mesh.slug)
    if not runtime.link.is_open:
        raise BrokerUnavailable(f"no broker link for mesh {mesh.slug!r}; the file cannot be"
                                " uploaded until it reconnects", mesh=mesh.slug)
    topic_key = None if topic is None else await _topic_key(runtime.topics, topic)
    to = dest.ref if topic is None else f"#{topic}"  # file_ref.peer_pubkey, and the answer's
    known = await ctx.inbox.run(lambda conn: FileStore(conn).shared_as(mesh.slug, cmid))
    ref = known.ref if known is not None else FileRef(
        new_ulid(ctx.clock()), path.name, size, "", CHUNK_BYTES, new_file_key().hex(),
        new_nonce_prefix().hex())
    if known is not None and (known.peer_pubkey, known.ref.size) != (to, size):
        raise IdempotencyKeyReused(f"client_message_id {cmid!r} shared another file",
                                   client_message_id=cmid, conflict="file_mismatch")
    report = await upload(runtime.link, path, size, ref,
                          {"recipients": [dest.ref]} if topic is None else {"topic": topic},
                          deadline=time.monotonic() + SHARE_DEADLINE_S)
    if known is None:
        ref = FileRef(ref.file_id, ref.name, size, report.sha256, ref.chunk_bytes, ref.key,
                      ref.nonce_prefix)
        now = ctx.clock()
        name = req.to if isinstance(address.target, PeerName) else None
        await ctx.inbox.run(lambda conn: FileStore(conn).remember_shared(
            ref, mesh=mesh.slug, peer_pubkey=to, peer_name=name, message=req.message,
            client_message_id=cmid, now_ms=now, topic=topic))
    elif report.sha256 != ref.sha256:
        raise IdempotencyKeyReused(f"the file at {path} changed since it was shared as"
                                   f" {cmid!r}", client_message_id=cmid, conflict="file_mismatch")
    negotiated = runtime.link.negotiated
    prepared = prepare_file(mesh, dest, ref, req.message, priority=req.priority,
                            inline_limit=None if negotiated is None else negotiated.inline_bytes,
                            topic_key=None if topic_key is None
                            else (topic_key.epoch, topic_key.key))
    send = NewSend(client_message_id=cmid, fingerprint=prepared.fingerprint,
                   payload=prepared.frozen.to_bytes(), mesh=mesh.slug,
                   destination_kind=str(dest.kind), destination_ref=dest.ref,
                   priority=req.priority)
    now = ctx.clock()
    outcome = await ctx.outbox.run(lambda conn: OutboxStore(conn).accept(send, now))
    decision = outcome.decision
    if decision.reply is Reply.CONFLICT:
        raise IdempotencyKeyReused(
            f"client_message_id {cmid!r} is taken ({decision.conflict})",
            conflict=decision.conflict, client_message_id=cmid,
            daemon_fingerprint_prefix=fingerprint_prefix(outcome.stored_fingerprint),
            request_fingerprint_prefix=fingerprint_prefix(prepared.fingerprint))
    if decision.reply is Reply.INSERT:
        ctx.on_enqueue(mesh.slug)
    ctx.state.accepts[(mesh.slug, decision.conflict or decision.reply.value)] += 1
    return json_reply({
        "client_message_id": outcome.client_message_id, "outbox_id": outcome.row_id,
        "status": "duplicate" if decision.reply is Reply.DUPLICATE else "queued",
        "mesh": mesh.slug, "to": to, "file": ref.public(),
        "upload": {"bytes": report.size, "bytes_sent": report.bytes_sent,
                   "resumed_at": report.resumed_at}}, 202)


def _query(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    unknown = set(request.query) - allowed
    if unknown:
        raise InvalidRequest(f"unknown query parameter {sorted(unknown)[0]!r}")
    if len(request.query) != len(set(request.query)):
        raise InvalidRequest("a query parameter is given twice")
    return dict(request.query)


def _target(ctx: DaemonContext, row: FileRow, out: str | None) -> Path:
    """Where a download goes: inside the downloads directory, whatever ``out`` says."""
    root = downloads_dir(ctx)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = root.resolve()
    wanted = Path(out) if out else Path(row.ref.file_id) / row.ref.name
    target = (wanted if wanted.is_absolute() else root / wanted)
    target = target.parent.resolve() / target.name
    if not target.is_relative_to(root) or target == root or target.name in ("", ".", ".."):
        raise PathNotAllowed(f"'out' must name a file inside {root}", allowed=str(root))
    if target.is_dir():
        raise InvalidRequest(f"{target} is a directory")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return target


async def get_file(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query = _query(request, GET_PARAMS)
    file_id = query.get("id")
    if not file_id:
        raise InvalidRequest("give the file's 'id'")
    if _FILE_ID.fullmatch(file_id) is None:
        raise InvalidRequest("'id' is not a file id")
    row = await ctx.inbox.run(lambda conn: FileStore(conn).get(file_id))
    if row is None or (query.get("mesh") and ctx.pick_mesh(query["mesh"]).slug != row.mesh):
        raise FileNotFound(f"no file {file_id} was shared with or by this daemon",
                           id=file_id)
    target = _target(ctx, row, query.get("out"))
    link = ctx.runtime(row.mesh).link
    if not link.is_open:
        raise BrokerUnavailable(f"no broker link for mesh {row.mesh!r}; the file cannot be"
                                " fetched until it reconnects", mesh=row.mesh)
    await download(link, row.ref, target, deadline=time.monotonic() + SHARE_DEADLINE_S)
    return json_reply({**row.view(iso_ms), "path": str(target)})


async def list_files(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    query = _query(request, LIST_PARAMS)
    slug = ctx.pick_mesh(query["mesh"]).slug if query.get("mesh") else None
    rows = await ctx.inbox.run(lambda conn: FileStore(conn).list(slug))
    return json_reply({"files": [r.view(iso_ms) for r in rows]})

