"""What the service runs and the file that says so: a systemd unit or a launchd plist.

Which service is a :class:`ServiceUnit`: its names, the command after the interpreter,
and how the manager runs it. :data:`DAEMON_UNIT` is the daemon's user service; the
broker's (``claudemesh broker install-service``, cli/broker_service.py) is another unit
through the same renderers, plans and installer, and may be a system service.

The interpreter path is kept as given, never resolved: a virtualenv's ``bin/python`` is a
symlink, and resolving it would lose the virtualenv. Rendering is pure, so the tests (and
a dry run) see exactly the file a real install writes.
"""

from __future__ import annotations

import enum
import plistlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from claudemesh.config import Paths, paths_from_env
from claudemesh.errors import ConfigError, ExitCode

__all__ = [
    "DAEMON_ARGS",
    "DAEMON_UNIT",
    "LAUNCHD_LABEL",
    "RESTART_PREVENT_EXIT_STATUS",
    "SYSTEMD_UNIT",
    "ServicePlatform",
    "ServiceSpec",
    "ServiceUnit",
    "detect_platform",
    "render_launchd_plist",
    "render_systemd_unit",
    "render_unit_file",
    "spec_from_env",
    "unit_installed",
    "unit_path",
]

SYSTEMD_UNIT: Final = "claudemesh-daemon.service"
LAUNCHD_LABEL: Final = "com.claudemesh.daemon"
DAEMON_ARGS: Final = ("-m", "claudemesh", "daemon", "up", "--foreground")
# No restart can fix these: another machine's directory, a broker lacking a feature, a
# broker presenting another TLS key than the invite pinned (issue 14).
RESTART_PREVENT_EXIT_STATUS: Final = (ExitCode.HOST_MISMATCH, ExitCode.BROKER_INCOMPATIBLE,
                                      ExitCode.BROKER_UNTRUSTED)

_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
_SYSTEMD_BARE: Final = re.compile(r"[A-Za-z0-9_+=:,./@-]+")  # needs no quotes in a unit
_NAME: Final = re.compile(r"[A-Za-z0-9_.@-]+")  # unit names, labels, account names


class ServicePlatform(enum.StrEnum):
    SYSTEMD = "systemd"
    LAUNCHD = "launchd"


def detect_platform(sys_platform: str | ServicePlatform | None = None) -> ServicePlatform:
    """systemd on Linux, launchd on macOS; ``sys_platform`` defaults to ``sys.platform``
    and may also name the service platform itself (``"systemd"``, ``"launchd"``).

    Raises:
        ConfigError: any other OS; run ``claudemesh daemon up`` from its own init system.
    """
    if sys_platform is None:
        sys_platform = sys.platform
    if isinstance(sys_platform, ServicePlatform):
        return sys_platform
    if sys_platform in ("systemd", "launchd"):
        return ServicePlatform(sys_platform)
    if sys_platform.startswith("linux"):
        return ServicePlatform.SYSTEMD
    if sys_platform == "darwin":
        return ServicePlatform.LAUNCHD
    raise ConfigError(
        f"installing a user service is supported on Linux (systemd) and macOS (launchd), "
        f"not on {sys_platform!r}; start the daemon with `claudemesh daemon up` instead")


@dataclass(frozen=True, slots=True)
class ServiceUnit:
    """Which service: its names, the command after the interpreter, and how it is run."""

    systemd_unit: str
    launchd_label: str
    description: str
    args: tuple[str, ...]  # after the interpreter
    notify: bool = False  # Type=notify: the program sends READY=1 (the daemon does)
    restart_prevent: tuple[int, ...] = ()  # exit statuses no restart can fix
    system: bool = False  # a system service (/etc/systemd/system, /Library/LaunchDaemons)
    run_as: str | None = None  # the account a system service runs as (User=, UserName)
    limit_nofile: int | None = None  # open files: a broker holds one per connection
    what: str = "the daemon"  # in messages: "systemd runs the daemon"

    def __post_init__(self) -> None:
        names = [self.systemd_unit, self.launchd_label]
        for name in [*names, *([] if self.run_as is None else [self.run_as])]:
            if not _NAME.fullmatch(name):
                raise ConfigError(f"not a service or account name: {name!r}")
        if self.run_as is not None and not self.system:
            raise ConfigError("only a system service runs as another account")

    @property
    def manager_scope(self) -> tuple[str, ...]:
        """systemctl's and journalctl's scope option: ``--user``, or none for the system."""
        return () if self.system else ("--user",)


DAEMON_UNIT: Final = ServiceUnit(
    SYSTEMD_UNIT, LAUNCHD_LABEL, "claudemesh local messaging daemon", DAEMON_ARGS,
    notify=True, restart_prevent=tuple(RESTART_PREVENT_EXIT_STATUS))


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the service runs; every path absolute, because a service has no working dir."""

    interpreter: Path  # sys.executable as is: resolving a venv's symlink loses the venv
    config_dir: Path
    daemon_dir: Path | None  # None: the default under config_dir, and no variable set
    home: Path
    unit: ServiceUnit = DAEMON_UNIT
    log_file: Path | None = None  # launchd's output file; None: the daemon's log

    def __post_init__(self) -> None:
        named = {"interpreter": self.interpreter, "config_dir": self.config_dir,
                 "daemon_dir": self.daemon_dir, "home": self.home, "log_file": self.log_file}
        for name, path in named.items():
            if path is None:
                continue
            if not path.is_absolute():
                raise ConfigError(f"service {name} must be an absolute path, not {path}")
            if _CONTROL_CHARS.search(str(path)):
                raise ConfigError(f"service {name} contains a control character: {path!r}")

    @property
    def paths(self) -> Paths:
        """The daemon's paths as the service will see them."""
        return Paths(config_dir=self.config_dir,
                     daemon_dir=self.daemon_dir or self.config_dir / "daemon")

    @property
    def log(self) -> Path:
        """Where launchd writes the service's output."""
        return self.log_file or self.paths.log


