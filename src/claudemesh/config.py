"""Paths, joined meshes and tunables, built once at the edge and passed in.

Only ``cli/`` and ``daemon/run.py`` call :func:`paths_from_env` with ``os.environ``;
everything below takes a :class:`Paths` or a :class:`Config`. ``config.json`` is parsed
by hand rather than with pydantic so that the CLI's hot path stays light (DESIGN §3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from claudemesh.errors import ConfigError
from claudemesh.protocol.destination import HEX64_RE, NAME_RE
from claudemesh.protocol.invite import PIN_RE

__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_INBOX_RETENTION_DAYS",
    "Config",
    "IpcLimits",
    "MeshConfig",
    "Paths",
    "add_mesh",
    "load_config",
    "load_inbox_retention_days",
    "load_meshes",
    "paths_from_env",
]

CONFIG_VERSION: Final = 1
_HEX128: Final = re.compile(r"[0-9a-f]{128}")


@dataclass(frozen=True, slots=True)
class Paths:
    """Where everything lives (DESIGN §4)."""

    config_dir: Path
    daemon_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.json"

    @property
    def sock(self) -> Path:
        return self.daemon_dir / "daemon.sock"

    @property
    def pid(self) -> Path:
        return self.daemon_dir / "daemon.pid"

    @property
    def token(self) -> Path:
        return self.daemon_dir / "local-token"

    @property
    def http_port(self) -> Path:
        return self.daemon_dir / "http.port"

    @property
    def outbox_db(self) -> Path:
        return self.daemon_dir / "outbox.db"

    @property
    def inbox_db(self) -> Path:
        return self.daemon_dir / "inbox.db"

    @property
    def host_fingerprint(self) -> Path:
        return self.daemon_dir / "host_fingerprint.json"

    @property
    def log(self) -> Path:
        return self.daemon_dir / "daemon.log"


def paths_from_env(env: Mapping[str, str], home: Path | None = None) -> Paths:
    """``CLAUDEMESH_CONFIG_DIR`` (default ``~/.claudemesh``), ``CLAUDEMESH_DAEMON_DIR``."""
    base = env.get("CLAUDEMESH_CONFIG_DIR") or str((home or Path.home()) / ".claudemesh")
    config_dir = Path(base).expanduser().absolute()
    daemon = env.get("CLAUDEMESH_DAEMON_DIR")
    daemon_dir = Path(daemon).expanduser().absolute() if daemon else config_dir / "daemon"
    return Paths(config_dir=config_dir, daemon_dir=daemon_dir)


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """One joined mesh from ``config.json``; the secret key never shows in a repr."""

    slug: str
    mesh_id: str
    member_id: str
    display_name: str
    broker_url: str
    pubkey: str
    secret_key: str = field(repr=False)
    broker_urls: tuple[str, ...] = ()  # failover brokers after broker_url (issue 6)
    pin: str | None = None  # the broker's TLS key from the invite (sha256/…, claudemesh.tls)
    ca_file: str | None = None  # a CA bundle to trust instead of the system's

    @property
    def urls(self) -> tuple[str, ...]:
        """Every broker to try, ``broker_url`` first, without repeats."""
        return tuple(dict.fromkeys((self.broker_url, *self.broker_urls)))


@dataclass(frozen=True, slots=True)
class IpcLimits:
    """R-LIM-1/3 and the slow-body guard; tests shrink them, users rarely touch them."""

    max_body_bytes: int = 1024 * 1024
    max_in_flight: int = 64
    body_timeout_s: float = 10.0
    shutdown_grace_s: float = 10.0


# R-IN-3: ``"inbox": {"retention_days": 30}`` in config.json; 0 keeps every row forever.
DEFAULT_INBOX_RETENTION_DAYS: Final = 30


@dataclass(frozen=True, slots=True)
class Config:
    paths: Paths
    meshes: tuple[MeshConfig, ...]
    limits: IpcLimits = IpcLimits()
    inbox_retention_s: float = DEFAULT_INBOX_RETENTION_DAYS * 86400.0  # 0: keep forever


def load_config(paths: Paths, *, limits: IpcLimits | None = None) -> Config:
    return Config(paths=paths, meshes=load_meshes(paths.config_file), limits=limits or IpcLimits(),
                  inbox_retention_s=load_inbox_retention_days(paths.config_file) * 86400.0)


def load_inbox_retention_days(config_file: Path) -> float:
    """``inbox.retention_days`` from config.json (default 30; 0 keeps rows forever).

    Raises:
        ConfigError: the file is invalid, or the value is not a number from 0 to 36500.
    """
    section = _read_doc(config_file).get("inbox", {})
    if not isinstance(section, dict) or set(section) - {"retention_days"}:
        raise ConfigError(f"{config_file}: 'inbox' may hold only 'retention_days'")
    days = section.get("retention_days", DEFAULT_INBOX_RETENTION_DAYS)
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days <= 36500:
        raise ConfigError(f"{config_file}: inbox.retention_days must be a number from 0"
                          " (keep forever) to 36500")
    return float(days)


def _read_doc(config_file: Path) -> dict[str, Any]:
    try:
        raw = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {config_file}: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{config_file} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{config_file} must hold a JSON object")
    return doc


def load_meshes(config_file: Path) -> tuple[MeshConfig, ...]:
    """The joined meshes; a missing file means none joined yet.

    Raises:
        ConfigError: the file is unreadable, not JSON, or an entry is malformed; the
            message names the file and the field.
    """
    doc = _read_doc(config_file)
    if doc.get("version", CONFIG_VERSION) != CONFIG_VERSION:
        raise ConfigError(f"{config_file}: unsupported version {doc.get('version')!r}")
    entries = doc.get("meshes", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{config_file}: 'meshes' must be a list")
    meshes = tuple(_parse_mesh(config_file, i, e) for i, e in enumerate(entries))
    slugs = [m.slug for m in meshes]
    if len(set(slugs)) != len(slugs):
        raise ConfigError(f"{config_file}: two meshes share a slug")
    return meshes


def _parse_mesh(config_file: Path, index: int, entry: Any) -> MeshConfig:
    where = f"{config_file}: meshes[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    values: dict[str, str] = {}
    for name in ("slug", "mesh_id", "member_id", "display_name", "broker_url", "pubkey",
                 "secret_key"):
        value = entry.get(name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{name} must be a non-empty string")
        values[name] = value
    if not NAME_RE.fullmatch(values["slug"]):
        raise ConfigError(f"{where}.slug must be 1-64 letters, digits, '.', '_' or '-'")
    if not HEX64_RE.fullmatch(values["pubkey"]):
        raise ConfigError(f"{where}.pubkey must be 64 lower-case hex characters")
    if not _HEX128.fullmatch(values["secret_key"]):
        raise ConfigError(f"{where}.secret_key must be 128 lower-case hex characters")
    if values["secret_key"][64:] != values["pubkey"]:
        raise ConfigError(f"{where}.secret_key does not end with its pubkey")
    extra = entry.get("broker_urls", [])
    if not isinstance(extra, list) or not all(
            isinstance(u, str) and u.startswith(("ws://", "wss://")) for u in extra):
        raise ConfigError(f"{where}.broker_urls must be a list of ws:// or wss:// URLs")
    pin, ca_file = entry.get("pin"), entry.get("ca_file")
    if pin is not None and not (isinstance(pin, str) and PIN_RE.fullmatch(pin)):
        raise ConfigError(f"{where}.pin must be sha256/<base64 of 32 bytes> or null")
    if ca_file is not None and not (isinstance(ca_file, str) and ca_file):
        raise ConfigError(f"{where}.ca_file must be a file name or null")
    return MeshConfig(**values, broker_urls=tuple(extra), pin=pin, ca_file=ca_file)


def add_mesh(config_file: Path, entry: MeshConfig) -> None:
    """Append a joined mesh to ``config.json``, written atomically and 0600 (R-PROC-6).

    Raises:
        ConfigError: the file is invalid, or a mesh with that slug or id is there already.
    """
    from dataclasses import asdict  # noqa: PLC0415

    from claudemesh.privatefs import ensure_private_dir, write_private_file  # noqa: PLC0415

    meshes = load_meshes(config_file)
    if any(m.slug == entry.slug or m.mesh_id == entry.mesh_id for m in meshes):
        raise ConfigError(f"{config_file} already has mesh {entry.slug!r}")
    ensure_private_dir(config_file.parent)
    doc = {**_read_doc(config_file), "version": CONFIG_VERSION,
           "meshes": [asdict(m) for m in (*meshes, entry)]}  # other sections stay
    write_private_file(config_file, (json.dumps(doc, indent=2) + "\n").encode())
