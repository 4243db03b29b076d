"""Installing and removing the service: the one file write, and the commands around it.

Refusals raise before anything is touched; everything after is reported in the
:class:`InstallReport`, never raised (the package docstring says why). Commands go
through an injectable runner, so tests need neither systemd nor launchd.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from claudemesh.daemon.service.plan import (
    CI_REFUSAL,
    CommandResult,
    OnFailure,
    Step,
    detect_ci,
    install_plan,
    linger_warning,
    uninstall_plan,
)
from claudemesh.daemon.service.units import (
    DAEMON_UNIT,
    ServicePlatform,
    ServiceSpec,
    ServiceUnit,
    detect_platform,
    render_unit_file,
    unit_path,
)
from claudemesh.errors import ConfigError
from claudemesh.privatefs import ensure_private_dir

__all__ = [
    "CommandRun",
    "InstallReport",
    "Runner",
    "install",
    "run_command",
    "service_state",
    "uninstall",
]

# Longer than systemd's default start timeout (90 s): `enable --now` waits for READY=1.
COMMAND_TIMEOUT_S: Final = 120.0
# A child's exit statuses as a shell reports them, not ours (ExitCode).
EXIT_TIMED_OUT: Final = 124  # as timeout(1)
EXIT_CANNOT_RUN: Final = 126
EXIT_NOT_FOUND: Final = 127


# -- running commands -------------------------------------------------------------------


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
        return CommandResult(EXIT_TIMED_OUT, "",
                             f"{argv[0]}: no answer after {COMMAND_TIMEOUT_S:g} s")
    except OSError as exc:
        return CommandResult(EXIT_CANNOT_RUN, "", f"{argv[0]}: {exc.strerror or exc}")
    return CommandResult(done.returncode, done.stdout, done.stderr)


def _call(runner: Runner, argv: Sequence[str]) -> CommandResult:
    """Run through ``runner``, turning an injected runner's OSError into a result too."""
    try:
        return runner(list(argv))
    except FileNotFoundError:
        return CommandResult(EXIT_NOT_FOUND, "", f"{argv[0]}: command not found")
    except (OSError, subprocess.SubprocessError) as exc:
        return CommandResult(EXIT_CANNOT_RUN, "", f"{argv[0]}: {exc}")


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
    unit: ServiceUnit = DAEMON_UNIT

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "action": self.action, "platform": str(self.platform),
                "path": str(self.path), "dry_run": self.dry_run, "installed": self.installed,
                "summary": self.summary, "content": self.content,
                "commands": [c.to_dict() for c in self.commands],
                "warnings": list(self.warnings), "errors": list(self.errors)}


