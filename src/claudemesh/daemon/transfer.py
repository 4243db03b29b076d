"""Moving a shared file's ciphertext to and from the broker, resumably (issue 15).

Upload: the file is read and sealed chunk by chunk (``filecrypt``), and each chunk goes as
one ``blob_put``, up to :data:`WINDOW` in flight. When the link drops (the broker
restarted, the network blinked) the upload waits for the link to reopen, asks the broker
how much it holds (``blob_begin`` again answers ``received``), and goes on from there:
chunks seal deterministically, so a chunk cut in half is re-sealed and sent from the
middle. Everything is bounded by one deadline; past it the call fails with what was
stored still on the broker for a retry with the same ``client_message_id``.

Download: each chunk is fetched with ``blob_get`` (pipelined the same way), opened at its
own index, and written to a temporary file beside the target; the target appears (by
rename) only when every chunk opened and the whole plaintext has the promised size and
sha256. Nothing unverified is ever at the target path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

from claudemesh.crypto import CryptoFailure
from claudemesh.daemon.link import BrokerLink
from claudemesh.errors import (
    BlobOffsetMismatch,
    BrokerUnavailable,
    FileCorrupt,
    error_from_frame,
)
from claudemesh.filecrypt import MAC_BYTES, cipher_size, open_chunk, seal_chunk
from claudemesh.protocol.replies import Result
from claudemesh.protocol.sealed import FileRef

__all__ = ["WINDOW", "UploadReport", "download", "upload"]

WINDOW: Final = 8  # chunks in flight per transfer
T = TypeVar("T")


@dataclass(slots=True)
class UploadReport:
    size: int  # ciphertext bytes
    sha256: str = ""
    bytes_sent: int = 0  # ciphertext bytes put on the wire, resends included
    resumed_at: list[int] = field(default_factory=list)  # broker's offset at each resume


class _Source:
    """The file's sealed chunks, re-sealable at any index (same key, nonce, bytes)."""

    def __init__(self, path: Path, ref: FileRef, plain_size: int) -> None:
        self._file = path.open("rb")
        self._ref = ref
        self._size = plain_size  # as stat'ed: a file that grows is cut there
        self._key = bytes.fromhex(ref.key)
        self._prefix = bytes.fromhex(ref.nonce_prefix)
        self._hash = hashlib.sha256()
        self._hashed = 0  # chunks already in the hash

    def sealed(self, index: int) -> bytes:
        start = index * self._ref.chunk_bytes
        self._file.seek(start)
        plain = self._file.read(max(0, min(self._ref.chunk_bytes, self._size - start)))
        if index == self._hashed:
            self._hash.update(plain)
            self._hashed += 1
        return seal_chunk(plain, key=self._key, prefix=self._prefix, index=index)

    def finish(self) -> str:
        """The plaintext's sha256 (hashing any chunk this upload never had to seal)."""
        while self._hashed * self._ref.chunk_bytes < self._size:
            self.sealed(self._hashed)
        return self._hash.hexdigest()

    def close(self) -> None:
        self._file.close()


async def _answer(link: BrokerLink, future: Awaitable[Any], req_id: str,
                  timeout_s: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout_s):
            reply = await future
    finally:
        link.forget(req_id)
    if not isinstance(reply, Result):
        raise error_from_frame(reply)
    return reply.data


