"""What the service runs and the file that says so: a systemd user unit or a launchd plist.

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
    "LAUNCHD_LABEL",
    "RESTART_PREVENT_EXIT_STATUS",
    "SYSTEMD_UNIT",
    "ServicePlatform",
    "ServiceSpec",
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
RESTART_PREVENT_EXIT_STATUS: Final = (ExitCode.HOST_MISMATCH, ExitCode.BROKER_INCOMPATIBLE)

_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
_SYSTEMD_BARE: Final = re.compile(r"[A-Za-z0-9_+=:,./@-]+")  # needs no quotes in a unit


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
class ServiceSpec:
    """What the service runs; every path absolute, because a service has no working dir."""

    interpreter: Path  # sys.executable as is: resolving a venv's symlink loses the venv
    config_dir: Path
    daemon_dir: Path | None  # None: the default under config_dir, and no variable set
    home: Path

    def __post_init__(self) -> None:
        named = {"interpreter": self.interpreter, "config_dir": self.config_dir,
                 "daemon_dir": self.daemon_dir, "home": self.home}
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
    """The ``claudemesh-daemon.service`` user unit (see the package docstring)."""
    exec_start = " ".join(_systemd_word(w, exec_line=True)
                          for w in (str(spec.interpreter), *DAEMON_ARGS))
    environment = [f"Environment={_systemd_word(f'{k}={v}', exec_line=False)}"
                   for k, v in _environment(spec).items()]
    lines = [
        "# Installed by `claudemesh`; remove it with the matching uninstall command.",
        "[Unit]",
        "Description=claudemesh local messaging daemon",
        "After=network-online.target",
        "Wants=network-online.target",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=notify",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        "RestartSec=5",
        "RestartPreventExitStatus=" + " ".join(str(c) for c in RESTART_PREVENT_EXIT_STATUS),
        *environment,
        "StandardOutput=journal",
        "StandardError=journal",
        "TimeoutStopSec=30",
        "NoNewPrivileges=yes",
        "",
        "[Install]",
        "WantedBy=default.target",
    ]
    return "\n".join(lines) + "\n"


def render_launchd_plist(spec: ServiceSpec) -> bytes:
    """The ``com.claudemesh.daemon`` launch agent, as XML plist bytes."""
    log = str(spec.paths.log)
    doc: dict[str, Any] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [str(spec.interpreter), *DAEMON_ARGS],
        "EnvironmentVariables": _environment(spec),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "WorkingDirectory": str(spec.home),
    }
    return plistlib.dumps(doc, fmt=plistlib.FMT_XML, sort_keys=True)


def render_unit_file(spec: ServiceSpec, platform: ServicePlatform) -> str:
    """The unit or plist for ``platform``, as text."""
    if platform is ServicePlatform.SYSTEMD:
        return render_systemd_unit(spec)
    return render_launchd_plist(spec).decode("utf-8")


def unit_path(platform: ServicePlatform | str, home: Path,
              env: Mapping[str, str] | None = None) -> Path:
    """Where the unit or plist lives; systemd reads ``$XDG_CONFIG_HOME`` when absolute.

    Raises:
        ConfigError: ``platform`` is neither a service platform nor a supported OS.
    """
    platform = detect_platform(platform)
    if platform is ServicePlatform.LAUNCHD:
        return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    xdg = (env or {}).get("XDG_CONFIG_HOME", "")
    config_home = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return config_home / "systemd" / "user" / SYSTEMD_UNIT


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