def spec_from_env(env: Mapping[str, str], *, home: Path,
                  interpreter: str | None = None) -> ServiceSpec:
    """The spec the CLI installs: its own interpreter and directories.

    Raises:
        ConfigError: the interpreter is unknown (embedded Python) or relative.
    """
    exe = sys.executable if interpreter is None else interpreter
    if not exe:
        raise ConfigError("cannot tell which Python runs claudemesh (sys.executable is empty)")
    paths = paths_from_env(env, home)
    explicit_daemon_dir = bool(env.get("CLAUDEMESH_DAEMON_DIR"))
    return ServiceSpec(interpreter=Path(exe), config_dir=paths.config_dir,
                       daemon_dir=paths.daemon_dir if explicit_daemon_dir else None,
                       home=home)


def _environment(spec: ServiceSpec) -> dict[str, str]:
    env = {"CLAUDEMESH_CONFIG_DIR": str(spec.config_dir)}
    if spec.daemon_dir is not None:
        env["CLAUDEMESH_DAEMON_DIR"] = str(spec.daemon_dir)
    return env


# -- rendering (pure) -------------------------------------------------------------------


def _systemd_word(word: str, *, exec_line: bool) -> str:
    """One word of a unit setting, as systemd will split and unescape it.

    ``%`` starts a specifier everywhere and ``$`` a variable in command lines, so both
    are doubled; anything outside a safe set goes in double quotes, where systemd
    undoes C-style escapes (``\\\\`` and ``\\"``).
    """
    if _CONTROL_CHARS.search(word):
        raise ConfigError(f"cannot put a control character in a systemd unit: {word!r}")
    escaped = word.replace("%", "%%")
    if exec_line:
        escaped = escaped.replace("$", "$$")
    if _SYSTEMD_BARE.fullmatch(word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_systemd_unit(spec: ServiceSpec) -> str:
    """The unit file, ``claudemesh-daemon.service`` by default (see the package docstring)."""
    u = spec.unit
    exec_start = " ".join(_systemd_word(w, exec_line=True)
                          for w in (str(spec.interpreter), *u.args))
    environment = [f"Environment={_systemd_word(f'{k}={v}', exec_line=False)}"
                   for k, v in _environment(spec).items()]
    lines = [
        "# Installed by `claudemesh`; remove it with the matching uninstall command.",
        "[Unit]",
        f"Description={u.description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=5",
        "",
        "[Service]",
        f"Type={'notify' if u.notify else 'exec'}",
        f"ExecStart={exec_start}",
        *([f"User={u.run_as}"] if u.run_as else []),
        "Restart=on-failure",
        "RestartSec=5",
        *(["RestartPreventExitStatus=" + " ".join(str(int(c)) for c in u.restart_prevent)]
          if u.restart_prevent else []),
        *environment,
        "StandardOutput=journal",
        "StandardError=journal",
        *([f"LimitNOFILE={u.limit_nofile}"] if u.limit_nofile else []),
        "TimeoutStopSec=30",
        "NoNewPrivileges=yes",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if u.system else 'default.target'}",
    ]
    return "\n".join(lines) + "\n"


def render_launchd_plist(spec: ServiceSpec) -> bytes:
    """The launch agent (or daemon, for a system unit), ``com.claudemesh.daemon`` by
    default, as XML plist bytes."""
    u = spec.unit
    log = str(spec.log)
    doc: dict[str, Any] = {
        "Label": u.launchd_label,
        "ProgramArguments": [str(spec.interpreter), *u.args],
        "EnvironmentVariables": _environment(spec),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "WorkingDirectory": str(spec.home),
    }
    if u.run_as:
        doc["UserName"] = u.run_as
    if u.limit_nofile:
        doc["SoftResourceLimits"] = {"NumberOfFiles": u.limit_nofile}
    return plistlib.dumps(doc, fmt=plistlib.FMT_XML, sort_keys=True)


def render_unit_file(spec: ServiceSpec, platform: ServicePlatform) -> str:
    """The unit or plist for ``platform``, as text."""
    if platform is ServicePlatform.SYSTEMD:
        return render_systemd_unit(spec)
    return render_launchd_plist(spec).decode("utf-8")


def unit_path(platform: ServicePlatform | str, home: Path,
              env: Mapping[str, str] | None = None, *,
              unit: ServiceUnit = DAEMON_UNIT) -> Path:
    """Where the unit or plist lives; a user unit under ``home`` (systemd reads
    ``$XDG_CONFIG_HOME`` when absolute), a system unit in the system's directory.

    Raises:
        ConfigError: ``platform`` is neither a service platform nor a supported OS.
    """
    platform = detect_platform(platform)
    if platform is ServicePlatform.LAUNCHD:
        folder = (Path("/Library/LaunchDaemons") if unit.system
                  else home / "Library" / "LaunchAgents")
        return folder / f"{unit.launchd_label}.plist"
    if unit.system:
        return Path("/etc/systemd/system") / unit.systemd_unit
    xdg = (env or {}).get("XDG_CONFIG_HOME", "")
    config_home = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return config_home / "systemd" / "user" / unit.systemd_unit


def unit_installed(home: Path, platform: ServicePlatform | str,
                   env: Mapping[str, str] | None = None) -> Path | None:
    """The installed unit or plist, if any: then the CLI waits for the service to start
    the daemon instead of spawning a second one. ``platform`` may be ``sys.platform``;
    on an OS without a supported service manager nothing can be installed: None."""
    try:
        path = unit_path(platform, home, env)
    except ConfigError:
        return None
    return path if path.is_file() else None
