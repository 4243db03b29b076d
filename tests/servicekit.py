"""What the service tests share (tests/unit/daemon/service, tests/unit/broker/test_service.py):
a spec in a temporary home, a runner that records argv instead of calling systemd or
launchd, the commands a systemd install and uninstall run, and a strict reader of unit
files."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from claudemesh.daemon.service import SYSTEMD_UNIT, CommandResult, ServicePlatform, ServiceSpec

__all__ = ["DISABLE", "ENABLE", "LAUNCHD", "LINGER", "PYTHON", "RELOAD", "SYSTEMD", "UID",
           "Recorder", "files_under", "make_spec", "one", "parse_unit", "systemd_words"]

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


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values, refusing a key repeated where systemd would override."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            assert line[1:-1] not in sections, f"section {line} twice"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, line
        if key in current:
            assert key == "Environment", f"{key} set twice"
        current.setdefault(key, []).append(value)
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, (section, key, values)
    return values[0]


def systemd_words(value: str) -> list[str]:
    """Split a command line the way systemd does, for the characters we escape."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(value)]
