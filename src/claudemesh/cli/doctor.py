"""``claudemesh doctor``: check this machine's daemon setup and print the fix for each fault.

Each check is a pure function from what was read (modes, the health answer, free bytes)
to :class:`Finding` rows, so the verdicts are unit-tested without planting faults; the
command only gathers the facts. Exit 1 when any check fails (warnings do not count).
"""

from __future__ import annotations

import enum
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import click

from claudemesh.cli.common import current_paths, json_option
from claudemesh.cli.output import PRINTER, paint
from claudemesh.config import MeshConfig, Paths, load_meshes
from claudemesh.errors import ClaudemeshError, ExitCode

__all__ = ["Finding", "Level", "check_disk", "check_link", "check_mode", "check_url",
           "doctor"]

SKEW_WARN_MS: Final = 30_000  # the broker refuses hellos beyond ±60 s
DISK_WARN_BYTES: Final = 100 * 1024 * 1024
DISK_FAIL_BYTES: Final = 10 * 1024 * 1024


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    level: Level
    detail: str
    fix: str | None = None


def check_mode(path: Path, mode: int | None, want: int) -> Finding:
    """A file or directory of the daemon (R-PROC-6): no access for group or others."""
    name = f"mode {path}"
    if mode is None:
        return Finding(name, Level.OK, "not created yet")
    if mode & 0o077:
        return Finding(name, Level.FAIL, f"is {mode:04o}; group or others can read it",
                       f"chmod {want:o} {path}")
    return Finding(name, Level.OK, f"{mode:04o}")


def check_url(mesh: MeshConfig, *, loopback: bool) -> Finding:
    name = f"broker url {mesh.slug}"
    if mesh.broker_url.startswith("wss://"):
        trust = (f"key pinned ({mesh.pin})" if mesh.pin else
                 f"CA file {mesh.ca_file}" if mesh.ca_file else "the system's CAs")
        return Finding(name, Level.OK, f"{mesh.broker_url}, trusted by {trust}")
    if loopback:
        return Finding(name, Level.OK, f"{mesh.broker_url} (loopback)")
    return Finding(name, Level.WARN, f"{mesh.broker_url} is plain ws:// across the network",
                   "run the broker with --tls-cert/--tls-key and join again with a wss:// "
                   "invite made with --tls-cert")


_UNREACHABLE: Final = ("the broker is unreachable: check that it runs and that the URL is"
                       " reachable from here")
_LINK_FIXES: Final = {
    "untrusted": "the broker presented another TLS key than the invite pinned; if its key"
                 " changed on purpose, join again with a new invite, else treat it as an"
                 " attack on the network path",
    "incompatible": "the broker lacks a feature this daemon needs: upgrade the broker",
    "rejected": "the broker refused this member (revoked, or replaced by another"
                " connection): check `claudemesh mesh revoke` on the broker, or join again",
    "backoff": _UNREACHABLE,
    "connecting": _UNREACHABLE,
    "disconnected": "the link has not started: restart the daemon",
    "closed": "the daemon is stopping: start it again",
}


def check_link(health: dict[str, Any]) -> Iterable[Finding]:
    """One mesh of ``GET /v1/health``: its link, its last error, the clock skew."""
    slug, state = str(health.get("slug")), str(health.get("link"))
    error = health.get("last_error")
    if state == "open":
        yield Finding(f"link {slug}", Level.OK, f"open to {health.get('broker_url')}")
    else:
        detail = f"{state}" + (f": {error}" if error else "")
        yield Finding(f"link {slug}", Level.FAIL, detail,
                      _LINK_FIXES.get(state, "see `claudemesh daemon logs`"))
    skew = health.get("clock_skew_ms")
    if isinstance(skew, int):
        level = Level.WARN if abs(skew) > SKEW_WARN_MS else Level.OK
        yield Finding(f"clock {slug}", level, f"the broker's clock is {skew / 1000:+.1f} s"
                      " from this machine's", None if level is Level.OK else
                      "synchronise the clocks (NTP): hellos more than 60 s off are refused")


def check_disk(path: Path, free_bytes: int) -> Finding:
    mib = free_bytes / (1024 * 1024)
    name = f"disk {path}"
    if free_bytes < DISK_FAIL_BYTES:
        return Finding(name, Level.FAIL, f"{mib:.1f} MiB free; sends will be refused (507)",
                       f"free space on the file system of {path}")
    if free_bytes < DISK_WARN_BYTES:
        return Finding(name, Level.WARN, f"{mib:.1f} MiB free", f"free space on {path}")
    return Finding(name, Level.OK, f"{mib:.0f} MiB free")


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def _gather(paths: Paths) -> list[Finding]:
    from claudemesh.sdk.client import Client  # noqa: PLC0415
    from claudemesh.tls import is_loopback_url  # noqa: PLC0415

    found = [check_mode(paths.config_dir, _mode(paths.config_dir), 0o700),
             check_mode(paths.daemon_dir, _mode(paths.daemon_dir), 0o700)]
    for file in (paths.config_file, paths.token, paths.outbox_db, paths.inbox_db, paths.sock):
        found.append(check_mode(file, _mode(file), 0o600))
    try:
        meshes = load_meshes(paths.config_file)
    except ClaudemeshError as exc:
        found.append(Finding("config", Level.FAIL, exc.detail, f"repair {paths.config_file}"))
        meshes = ()
    if not meshes:
        found.append(Finding("meshes", Level.FAIL, "no mesh joined",
                             "claudemesh join <invite>"))
    found += [check_url(m, loopback=is_loopback_url(m.broker_url)) for m in meshes]
    where = paths.daemon_dir if paths.daemon_dir.exists() else paths.config_dir
    if where.exists():
        found.append(check_disk(where, shutil.disk_usage(where).free))
    try:
        health = Client(paths, timeout=5.0).health()
    except ClaudemeshError as exc:
        found.append(Finding("daemon", Level.FAIL, exc.detail, "claudemesh daemon up"))
        return found
    found.append(Finding("daemon", Level.OK, f"running, {health.get('status')}"))
    for mesh in health.get("meshes", []):
        found += check_link(mesh)
    return found


_MARK: Final = {Level.OK: ("ok", "green"), Level.WARN: ("warn", "yellow"),
                Level.FAIL: ("FAIL", "red")}


@click.command()
@json_option
def doctor() -> int:
    """Check the daemon's files, links, clock and disk, and say how to fix what is wrong."""
    found = _gather(current_paths())
    failed = [f for f in found if f.level is Level.FAIL]
    lines = []
    for f in found:
        word, color = _MARK[f.level]
        lines.append(f"{paint(f'{word:>4}', color)}  {f.check}: {f.detail}")
        if f.fix:
            lines.append(f"      fix: {f.fix}")
    PRINTER.result({"ok": not failed, "checks": [asdict(f) for f in found]}, "\n".join(lines))
    return ExitCode.FAILURE if failed else 0