def _failure_message(step: Step, result: CommandResult, report: InstallReport) -> str:
    shown = " ".join(step.argv)
    text = f"`{shown}` failed: {result.detail()}"
    program, unit, path = step.argv[0], report.unit, report.path
    if result.returncode == EXIT_NOT_FOUND:
        system = "systemd" if report.platform is ServicePlatform.SYSTEMD else "launchd"
        text += f" ({program} is missing: this system does not seem to run {system})"
    elif program == "systemctl" and "bus" in result.detail().lower() and not unit.system:
        text += (" (no systemd user session to talk to: containers, `su` and ssh sessions "
                 "without a login often have no user bus)")
    elif step.argv[-1] == unit.systemd_unit and "--now" in step.argv:
        text += f"; see `{' '.join(('journalctl', *unit.manager_scope))} -u {unit.systemd_unit}`"
    if report.action == "install":
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
        report.errors.append(_failure_message(step, result, report))
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
    """Write the unit (or plist) and start the service; see the package docstring.

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
    unit = spec.unit
    path = unit_path(platform, home or spec.home, env, unit=unit)
    content = render_unit_file(spec, platform)
    plan = install_plan(platform, path, uid, unit)
    report = InstallReport(action="install", platform=platform, path=path, content=content,
                           dry_run=dry_run, installed=True, summary="", unit=unit)
    if dry_run:
        _run_steps((*plan.before, *plan.after), report, runner, skip=False)
        report.summary = f"would write {path} and run {len(report.commands)} command(s)"
        return report
    previous = _read_text(path)
    ok = _run_steps(plan.before, report, runner, skip=False)
    try:
        if platform is ServicePlatform.LAUNCHD:
            # launchd does not create the directory of StandardErrorPath.
            ensure_private_dir(spec.log.parent)
        _write_public_file(path, content.encode("utf-8"))
    except (OSError, ConfigError) as exc:
        reason = exc.detail if isinstance(exc, ConfigError) else (exc.strerror or str(exc))
        if unit.system and isinstance(exc, PermissionError):
            reason += " (a system service is installed as root: run it with sudo)"
        report.installed = previous is not None
        report.errors.append(f"cannot write {path}: {reason}")
        _run_steps(plan.after, report, runner, skip=True)
        report.summary = f"not installed: cannot write {path}"
        return report
    ok = _run_steps(plan.after, report, runner, skip=not ok)
    if previous is not None and previous != content and platform is ServicePlatform.SYSTEMD:
        restart = " ".join(("systemctl", *unit.manager_scope, "restart", unit.systemd_unit))
        report.warnings.append(
            f"{path} changed; {unit.what} keeps its old settings if it was already running,"
            f" until `{restart}`")
    name = unit.systemd_unit if platform is ServicePlatform.SYSTEMD else unit.launchd_label
    report.summary = (f"installed {name} ({path}); {platform} runs {unit.what}" if ok
                      else f"wrote {path}, but the service is not running")
    return report


def uninstall(*, home: Path, env: Mapping[str, str] | None = None, dry_run: bool = False,
              runner: Runner = run_command, platform: ServicePlatform | str | None = None,
              uid: int | None = None, unit: ServiceUnit = DAEMON_UNIT) -> InstallReport:
    """Stop the service and remove its file; nothing installed is reported, not an error.

    The file is removed even when stopping fails (no user bus, say): the user asked for
    it to go, and the report says the service may still be loaded.

    Raises:
        ConfigError: on an unsupported OS.
    """
    platform = detect_platform(platform)
    uid = os.getuid() if uid is None else uid
    path = unit_path(platform, home, env, unit=unit)
    previous = _read_text(path)
    if previous is None:
        return InstallReport(action="uninstall", platform=platform, path=path, content="",
                             dry_run=dry_run, installed=False,
                             summary=f"not installed: there is no {path}", unit=unit)
    plan = uninstall_plan(platform, path, uid, unit)
    report = InstallReport(action="uninstall", platform=platform, path=path,
                           content=previous, dry_run=dry_run, installed=not dry_run,
                           summary="", unit=unit)
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
                  uid: int | None = None, unit: ServiceUnit = DAEMON_UNIT) -> str | None:
    """Ask the service manager about the service; None when it cannot be asked.

    systemd answers ``active``, ``activating``, ``inactive``, ``failed``...; launchd
    ``loaded`` or ``not-loaded``. A unit file alone does not mean the service runs: in a
    container without a user bus the file is there and nothing will ever start it.

    Raises:
        ConfigError: ``platform`` is neither a service platform nor a supported OS.
    """
    platform = detect_platform(platform)
    if platform is ServicePlatform.SYSTEMD:
        result = _call(runner, ["systemctl", *unit.manager_scope, "is-active",
                                unit.systemd_unit])
        state = result.stdout.strip()
        return state or None
    uid = os.getuid() if uid is None else uid
    domain = "system" if unit.system else f"gui/{uid}"
    result = _call(runner, ["launchctl", "print", f"{domain}/{unit.launchd_label}"])
    if result.returncode in (EXIT_NOT_FOUND, EXIT_TIMED_OUT, EXIT_CANNOT_RUN):
        return None
    return "loaded" if result.ok else "not-loaded"
