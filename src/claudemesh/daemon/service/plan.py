"""Which commands surround the one file write or removal, and how to read their answers.

Pure: a plan is data, so a dry run lists exactly what a real run would do, and tests
check it with no service manager at all. :class:`CommandResult` lives here rather than
beside the runner because reading an answer (:func:`linger_warning`) is part of the plan.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from claudemesh.daemon.service.units import DAEMON_UNIT, ServicePlatform, ServiceUnit

__all__ = [
    "CI_REFUSAL",
    "CommandResult",
    "OnFailure",
    "Plan",
    "Step",
    "detect_ci",
    "install_plan",
    "linger_warning",
    "uninstall_plan",
]

CI_REFUSAL: Final = (
    "Refusing to install a persistent service in CI; pass --allow-ci to do it anyway."
)
# R-SVC-4: any of these set (CI only when it says true/1) means we run in CI.
CI_VARIABLES: Final = ("GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "JENKINS_URL")


def detect_ci(env: Mapping[str, str]) -> str | None:
    """The variable that says we run in CI, or None (R-SVC-4)."""
    if env.get("CI", "").strip().lower() in ("true", "1"):
        return "CI"
    return next((name for name in CI_VARIABLES if env.get(name)), None)


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


def _systemctl(unit: ServiceUnit, *args: str) -> Step:
    return Step(("systemctl", *unit.manager_scope, *args))


def _launchd_domain(unit: ServiceUnit, uid: int) -> str:
    return "system" if unit.system else f"gui/{uid}"


def install_plan(platform: ServicePlatform, path: Path, uid: int,
                 unit: ServiceUnit = DAEMON_UNIT) -> Plan:
    """Write the file, then load and start it (and, for a systemd user unit, check
    lingering)."""
    if platform is ServicePlatform.SYSTEMD:
        linger = () if unit.system else (
            Step(("loginctl", "show-user", str(uid), "--property=Linger"),
                 OnFailure.WARN, checks_linger=True),)
        return Plan(before=(), after=(
            _systemctl(unit, "daemon-reload"),
            _systemctl(unit, "enable", "--now", unit.systemd_unit),
            *linger,
        ))
    domain = _launchd_domain(unit, uid)
    return Plan(before=(), after=(
        Step(("launchctl", "bootout", domain, str(path)), OnFailure.IGNORE),
        Step(("launchctl", "bootstrap", domain, str(path))),
    ))


def uninstall_plan(platform: ServicePlatform, path: Path, uid: int,
                   unit: ServiceUnit = DAEMON_UNIT) -> Plan:
    """Stop and unload, remove the file, and (systemd) forget it."""
    if platform is ServicePlatform.SYSTEMD:
        return Plan(before=(_systemctl(unit, "disable", "--now", unit.systemd_unit),),
                    after=(_systemctl(unit, "daemon-reload"),))
    return Plan(before=(Step(("launchctl", "bootout", _launchd_domain(unit, uid), str(path)),
                             OnFailure.IGNORE),),
                after=())


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


def linger_warning(result: CommandResult) -> str | None:
    """Lingering off means systemd stops user services at logout."""
    if "Linger=no" not in result.stdout.splitlines():
        return None
    return ("lingering is off for this user, so systemd stops the daemon when you log out "
            "and starts it again at your next login; to keep it running, run "
            "`loginctl enable-linger`")
