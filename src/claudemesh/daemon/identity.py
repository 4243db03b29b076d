"""Host fingerprint: notice a cloned disk, but survive reboots, docks and MAC rotation.

Theory of operation. ``host_fingerprint.json`` in the daemon directory records which
machine the directory, and so its keypair, was set up on (R-ID-7, R-ID-8). It holds two
measurements: ``host_id``, the OS's install or hardware id (``linux:<machine-id>``,
R-ID-9; ``darwin:<IOPlatformUUID>``, R-ID-13), and ``stable_mac``, the MAC of the most
physical-looking interface (R-ID-10). ``fingerprint`` is
``sha256("v1" 0x00 host_id 0x00 stable_mac)``.

The hardware id decides whenever both the record and this host have one: equal ids are
the same machine even if the MAC moved (a dock, a Wi-Fi privacy rotation), and the record
is rewritten with the new MAC; different ids are a clone, and the daemon must refuse to
start with exit 4 (R-ID-12). Only a record without a host_id is judged by its MAC
(R-ID-11, MAC-only). A host with neither gets a random ``random:<uuid>`` host_id,
persisted, which then always matches: clone detection is off on that host. A record we
cannot parse is reported ``unreadable`` and left alone for a human; the daemon carries on.
:func:`accept_host` is the operator saying "same identity, new hardware": it rewrites the
record whatever it held. This catches accidents only; copying both files defeats it
(R-ID-7). Every read of the host goes through :class:`HostRoots`, so tests run on a fake
tree, and the record is only ever replaced atomically, 0600.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from claudemesh.privatefs import write_private_file

__all__ = [
    "DEFAULT_ROOTS",
    "FILE_NAME",
    "SCHEMA_VERSION",
    "HostCheck",
    "HostResult",
    "HostRoots",
    "accept_host",
    "check_host",
    "compute_fingerprint",
    "current_identity",
    "mismatch_message",
    "pick_stable_mac",
]

log = logging.getLogger(__name__)

FILE_NAME: Final = "host_fingerprint.json"
SCHEMA_VERSION: Final = 1
RANDOM_PREFIX: Final = "random:"  # R-ID-11: a host_id we invented, not one we measured

# R-ID-10, plus the v2 additions (original notes §5 item 23): loopback, tunnels, VPNs,
# container and VM bridges, Apple's AWDL/LLW/anpi and access-point interfaces.
_VIRTUAL_RE: Final = re.compile(
    r"^(lo|docker|br-|veth|tap|tun|tailscale|wg|utun|ppp|vboxnet|vmnet|awdl|llw|virbr"
    r"|bridge|anpi|ap[0-9])",
    re.IGNORECASE,
)
_MAC_RE: Final = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_ZERO_MAC: Final = "00:00:00:00:00:00"
_IOREG_UUID_RE: Final = re.compile(r'"IOPlatformUUID"\s*=\s*"([^"]+)"')
_FINGERPRINT_RE: Final = re.compile(r"[0-9a-f]{64}")
_IOREG: Final = ("/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice")
_COMMAND_TIMEOUT_S: Final = 5.0


def _run_command(argv: list[str]) -> str:
    """Run a fixed, absolute command and return its stdout; raise on any failure."""
    done = subprocess.run(  # noqa: S603 - fixed argv from this module, no shell
        argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=True)
    return done.stdout


@dataclass(frozen=True, slots=True)
class HostRoots:
    """Where the host is read from; tests point ``root`` at a fake tree, ``run`` at a fake."""

    root: Path = Path("/")
    platform: str = sys.platform
    run: Callable[[list[str]], str] = _run_command


DEFAULT_ROOTS: Final = HostRoots()


class HostCheck(enum.StrEnum):
    FIRST_RUN = "first_run"  # no record: written
    MATCH = "match"
    MATCH_MAC_CHANGED = "match_mac_changed"  # same host_id, new MAC: record rewritten
    MISMATCH = "mismatch"  # a clone, or moved hardware: refuse to start, record untouched
    UNREADABLE = "unreadable"  # corrupt or unknown record: warn, carry on, record untouched
    ACCEPTED = "accepted"  # accept_host only: record rewritten on the operator's word


@dataclass(frozen=True, slots=True)
class HostResult:
    """What a check found, enough for a log line or the exit-4 message.

    ``stored_*`` is the record on disk before the call ("" if none or unreadable),
    ``current_*`` what this host measures now ("" if unavailable), and ``fingerprint``
    the one on file after the call ("" if unreadable).
    """

    outcome: HostCheck
    message: str
    path: Path
    stored_host_id: str = ""
    stored_mac: str = ""
    current_host_id: str = ""
    current_mac: str = ""
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class _Record:
    host_id: str
    mac: str
    fingerprint: str


class _Unreadable(ValueError):
    """The record exists but is not one we wrote; a human must look (R-ID-12)."""


def compute_fingerprint(host_id: str, mac: str) -> str:
    """``sha256("v1" 0x00 host_id 0x00 mac)``; the NULs keep the fields from sliding."""
    data = b"v1\x00" + host_id.encode("utf-8") + b"\x00" + mac.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


# --- measuring the host -------------------------------------------------------------


def _first_line(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def _linux_host_id(root: Path) -> str:
    """R-ID-9: /etc/machine-id, else the dbus copy; systemd's placeholder is no id."""
    for relative in ("etc/machine-id", "var/lib/dbus/machine-id"):
        value = _first_line(root / relative)
        if value and value != "uninitialized":
            return f"linux:{value}"
    return ""


