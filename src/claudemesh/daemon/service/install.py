"""Install the daemon as a user service: a systemd user unit on Linux, a launchd agent on macOS.

Theory of operation. The service runs ``<python> -m claudemesh daemon up --foreground``
with the interpreter and the ``CLAUDEMESH_CONFIG_DIR`` (and ``CLAUDEMESH_DAEMON_DIR``, when
set) of the CLI that installed it, so the service and the CLI always mean the same daemon
directory. The interpreter path is kept as given, never resolved: a virtualenv's
``bin/python`` is a symlink, and resolving it would lose the virtualenv.

Everything that decides is pure: :func:`render_systemd_unit` and
:func:`render_launchd_plist` build the file, :func:`install_plan` and
:func:`uninstall_plan` list the commands around the one file write or removal, and
:func:`detect_ci` reads the environment. :func:`install` and :func:`uninstall` only write
or remove that file and hand the commands to an injectable runner, so tests need neither
systemd nor launchd, and a dry run lists exactly what a real run would do.

Restarts. systemd: ``Type=notify``, so a start succeeds only once the daemon has sent
``READY=1`` (:mod:`claudemesh.daemon.notify`) and ``systemctl --user enable --now``
returns after the API answers, or fails with the daemon's own error. It restarts after a
failure, 5 s apart, at most 5 starts in 300 s, and never after exit 4 (host fingerprint
mismatch) or 6 (broker incompatible), which no restart can fix. launchd:
``KeepAlive.SuccessfulExit = false`` restarts only after a failure, no faster than
``ThrottleInterval``; launchd has no way to exempt exit codes, so exits 4 and 6 are retried
every 5 s until the operator fixes the cause the log names.

Logs. Under systemd the foreground daemon's JSON lines on stderr go to journald
(``journalctl --user -u claudemesh-daemon.service``); under launchd, to ``daemon.log`` in
the daemon directory.

Failures. The refusals (CI without ``allow_ci``, an unsupported OS, relative paths) raise
:class:`~claudemesh.errors.ConfigError` before anything is touched. Everything after
that is reported in the :class:`InstallReport`, never raised: a container without a user
bus gets its unit file and a report saying that ``systemctl`` failed and why.
"""

from __future__ import annotations

import contextlib
import enum
import os
import plistlib
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from claudemesh.config import Paths, paths_from_env
from claudemesh.errors import ConfigError
from claudemesh.privatefs import ensure_private_dir

__all__ = [
    "CI_REFUSAL",
    "DAEMON_ARGS",
    "LAUNCHD_LABEL",
    "SYSTEMD_UNIT",
    "CommandResult",
    "CommandRun",
    "InstallReport",
    "OnFailure",
    "Plan",
    "Runner",
    "ServicePlatform",
    "ServiceSpec",
    "Step",
    "detect_ci",
    "detect_platform",
    "install",
    "install_plan",
    "linger_warning",
    "render_launchd_plist",
    "render_systemd_unit",
    "render_unit_file",
    "run_command",
    "service_state",
    "spec_from_env",
    "uninstall",
    "uninstall_plan",
    "unit_installed",
    "unit_path",
]

