"""The daemon directory's token and Unix socket, private from the first byte.

The token is written through :func:`claudemesh.privatefs.write_private_file` (0600). The
socket is bound under a temporary name, chmod-ed 0600, then renamed onto its public path,
so the path never exists with a wider mode (issue 2, item 4).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import secrets
import socket
import stat
import sys
from pathlib import Path
from typing import Final

from claudemesh.errors import SocketPathTooLong
from claudemesh.privatefs import write_private_file

__all__ = ["SOCKET_PATH_MAX", "bind_unix_socket", "load_or_create_token", "read_token"]

log = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux and 104 on macOS, including the terminating NUL.
SOCKET_PATH_MAX: Final = 104 if sys.platform == "darwin" else 108
_TOKEN_BYTES: Final = 32
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def read_token(path: Path) -> bytes | None:
    """The local token if the file holds a well-formed one (R-AUTH-4), else None."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return text.encode("ascii") if _TOKEN_RE.fullmatch(text) else None


def load_or_create_token(path: Path) -> bytes:
    """R-AUTH-4: 32 CSPRNG bytes, base64url without padding, in a 0600 file."""
    token = read_token(path)
    if token is not None:
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            path.chmod(0o600)
        return token
    if path.exists():
        log.warning("local_token_malformed_replaced", extra={"path": str(path)})
    token = base64.urlsafe_b64encode(secrets.token_bytes(_TOKEN_BYTES)).rstrip(b"=")
    write_private_file(path, token + b"\n")
    return token


def bind_unix_socket(path: Path) -> socket.socket:
    """A listening AF_UNIX socket at ``path``, mode 0600 before the path exists.

    The caller must hold the instance lock: a file already at ``path`` is then stale
    and is removed.

    Raises:
        SocketPathTooLong: the path does not fit in ``sun_path``.
    """
    encoded = os.fsencode(path)
    if len(encoded) >= SOCKET_PATH_MAX:
        raise SocketPathTooLong(
            f"socket path {path} is {len(encoded)} bytes; the OS allows at most"
            f" {SOCKET_PATH_MAX - 1}. Set CLAUDEMESH_DAEMON_DIR to a shorter directory.")
    tmp = path.with_name(f".sock.{os.getpid()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock.bind(os.fsdecode(tmp))
        tmp.chmod(0o600)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale: we hold the lock, so nobody serves it
        tmp.replace(path)
        sock.listen(512)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    sock.setblocking(False)
    return sock