def _darwin_host_id(run: Callable[[list[str]], str]) -> str:
    """R-ID-13: IOPlatformUUID survives OS reinstalls and MAC rotation alike."""
    try:
        output = run(list(_IOREG))
    except (OSError, subprocess.SubprocessError):
        return ""
    found = _IOREG_UUID_RE.search(output)
    return f"darwin:{found.group(1).strip()}" if found and found.group(1).strip() else ""


def _host_id(roots: HostRoots) -> str:
    if roots.platform.startswith("linux"):
        return _linux_host_id(roots.root)
    if roots.platform == "darwin":
        return _darwin_host_id(roots.run)
    return ""


def _interface_rank(name: str) -> int:
    """R-ID-10: wired before wireless before the rest (wired MACs do not rotate)."""
    lowered = name.lower()
    if lowered.startswith(("en", "eth")):
        return 0
    if lowered.startswith("wl"):
        return 1
    return 2


def pick_stable_mac(interfaces: dict[str, str]) -> str:
    """The MAC to record from ``{interface name: address}``, or "" if none qualifies.

    Virtual names, the all-zero MAC and malformed addresses are skipped; universally
    administered MACs beat locally administered (often randomised) ones; then
    ``en*``/``eth*``, ``wl*``, others; then by name.
    """
    candidates: list[tuple[bool, int, str, str]] = []
    for name, address in interfaces.items():
        mac = address.strip().lower()
        if _VIRTUAL_RE.match(name) or mac == _ZERO_MAC or not _MAC_RE.fullmatch(mac):
            continue
        locally_administered = bool(int(mac[:2], 16) & 0x02)
        candidates.append((locally_administered, _interface_rank(name), name, mac))
    return min(candidates)[3] if candidates else ""


def _linux_interfaces(root: Path) -> dict[str, str]:
    """Name -> address from sysfs; no ``device`` check, containers lack it."""
    net = root / "sys" / "class" / "net"
    try:
        names = sorted(entry.name for entry in net.iterdir())
    except OSError:
        return {}
    found: dict[str, str] = {}
    for name in names:
        address = _first_line(net / name / "address")
        if address:
            found[name] = address
    return found


def current_identity(roots: HostRoots = DEFAULT_ROOTS) -> tuple[str, str]:
    """``(host_id, stable_mac)`` as measured now; either is "" when unavailable."""
    return _host_id(roots), pick_stable_mac(_linux_interfaces(roots.root))


def _measure(roots: HostRoots) -> tuple[str, str]:
    """:func:`current_identity`, logging the R-ID-11 fallbacks it falls into."""
    host_id, mac = current_identity(roots)
    if not host_id and mac:
        log.warning("fingerprint_host_id_unavailable",
                    extra={"platform": roots.platform, "fallback": "mac_only"})
    elif not host_id:
        log.warning("fingerprint_unavailable",
                    extra={"platform": roots.platform, "fallback": "random_id",
                           "clone_detection": "off"})
    return host_id, mac


