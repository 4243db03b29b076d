"""The blob frames (shared files, docs/protocol.md "Blobs"): upload, resume, fetch, list.

The broker stores ciphertext it cannot read (the daemons encrypt with a per-file key that
travels inside a crypto_box DM, or a post sealed with a topic's epoch key), and answers
only the uploader and the recipients it named, or, for a blob bound to a topic, the
topic's subscribers at the time they ask (a member of the mesh who is not one gets
``not_subscribed``, 403); anyone else is told the file does not exist. Sizes are
ciphertext bytes; the cap (``--max-file-bytes``) is on the plaintext, so the check
allows the per-chunk MACs.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from claudemesh.broker.blobfiles import BlobFiles
from claudemesh.broker.store.base import Blob
from claudemesh.errors import (
    BlobExists,
    BlobOffsetMismatch,
    BrokerRejected,
    DestinationNotFound,
    FileNotFound,
    InvalidRequest,
    NotSubscribed,
    PayloadTooLarge,
)
from claudemesh.filecrypt import cipher_size
from claudemesh.protocol.frames import BlobBegin, BlobGet, BlobPut, BlobStatus, ListBlobs

if TYPE_CHECKING:
    from claudemesh.broker.handlers import OpenSession

__all__ = ["blob_begin", "blob_get", "blob_put", "blob_status", "list_blobs"]


def _files(session: OpenSession) -> BlobFiles:
    files = session.ctx.blobs
    if files is None:
        raise BrokerRejected("this broker stores no files")
    return files


def _view(blob: Blob, received: int) -> dict[str, Any]:
    return {"file_id": blob.file_id, "size": blob.size, "received": received,
            "complete": blob.completed_at is not None}


async def _readable(session: OpenSession, file_id: str) -> Blob:
    store, me = session.ctx.store, session.member
    blob = await store.get_blob(file_id)
    if blob is None or blob.mesh_id != session.mesh.id:
        raise FileNotFound(f"no file {file_id} shared with this member")
    if blob.readable_by(me.pubkey):
        return blob
    if blob.topic is None:
        raise FileNotFound(f"no file {file_id} shared with this member")
    if me.id not in await store.topic_members(blob.mesh_id, blob.topic):
        raise NotSubscribed(f"file {file_id} was shared to #{blob.topic}; only its"
                            " subscribers may fetch it", topic=blob.topic)
    return blob


async def _own(session: OpenSession, file_id: str) -> Blob:
    blob = await _readable(session, file_id)
    if blob.uploader_member_id != session.member.id:
        raise FileNotFound(f"no upload {file_id} of this member")
    return blob


async def blob_begin(session: OpenSession, frame: BlobBegin) -> None:
    files, ctx = _files(session), session.ctx
    cap = ctx.settings.max_file_bytes
    if frame.size > cipher_size(cap):  # B1-style: refused before anything is stored
        raise PayloadTooLarge(f"files are limited to {cap} bytes on this broker", limit=cap)
    me = session.member
    if frame.topic is not None and await ctx.store.topic_epoch(
            session.mesh.id, frame.topic) is None:
        raise DestinationNotFound(f"no topic #{frame.topic} in this mesh", topic=frame.topic)
    wanted = Blob(frame.file_id, session.mesh.id, me.id, me.pubkey,
                  tuple(sorted(set(frame.recipients or ()))), frame.size, ctx.clock(),
                  topic=frame.topic)
    blob = await ctx.store.blob_begin(wanted)
    if (blob.uploader_member_id, blob.mesh_id, blob.size, blob.recipients, blob.topic) != (
            me.id, wanted.mesh_id, wanted.size, wanted.recipients, wanted.topic):
        raise BlobExists(f"file id {frame.file_id} is another upload's")
    files.ensure()
    await session.send({"type": "result", "req_id": frame.req_id,
                        **_view(blob, files.received(blob.file_id))})


async def blob_put(session: OpenSession, frame: BlobPut) -> None:
    files, ctx = _files(session), session.ctx
    try:
        data = binascii.a2b_base64(frame.data, strict_mode=True)
    except ValueError:  # binascii.Error, or a non-ASCII string
        raise InvalidRequest("field 'data' is not base64") from None
    async with files.lock(frame.file_id):
        blob = await _own(session, frame.file_id)
        received = files.received(blob.file_id)
        end = frame.offset + len(data)
        if end > blob.size:
            raise InvalidRequest(f"bytes up to {end} overrun the blob's size {blob.size}")
        if frame.offset > received or (frame.offset < received < end):
            raise BlobOffsetMismatch(f"the blob holds {received} bytes, not {frame.offset}",
                                     received=received)
        if frame.offset == received and data:  # else: already stored (a resend)
            received = await files.append(blob.file_id, frame.offset, data)
        if received == blob.size and blob.completed_at is None:
            await ctx.store.blob_completed(blob.file_id, ctx.clock())
            blob = await _own(session, frame.file_id)
    await session.send({"type": "result", "req_id": frame.req_id, **_view(blob, received)})


async def blob_status(session: OpenSession, frame: BlobStatus) -> None:
    files = _files(session)
    blob = await _readable(session, frame.file_id)
    await session.send({"type": "result", "req_id": frame.req_id,
                        **_view(blob, files.received(blob.file_id))})


async def blob_get(session: OpenSession, frame: BlobGet) -> None:
    files = _files(session)
    blob = await _readable(session, frame.file_id)
    if blob.completed_at is None:
        raise FileNotFound(f"file {frame.file_id} is still being uploaded")
    if frame.offset > blob.size:
        raise InvalidRequest(f"offset {frame.offset} is past the blob's size {blob.size}")
    data = await files.read(blob.file_id, frame.offset, frame.length)
    await session.send({"type": "result", "req_id": frame.req_id, "file_id": blob.file_id,
                        "offset": frame.offset, "size": blob.size,
                        "data": base64.b64encode(data).decode("ascii")})


async def list_blobs(session: OpenSession, frame: ListBlobs) -> None:
    files = _files(session)
    blobs = await session.ctx.store.list_blobs(session.mesh.id, session.member.pubkey)
    await session.send({"type": "result", "req_id": frame.req_id, "blobs": [
        {**_view(b, b.size if b.completed_at is not None else files.received(b.file_id)),
         "uploader_pubkey": b.uploader_pubkey, "recipients": list(b.recipients),
         "topic": b.topic, "created_at": b.created_at} for b in blobs]})
