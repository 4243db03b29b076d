"""Owner-only directories and files: created private from the first byte, replaced atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from claudemesh.errors import ConfigError

__all__ = ["ensure_private_dir", "write_private_file"]


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700; tighten it if it is looser.

    Raises:
        ConfigError: it exists but is not a directory, or belongs to another user.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} exists and is not a directory")
    if info.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to uid {info.st_uid}, not to you ({os.getuid()})")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from creation, fsynced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