# --- the record ---------------------------------------------------------------------


def _read_record(path: Path) -> _Record | None:
    """The record on disk, None if there is none; raises _Unreadable otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unreadable(f"cannot read it ({type(exc).__name__})") from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        raise _Unreadable("it is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Unreadable("it is not a JSON object")
    version = data.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise _Unreadable(f"unknown schema_version {version!r}")
    fields = ("fingerprint", "host_id", "stable_mac", "written_at")
    missing = [name for name in fields if not isinstance(data.get(name), str)]
    if missing:
        raise _Unreadable(f"missing or non-string fields: {', '.join(missing)}")
    record = _Record(data["host_id"], data["stable_mac"], data["fingerprint"])
    if not record.host_id and not record.mac:
        raise _Unreadable("both host_id and stable_mac are empty")
    if (not _FINGERPRINT_RE.fullmatch(record.fingerprint)
            or record.fingerprint != compute_fingerprint(record.host_id, record.mac)):
        raise _Unreadable("the fingerprint does not match its own host_id and stable_mac")
    return record


def _write_record(path: Path, host_id: str, mac: str, now: datetime) -> _Record:
    """Replace the record atomically, 0600; invent a random host_id if we have nothing."""
    if not host_id and not mac:
        host_id = f"{RANDOM_PREFIX}{uuid.uuid4()}"  # R-ID-11: clone detection off
    record = _Record(host_id, mac, compute_fingerprint(host_id, mac))
    body = {
        "schema_version": SCHEMA_VERSION,
        "fingerprint": record.fingerprint,
        "host_id": record.host_id,
        "stable_mac": record.mac,
        "written_at": now.astimezone(UTC).isoformat(timespec="seconds").replace(
            "+00:00", "Z"),
    }
    write_private_file(path, (json.dumps(body, indent=2) + "\n").encode("utf-8"))
    return record


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- the decision -------------------------------------------------------------------


def _same_host(stored: _Record, host_id: str, mac: str) -> bool:
    """The hardware id decides when both sides have one (item 24: host_id wins).

    Otherwise only a non-empty MAC on both sides can vouch: a record without a host_id
    is MAC-only (R-ID-11), and a host that lost its host_id must still show the MAC.
    """
    if stored.host_id and host_id:
        return stored.host_id == host_id
    return bool(stored.mac) and stored.mac == mac


def check_host(daemon_dir: Path, roots: HostRoots = DEFAULT_ROOTS, *,
               now: Callable[[], datetime] | None = None) -> HostResult:
    """Compare this host with the record in ``daemon_dir``; write it on first run.

    Never raises for a bad record (``unreadable``); the caller refuses to start on
    ``mismatch`` (R-ID-12, exit 4) with :func:`mismatch_message`.
    """
    clock = now or _utc_now
    path = daemon_dir / FILE_NAME
    host_id, mac = _measure(roots)

    def write(new_host_id: str, new_mac: str) -> _Record:
        return _write_record(path, new_host_id, new_mac, clock())

    try:
        stored = _read_record(path)
    except _Unreadable as exc:
        log.warning("host_fingerprint_unreadable", extra={"path": str(path),
                                                          "reason": str(exc)})
        return HostResult(
            HostCheck.UNREADABLE,
            f"{path} is unreadable ({exc}); clone detection is skipped for this start and "
            "the file is left as is. Run `claudemesh daemon accept-host` to rewrite it.",
            path, current_host_id=host_id, current_mac=mac)
    if stored is None:
        written = write(host_id, mac)
        log.info("host_fingerprint_written", extra={
            "host_id": written.host_id, "stable_mac": written.mac,
            "clone_detection": "off" if written.host_id.startswith(RANDOM_PREFIX) else "on"})
        return HostResult(HostCheck.FIRST_RUN, f"recorded this host in {path}", path,
                          current_host_id=host_id, current_mac=mac,
                          fingerprint=written.fingerprint)
    return _compare(stored, host_id, mac, path=path, write=write)


def _compare(stored: _Record, host_id: str, mac: str, *, path: Path,
             write: Callable[[str, str], _Record]) -> HostResult:
    """Judge an existing record against this host; rewrite it only on a match."""
    base = HostResult(HostCheck.MATCH, "same host", path, stored_host_id=stored.host_id,
                      stored_mac=stored.mac, current_host_id=host_id, current_mac=mac,
                      fingerprint=stored.fingerprint)
    if stored.host_id.startswith(RANDOM_PREFIX):
        # R-ID-11: a random id cannot tell hosts apart, so it always matches; once this
        # host measures something real, record it so clone detection starts.
        if not host_id and not mac:
            return replace(base, message="random host id; clone detection is off")
        written = write(host_id, mac)
        log.info("host_fingerprint_refreshed", extra={"note": "random_id_replaced",
                                                      "host_id": host_id, "stable_mac": mac})
        return replace(base, message=f"replaced the random host id; {path} rewritten",
                       fingerprint=written.fingerprint)
    if not _same_host(stored, host_id, mac):
        log.error("host_fingerprint_mismatch", extra={
            "stored_host_id": stored.host_id, "current_host_id": host_id,
            "stored_mac": stored.mac, "current_mac": mac})
        mismatch = replace(base, outcome=HostCheck.MISMATCH)
        return replace(mismatch, message=mismatch_message(mismatch))
    # Same host. Refresh the record when the host now measures more or different facts:
    # a rotated MAC (host_id wins, item 24), or a host_id new to a MAC-only record.
    if not ((host_id and host_id != stored.host_id) or (mac and mac != stored.mac)):
        return base
    written = write(host_id or stored.host_id, mac or stored.mac)
    if written.mac != stored.mac:
        log.info("host_fingerprint_refreshed", extra={
            "note": "mac_changed", "stored_mac": stored.mac, "current_mac": mac})
        return replace(base, outcome=HostCheck.MATCH_MAC_CHANGED,
                       message=f"same host_id, MAC changed from {stored.mac or '(none)'} "
                               f"to {mac}; {path} rewritten",
                       fingerprint=written.fingerprint)
    log.info("host_fingerprint_refreshed", extra={"note": "host_id_recorded",
                                                  "host_id": host_id})
    return replace(base, message=f"same MAC; recorded host_id {host_id} in {path}",
                   fingerprint=written.fingerprint)


def accept_host(daemon_dir: Path, roots: HostRoots = DEFAULT_ROOTS, *,
                now: Callable[[], datetime] | None = None) -> HostResult:
    """``claudemesh daemon accept-host``: record this host, whatever the file held.

    For a genuine hardware move the keypair stays (R-ID-12); a clone should re-join
    with a new key instead.
    """
    path = daemon_dir / FILE_NAME
    host_id, mac = _measure(roots)
    try:
        stored = _read_record(path)
    except _Unreadable:
        stored = None
    written = _write_record(path, host_id, mac, (now or _utc_now)())
    log.warning("host_fingerprint_accepted", extra={
        "stored_host_id": stored.host_id if stored else "", "host_id": written.host_id,
        "stable_mac": written.mac})
    return HostResult(
        HostCheck.ACCEPTED, f"recorded this host in {path}", path,
        stored_host_id=stored.host_id if stored else "",
        stored_mac=stored.mac if stored else "",
        current_host_id=host_id, current_mac=mac, fingerprint=written.fingerprint)


def mismatch_message(result: HostResult) -> str:
    """What the operator reads when the daemon refuses to start (R-ID-12, exit 4)."""
    def shown(value: str) -> str:
        return value or "(none)"

    return (
        f"this daemon directory belongs to another machine: {result.path} records "
        f"host_id {shown(result.stored_host_id)} (MAC {shown(result.stored_mac)}), but "
        f"this machine is host_id {shown(result.current_host_id)} "
        f"(MAC {shown(result.current_mac)}). If you moved to new hardware, run "
        "`claudemesh daemon accept-host` to keep this identity. If this machine is a "
        "clone (VM image, restored backup, copied home directory), do not accept it: "
        "re-join the mesh with a new key from a fresh daemon directory, so two machines "
        "never share one identity."
    )