async def _retrying(link: BrokerLink, deadline: float,
                    attempt: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
    """Run ``attempt`` until it gets through, waiting out link drops until ``deadline``.
    The flag says whether it had to wait (a resume)."""
    waited = False
    while True:
        try:
            return await attempt(), waited
        except (BrokerUnavailable, TimeoutError):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnavailable("the broker link stayed down past the transfer's"
                                        " deadline; retry to resume") from None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await link.wait_open()
            waited = True


async def upload(link: BrokerLink, path: Path, plain_size: int, ref: FileRef,
                 audience: dict[str, Any], *, deadline: float,
                 request_timeout_s: float = 30.0) -> UploadReport:
    """Upload ``path`` as ``ref.file_id``; the report carries the plaintext's sha256.
    ``audience`` is who may fetch it, as ``blob_begin`` says it: ``{"recipients":
    [pubkey]}`` or ``{"topic": name}``.

    Raises:
        PayloadTooLarge: over the broker's cap (nothing stored).
        BrokerUnavailable: the link stayed down past ``deadline``.
        ClaudemeshError: another refusal of the broker, as its typed error.
    """
    job = _Upload(link, _Source(path, ref, plain_size), ref,
                  cipher_size(plain_size, ref.chunk_bytes), request_timeout_s)
    begin = {"type": "blob_begin", "file_id": ref.file_id, "size": job.total, **audience}
    try:
        while True:
            state, resumed = await _retrying(
                link, deadline, lambda: link.request(begin, timeout_s=request_timeout_s))
            received = int(state.data["received"])
            if resumed or job.report.bytes_sent:
                job.report.resumed_at.append(received)
            if state.data["complete"]:
                break
            try:
                await job.put_from(received)
                break  # the last put's answer completed the blob
            except (BrokerUnavailable, TimeoutError, BlobOffsetMismatch):
                if time.monotonic() > deadline:
                    raise BrokerUnavailable("the upload did not finish before its deadline;"
                                            " retry to resume") from None
        job.report.sha256 = job.source.finish()
    finally:
        job.source.close()
    return job.report


Pending = deque[tuple[str, "asyncio.Future[Any]"]]


def _forget_all(link: BrokerLink, pending: Pending) -> None:
    for req_id, fut in pending:
        link.forget(req_id)
        if fut.done() and not fut.cancelled():
            fut.exception()  # looked at: no "never retrieved" warning
    pending.clear()


@dataclass(slots=True)
class _Upload:
    link: BrokerLink
    source: _Source
    ref: FileRef
    total: int  # ciphertext bytes
    timeout_s: float
    report: UploadReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = UploadReport(self.total)

    async def put_from(self, start: int) -> None:
        """Send from ``start`` to the end, ``WINDOW`` puts in flight."""
        pending: Pending = deque()
        stride = self.ref.chunk_bytes + MAC_BYTES
        offset = start
        try:
            if start == self.total:  # all there but not marked: an empty put completes it
                pending.append(await self._put(self.total, b""))
            while offset < self.total or pending:
                while offset < self.total and len(pending) < WINDOW:
                    index, skip = divmod(offset, stride)
                    data = self.source.sealed(index)[skip:]
                    pending.append(await self._put(offset, data))
                    offset += len(data)
                    self.report.bytes_sent += len(data)
                req_id, fut = pending.popleft()
                await _answer(self.link, fut, req_id, self.timeout_s)
        finally:
            _forget_all(self.link, pending)

    async def _put(self, offset: int, data: bytes) -> tuple[str, asyncio.Future[Any]]:
        return await self.link.submit({"type": "blob_put", "file_id": self.ref.file_id,
                                       "offset": offset,
                                       "data": base64.b64encode(data).decode("ascii")})


async def download(link: BrokerLink, ref: FileRef, target: Path, *, deadline: float,
                   request_timeout_s: float = 30.0) -> None:
    """Fetch, open and verify ``ref`` into ``target`` (0600), resuming across link drops.

    Raises:
        FileNotFound: the broker has no such blob for this member (or it is incomplete).
        FileCorrupt: a chunk did not open, or size or sha256 differ (nothing written).
        BrokerUnavailable: the link stayed down past ``deadline``.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            job = _Download(link, ref, request_timeout_s)
            await job.into(out, deadline)
            out.flush()
            os.fsync(out.fileno())
        job.verify()
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class _Download:
    def __init__(self, link: BrokerLink, ref: FileRef, timeout_s: float) -> None:
        self.link, self.ref, self.timeout_s = link, ref, timeout_s
        self.stride = ref.chunk_bytes + MAC_BYTES
        self.count = -(-cipher_size(ref.size, ref.chunk_bytes) // self.stride)
        self.key, self.prefix = bytes.fromhex(ref.key), bytes.fromhex(ref.nonce_prefix)
        self.digest = hashlib.sha256()
        self.written = 0

    async def into(self, out: BinaryIO, deadline: float) -> None:
        index = 0
        while index < self.count:
            chunks, _ = await _retrying(self.link, deadline,
                                        functools.partial(self._fetch, index))
            for sealed in chunks:
                try:
                    plain = open_chunk(sealed, key=self.key, prefix=self.prefix, index=index)
                except CryptoFailure as exc:
                    raise FileCorrupt(f"file {self.ref.file_id}: {exc}") from None
                out.write(plain)
                self.digest.update(plain)
                self.written += len(plain)
                index += 1

    def verify(self) -> None:
        got = self.digest.hexdigest()
        if self.written != self.ref.size or got != self.ref.sha256:
            raise FileCorrupt(f"file {self.ref.file_id}: got {self.written} bytes with sha256"
                              f" {got[:16]}…, expected {self.ref.size} bytes,"
                              f" {self.ref.sha256[:16]}…")

    async def _fetch(self, first: int) -> list[bytes]:
        """Chunks ``first`` .. ``first + WINDOW - 1`` (fewer at the end), pipelined."""
        asked: Pending = deque()
        try:
            for index in range(first, min(self.count, first + WINDOW)):
                asked.append(await self.link.submit({
                    "type": "blob_get", "file_id": self.ref.file_id,
                    "offset": index * self.stride, "length": self.stride}))
            chunks = []
            while asked:
                req_id, fut = asked.popleft()
                data = await _answer(self.link, fut, req_id, self.timeout_s)
                chunks.append(base64.b64decode(data["data"]))
            return chunks
        finally:
            _forget_all(self.link, asked)
