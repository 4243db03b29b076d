"""What the service tests share (tests/unit/daemon/service): a spec in a temporary home,
a runner that records argv instead of calling systemd or launchd, and the commands
a systemd install and uninstall run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from claudemesh.daemon.service import SYSTEMD_UNIT, CommandResult, ServicePlatform, ServiceSpec

__all__ = ["DISABLE", "ENABLE", "LAUNCHD", "LINGER", "PYTHON", "RELOAD", "SYSTEMD", "UID",
           "Recorder", "files_under", "make_spec"]

PYTHON = Path(sys.executable)
SYSTEMD = ServicePlatform.SYSTEMD
LAUNCHD = ServicePlatform.LAUNCHD
UID = 1234
RELOAD = ["systemctl", "--user", "daemon-reload"]
ENABLE = ["systemctl", "--user", "enable", "--now", SYSTEMD_UNIT]
DISABLE = ["systemctl", "--user", "disable", "--now", SYSTEMD_UNIT]
LINGER = ["loginctl", "show-user", str(UID), "--property=Linger"]


def make_spec(home: Path, *, interpreter: Path = PYTHON, daemon_dir: Path | None = None,
              config_dir: Path | None = None) -> ServiceSpec:
    return ServiceSpec(interpreter=interpreter, config_dir=config_dir or home / ".claudemesh",
                       daemon_dir=daemon_dir, home=home)


class Recorder:
    """A runner that records every argv and answers from ``answers`` (default: exit 0)."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult] | None = None,
                 raises: Callable[[list[str]], Exception | None] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}
        self.raises = raises

    def __call__(self, argv: list[str]) -> CommandResult:
        self.calls.append(argv)
        if self.raises is not None:
            exc = self.raises(argv)
            if exc is not None:
                raise exc
        for prefix, result in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return result
        return CommandResult(0, "Linger=yes\n" if argv[0] == "loginctl" else "", "")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