SYSTEMD_UNIT: Final = "claudemesh-daemon.service"
LAUNCHD_LABEL: Final = "com.claudemesh.daemon"
DAEMON_ARGS: Final = ("-m", "claudemesh", "daemon", "up", "--foreground")
CI_REFUSAL: Final = (
    "Refusing to install a persistent service in CI; pass --allow-ci to do it anyway."
)
# R-SVC-4: any of these set (CI only when it says true/1) means we run in CI.
CI_VARIABLES: Final = ("GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "JENKINS_URL")
# Longer than systemd's default start timeout (90 s): `enable --now` waits for READY=1.
COMMAND_TIMEOUT_S: Final = 120.0
EXIT_NOT_FOUND: Final = 127
RESTART_PREVENT_EXIT_STATUS: Final = (4, 6)  # host mismatch, broker incompatible

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
    """The ``claudemesh-daemon.service`` user unit (see the module docstring)."""
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


def detect_ci(env: Mapping[str, str]) -> str | None:
    """The variable that says we run in CI, or None (R-SVC-4)."""
    if env.get("CI", "").strip().lower() in ("true", "1"):
        return "CI"
    return next((name for name in CI_VARIABLES if env.get(name)), None)


# -- commands (pure plan) ---------------------------------------------------------------


class OnFailure(enum.Enum):
    STOP = "stop"  # an error: the remaining commands are skipped
    WARN = "warn"  # advisory: a warning, carry on
    IGNORE = "ignore"  # expected to fail at times (bootout of a job that is not loaded)


@dataclass(frozen=True, slots=True)
class Step:
    argv: tuple[str, ...]
    on_failure: OnFailure = OnFailure.STOP
    checks_linger: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """Commands around the one file operation: ``before`` it, then ``after`` it."""

    before: tuple[Step, ...]
    after: tuple[Step, ...]


def _systemctl(*args: str) -> Step:
    return Step(("systemctl", "--user", *args))


def install_plan(platform: ServicePlatform, path: Path, uid: int) -> Plan:
    """Write the file, then load and start it (and, on systemd, check lingering)."""
    if platform is ServicePlatform.SYSTEMD:
        return Plan(before=(), after=(
            _systemctl("daemon-reload"),
            _systemctl("enable", "--now", SYSTEMD_UNIT),
            Step(("loginctl", "show-user", str(uid), "--property=Linger"),
                 OnFailure.WARN, checks_linger=True),
        ))
    domain = f"gui/{uid}"
    return Plan(before=(), after=(
        Step(("launchctl", "bootout", domain, str(path)), OnFailure.IGNORE),
        Step(("launchctl", "bootstrap", domain, str(path))),
    ))


def uninstall_plan(platform: ServicePlatform, path: Path, uid: int) -> Plan:
    """Stop and unload, remove the file, and (systemd) forget it."""
    if platform is ServicePlatform.SYSTEMD:
        return Plan(before=(_systemctl("disable", "--now", SYSTEMD_UNIT),),
                    after=(_systemctl("daemon-reload"),))
    return Plan(before=(Step(("launchctl", "bootout", f"gui/{uid}", str(path)),
                             OnFailure.IGNORE),),
                after=())


def linger_warning(result: CommandResult) -> str | None:
    """Lingering off means systemd stops user services at logout."""
    if "Linger=no" not in result.stdout.splitlines():
        return None
    return ("lingering is off for this user, so systemd stops the daemon when you log out "
            "and starts it again at your next login; to keep it running, run "
            "`loginctl enable-linger`")


# -- running commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def detail(self) -> str:
        """First line of stderr (or stdout), else the exit status: enough for a message."""
        for text in (self.stderr, self.stdout):
            line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            if line:
                return line
        return f"exit status {self.returncode}"


Runner = Callable[[list[str]], CommandResult]


def run_command(argv: list[str]) -> CommandResult:
    """The default runner: never raises; a missing program is exit 127, as in a shell."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            argv, capture_output=True, text=True, errors="replace", check=False,
            stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        return CommandResult(EXIT_NOT_FOUND, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"{argv[0]}: no answer after {COMMAND_TIMEOUT_S:g} s")
    except OSError as exc:
        return CommandResult(126, "", f"{argv[0]}: {exc.strerror or exc}")
    return CommandResult(done.returncode, done.stdout, done.stderr)


def _call(runner: Runner, argv: Sequence[str]) -> CommandResult:
    """Run through ``runner``, turning an injected runner's OSError into a result too."""
    try:
        return runner(list(argv))
    except FileNotFoundError:
        return CommandResult(EXIT_NOT_FOUND, "", f"{argv[0]}: command not found")
    except (OSError, subprocess.SubprocessError) as exc:
        return CommandResult(126, "", f"{argv[0]}: {exc}")


@dataclass(frozen=True, slots=True)
class CommandRun:
    argv: tuple[str, ...]
    result: CommandResult | None  # None: a dry run, or skipped after an earlier failure

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            return {"argv": list(self.argv), "returncode": None}
        return {"argv": list(self.argv), "returncode": self.result.returncode,
                "stdout": self.result.stdout, "stderr": self.result.stderr}


@dataclass(slots=True)
class InstallReport:
    """What an install or uninstall did (or, in a dry run, would do)."""

    action: Literal["install", "uninstall"]
    platform: ServicePlatform
    path: Path
    content: str  # the file written, or the file removed ("" when there was none)
    dry_run: bool
    installed: bool  # a unit file is at ``path`` afterwards (or would be)
    summary: str
    commands: list[CommandRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "action": self.action, "platform": str(self.platform),
                "path": str(self.path), "dry_run": self.dry_run, "installed": self.installed,
                "summary": self.summary, "content": self.content,
                "commands": [c.to_dict() for c in self.commands],
                "warnings": list(self.warnings), "errors": list(self.errors)}


def _failure_message(step: Step, result: CommandResult, platform: ServicePlatform,
                     action: str, path: Path) -> str:
    shown = " ".join(step.argv)
    text = f"`{shown}` failed: {result.detail()}"
    program = step.argv[0]
    if result.returncode == EXIT_NOT_FOUND:
        system = "systemd" if platform is ServicePlatform.SYSTEMD else "launchd"
        text += f" ({program} is missing: this system does not seem to run {system})"
    elif program == "systemctl" and "bus" in result.detail().lower():
        text += (" (no systemd user session to talk to: containers, `su` and ssh sessions "
                 "without a login often have no user bus)")
    elif step.argv[-1] == SYSTEMD_UNIT and "--now" in step.argv:
        text += f"; see `journalctl --user -u {SYSTEMD_UNIT}`"
    if action == "install":
        text += f". The unit file is at {path}, but the service is not running"
    else:
        text += f". {path} is removed, but the service may still be loaded"
    return text


def _run_steps(steps: Sequence[Step], report: InstallReport, runner: Runner,
               *, skip: bool) -> bool:
    """Run ``steps`` in order into ``report``; False once a STOP step failed."""
    for step in steps:
        if skip or report.dry_run:
            report.commands.append(CommandRun(step.argv, None))
            continue
        result = _call(runner, step.argv)
        report.commands.append(CommandRun(step.argv, result))
        if step.checks_linger and result.ok:
            warning = linger_warning(result)
            if warning:
                report.warnings.append(warning)
        if result.ok or step.on_failure is OnFailure.IGNORE:
            continue
        if step.on_failure is OnFailure.WARN:
            report.warnings.append(f"`{' '.join(step.argv)}` failed: {result.detail()}")
            continue
        report.errors.append(_failure_message(step, result, report.platform, report.action,
                                              report.path))
        skip = True
    return not skip


# -- file I/O ---------------------------------------------------------------------------


def _write_public_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path``, mode 0644 whatever the umask: systemd and launchd
    refuse or warn about unit files others can write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _read_text(path: Path) -> str | None:
    """The file's text; None when there is none, "" when it exists but cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return ""


# -- install / uninstall ----------------------------------------------------------------


def install(spec: ServiceSpec, *, env: Mapping[str, str], dry_run: bool = False,
            allow_ci: bool = False, runner: Runner = run_command, home: Path | None = None,
            platform: ServicePlatform | str | None = None,
            uid: int | None = None) -> InstallReport:
    """Write the unit (or plist) and start the service; see the module docstring.

    ``home`` (default ``spec.home``) decides where the file goes; ``env`` is read for CI
    markers and ``XDG_CONFIG_HOME`` only. A dry run writes and runs nothing, and reports
    the file and every command it would run.

    Raises:
        ConfigError: in CI without ``allow_ci`` (R-SVC-4), or on an unsupported OS.
    """
    platform = detect_platform(platform)
    ci_variable = detect_ci(env)
    if ci_variable and not allow_ci:
        raise ConfigError(CI_REFUSAL, ci_variable=ci_variable)
    uid = os.getuid() if uid is None else uid
    path = unit_path(platform, home or spec.home, env)
    content = render_unit_file(spec, platform)
    plan = install_plan(platform, path, uid)
    report = InstallReport(action="install", platform=platform, path=path, content=content,
                           dry_run=dry_run, installed=True, summary="")
    if dry_run:
        _run_steps((*plan.before, *plan.after), report, runner, skip=False)
        report.summary = f"would write {path} and run {len(report.commands)} command(s)"
        return report
    previous = _read_text(path)
    ok = _run_steps(plan.before, report, runner, skip=False)
    try:
        if platform is ServicePlatform.LAUNCHD:
            # launchd does not create the directory of StandardErrorPath.
            ensure_private_dir(spec.paths.daemon_dir)
        _write_public_file(path, content.encode("utf-8"))
    except (OSError, ConfigError) as exc:
        reason = exc.detail if isinstance(exc, ConfigError) else (exc.strerror or str(exc))
        report.installed = previous is not None
        report.errors.append(f"cannot write {path}: {reason}")
        _run_steps(plan.after, report, runner, skip=True)
        report.summary = f"not installed: cannot write {path}"
        return report
    ok = _run_steps(plan.after, report, runner, skip=not ok)
    if previous is not None and previous != content and platform is ServicePlatform.SYSTEMD:
        report.warnings.append(
            f"{path} changed; a daemon that was already running keeps its old settings "
            f"until `systemctl --user restart {SYSTEMD_UNIT}`")
    name = SYSTEMD_UNIT if platform is ServicePlatform.SYSTEMD else LAUNCHD_LABEL
    report.summary = (f"installed {name} ({path}); {platform} runs the daemon" if ok
                      else f"wrote {path}, but the service is not running")
    return report


def uninstall(*, home: Path, env: Mapping[str, str] | None = None, dry_run: bool = False,
              runner: Runner = run_command, platform: ServicePlatform | str | None = None,
              uid: int | None = None) -> InstallReport:
    """Stop the service and remove its file; nothing installed is reported, not an error.

    The file is removed even when stopping fails (no user bus, say): the user asked for
    it to go, and the report says the service may still be loaded.

    Raises:
        ConfigError: on an unsupported OS.
    """
    platform = detect_platform(platform)
    uid = os.getuid() if uid is None else uid
    path = unit_path(platform, home, env)
    previous = _read_text(path)
    if previous is None:
        return InstallReport(action="uninstall", platform=platform, path=path, content="",
                             dry_run=dry_run, installed=False,
                             summary=f"not installed: there is no {path}")
    plan = uninstall_plan(platform, path, uid)
    report = InstallReport(action="uninstall", platform=platform, path=path,
                           content=previous, dry_run=dry_run, installed=not dry_run,
                           summary="")
    if dry_run:
        _run_steps((*plan.before, *plan.after), report, runner, skip=False)
        report.summary = f"would remove {path} and run {len(report.commands)} command(s)"
        return report
    ok = _run_steps(plan.before, report, runner, skip=False)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        report.errors.append(f"cannot remove {path}: {exc.strerror or exc}")
        _run_steps(plan.after, report, runner, skip=True)
        report.summary = f"not uninstalled: cannot remove {path}"
        return report
    report.installed = False
    ok = _run_steps(plan.after, report, runner, skip=not ok) and ok
    report.summary = (f"uninstalled: stopped the service and removed {path}" if ok
                      else f"removed {path}, but the service may still be loaded")
    return report


def service_state(platform: ServicePlatform | str, *, runner: Runner = run_command,
                  uid: int | None = None) -> str | None:
    """Ask the service manager about the service; None when it cannot be asked.

    systemd answers ``active``, ``activating``, ``inactive``, ``failed``...; launchd
    ``loaded`` or ``not-loaded``. A unit file alone does not mean the service runs: in a
    container without a user bus the file is there and nothing will ever start it.

    Raises:
        ConfigError: ``platform`` is neither a service platform nor a supported OS.
    """
    platform = detect_platform(platform)
    if platform is ServicePlatform.SYSTEMD:
        result = _call(runner, ["systemctl", "--user", "is-active", SYSTEMD_UNIT])
        state = result.stdout.strip()
        return state or None
    uid = os.getuid() if uid is None else uid
    result = _call(runner, ["launchctl", "print", f"gui/{uid}/{LAUNCHD_LABEL}"])
    if result.returncode in (EXIT_NOT_FOUND, 124, 126):
        return None
    return "loaded" if result.ok else "not-loaded"
