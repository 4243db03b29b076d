"""The commands around the file write: CI detection and the linger check's warning
(daemon/service/plan.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from claudemesh.daemon.service import CommandResult, detect_ci, install
from servicekit import LINGER, SYSTEMD, UID, Recorder, make_spec

# -- CI detection -----------------------------------------------------------------------


@pytest.mark.parametrize(("env", "found"), [
    ({}, None),
    ({"CI": "true"}, "CI"),
    ({"CI": "TRUE"}, "CI"),
    ({"CI": "1"}, "CI"),
    ({"CI": "false"}, None),
    ({"CI": "0"}, None),
    ({"GITHUB_ACTIONS": "true"}, "GITHUB_ACTIONS"),
    ({"GITLAB_CI": "yes"}, "GITLAB_CI"),
    ({"BUILDKITE": "true"}, "BUILDKITE"),
    ({"CIRCLECI": "true"}, "CIRCLECI"),
    ({"JENKINS_URL": "http://ci.example/"}, "JENKINS_URL"),
    ({"GITHUB_ACTIONS": ""}, None),
])
def test_ci_detection(env: dict[str, str], found: str | None) -> None:
    assert detect_ci(env) == found


# -- the linger check -------------------------------------------------------------------


def test_linger_off_adds_a_warning(tmp_path: Path) -> None:
    runner = Recorder({("loginctl",): CommandResult(0, "Linger=no\n")})
    report = install(make_spec(tmp_path), env={}, runner=runner, platform=SYSTEMD, uid=UID)
    assert report.ok
    assert len(report.warnings) == 1
    assert "log out" in report.warnings[0] and "loginctl enable-linger" in report.warnings[0]


def test_loginctl_missing_is_only_a_warning(tmp_path: Path) -> None:
    runner = Recorder({("loginctl",): CommandResult(127, "", "loginctl: command not found")})
    report = install(make_spec(tmp_path), env={}, runner=runner, platform=SYSTEMD, uid=UID)
    assert report.ok
    assert report.warnings == [
        f"`{' '.join(LINGER)}` failed: loginctl: command not found"]
