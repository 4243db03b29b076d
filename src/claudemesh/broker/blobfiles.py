"""The bytes of shared files: one file per blob in a private directory (0700, files 0600).

The store keeps who may read a blob and whether it is whole (``blob`` table); this module
keeps its ciphertext. How much of an upload arrived is the file's length, and every
append is fsynced before it is answered, so after a crash (even ``kill -9`` mid-write)
the length is a safe resume point: the uploader asks ``blob_status`` and sends from
there. Appends to one blob are serialised by a lock (a connection handles its frames
concurrently, and a pipelined upload has several ``blob_put`` in flight); asyncio locks
wake waiters in arrival order, so pipelined appends land in the order they were sent.

Where the directory is: beside a SQLite store (``<db>.blobs/``); for PostgreSQL, the
broker's ``--blob-dir`` (default ``$CLAUDEMESH_CONFIG_DIR/broker/blobs``), shared by the
brokers of a cluster only if it is a shared filesystem (docs/protocol.md "Blobs").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from pathlib import Path
from typing import Final
from weakref import WeakValueDictionary

from claudemesh.errors import InsufficientStorage, InvalidRequest

__all__ = ["BlobFiles", "blob_dir_for"]

_ID_RE: Final = re.compile(r"[0-9A-Za-z]{16,32}")


def blob_dir_for(location: str, configured: str | None) -> Path | None:
    """The blob directory for a store ``location``: ``configured`` when given, else
    ``<db>.blobs`` beside a SQLite file; None for PostgreSQL without one (no files: the
    CLI always gives one)."""
    if configured:
        return Path(configured).expanduser()
    if location.startswith(("postgresql://", "postgres://")):
        return None
    return Path(f"{Path(location).expanduser()}.blobs")


class BlobFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def ensure(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)

    def path(self, file_id: str) -> Path:
        if _ID_RE.fullmatch(file_id) is None:  # frames check it too; never a path trick
            raise InvalidRequest(f"bad file id {file_id[:40]!r}")
        return self.root / file_id

    def lock(self, file_id: str) -> asyncio.Lock:
        lock = self._locks.get(file_id)
        if lock is None:
            lock = self._locks[file_id] = asyncio.Lock()
        return lock

    def received(self, file_id: str) -> int:
        try:
            return self.path(file_id).stat().st_size
        except FileNotFoundError:
            return 0

    async def append(self, file_id: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (the current length), fsync; the new length."""
        return await asyncio.to_thread(self._append, self.path(file_id), offset, data)

    @staticmethod
    def _append(path: Path, offset: int, data: bytes) -> int:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, offset)  # a torn tail past the resume point goes
                os.pwrite(fd, data, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise InsufficientStorage(f"cannot store the blob: {exc.strerror}") from exc
        return offset + len(data)

    async def read(self, file_id: str, offset: int, length: int) -> bytes:
        def op() -> bytes:
            with self.path(file_id).open("rb") as f:
                f.seek(offset)
                return f.read(length)
        return await asyncio.to_thread(op)

    def delete(self, file_id: str) -> None:
        with contextlib.suppress(FileNotFoundError, InvalidRequest):
            self.path(file_id).unlink()
