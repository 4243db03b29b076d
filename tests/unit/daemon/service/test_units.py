"""The service's file: the rendered systemd unit and launchd plist, the platform, the spec
and where the file goes (daemon/service/units.py)."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from claudemesh.daemon.service import (
    LAUNCHD_LABEL,
    SYSTEMD_UNIT,
    ServicePlatform,
    ServiceSpec,
    detect_platform,
    render_launchd_plist,
    render_systemd_unit,
    spec_from_env,
    unit_installed,
    unit_path,
)
from claudemesh.errors import ConfigError
from servicekit import LAUNCHD, PYTHON, SYSTEMD, make_spec, one, parse_unit, systemd_words

# -- systemd unit -----------------------------------------------------------------------


def test_unit_has_the_settings_that_matter(tmp_path: Path) -> None:
    unit = parse_unit(render_systemd_unit(make_spec(tmp_path)))
    assert set(unit) == {"Unit", "Service", "Install"}
    assert one(unit, "Unit", "After") == "network-online.target"
    assert one(unit, "Unit", "Wants") == "network-online.target"
    assert one(unit, "Unit", "StartLimitIntervalSec") == "300"
    assert one(unit, "Unit", "StartLimitBurst") == "5"
    assert one(unit, "Unit", "Description")
    service = {k: v for k, v in unit["Service"].items() if k != "Environment"}
    assert {k: v[0] for k, v in service.items()} == {
        "Type": "notify",
        "ExecStart": f"{PYTHON} -m claudemesh daemon up --foreground",
        "Restart": "on-failure",
        "RestartSec": "5",
        "RestartPreventExitStatus": "4 6 7",
        "StandardOutput": "journal",
        "StandardError": "journal",
        "TimeoutStopSec": "30",
        "NoNewPrivileges": "yes",
    }
    assert unit["Service"]["Environment"] == [
        f"CLAUDEMESH_CONFIG_DIR={tmp_path / '.claudemesh'}"]
    assert one(unit, "Install", "WantedBy") == "default.target"


def test_unit_sets_the_daemon_dir_only_when_the_spec_has_one(tmp_path: Path) -> None:
    unit = parse_unit(render_systemd_unit(make_spec(tmp_path, daemon_dir=tmp_path / "d")))
    assert unit["Service"]["Environment"] == [
        f"CLAUDEMESH_CONFIG_DIR={tmp_path / '.claudemesh'}",
        f"CLAUDEMESH_DAEMON_DIR={tmp_path / 'd'}",
    ]


def test_paths_with_spaces_are_quoted(tmp_path: Path) -> None:
    interpreter = Path("/opt/my tools/venv/bin/python")
    config = tmp_path / "conf dir"
    unit = parse_unit(render_systemd_unit(
        make_spec(tmp_path, interpreter=interpreter, config_dir=config)))
    exec_start = one(unit, "Service", "ExecStart")
    assert exec_start.startswith('"/opt/my tools/venv/bin/python" ')
    assert systemd_words(exec_start) == [str(interpreter), "-m", "claudemesh", "daemon",
                                         "up", "--foreground"]
    assert [systemd_words(e) for e in unit["Service"]["Environment"]] == [
        [f"CLAUDEMESH_CONFIG_DIR={config}"]]


def test_specifiers_variables_quotes_and_backslashes_are_escaped(tmp_path: Path) -> None:
    interpreter = Path('/opt/100% "odd"/$HOME\\bin/python')
    config = Path("/srv/50%/$x")
    unit = parse_unit(render_systemd_unit(
        make_spec(tmp_path, interpreter=interpreter, config_dir=config)))
    exec_start = one(unit, "Service", "ExecStart")
    assert "%%" in exec_start and "$$HOME" in exec_start
    assert systemd_words(exec_start)[0] == str(interpreter)
    (env,) = unit["Service"]["Environment"]
    assert env == '"CLAUDEMESH_CONFIG_DIR=/srv/50%%/$x"'  # no $ expansion in Environment=


def test_control_characters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="control character"):
        make_spec(tmp_path, config_dir=Path("/tmp/a\nb"))


def test_relative_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absolute"):
        make_spec(tmp_path, interpreter=Path("python3"))


def _verify(unit_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    runtime = tmp_path / "runtime"  # --user needs a runtime dir, even in a container
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run([tool, "verify", "--user", str(unit_file)], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def test_systemd_analyze_accepts_the_unit_with_spaces_and_percent(tmp_path: Path) -> None:
    """A space left unquoted, or ``%h`` left unescaped (it would become the home
    directory), makes verify fail: the program it names would not exist."""
    odd = tmp_path / "py thon %h"
    odd.mkdir()
    (odd / "python").symlink_to(PYTHON)
    spec = make_spec(tmp_path, interpreter=odd / "python", config_dir=tmp_path / "c 50%",
                     daemon_dir=tmp_path / "d d")
    unit_file = tmp_path / SYSTEMD_UNIT
    unit_file.write_text(render_systemd_unit(spec))
    done = _verify(unit_file, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "claudemesh-daemon.service" not in done.stderr, done.stderr


def test_systemd_analyze_would_catch_a_bad_exec_path(tmp_path: Path) -> None:
    """The check above bites: verify does look at ExecStart's program."""
    spec = make_spec(tmp_path, interpreter=tmp_path / "no such dir" / "python")
    unit_file = tmp_path / SYSTEMD_UNIT
    unit_file.write_text(render_systemd_unit(spec))
    done = _verify(unit_file, tmp_path)
    assert done.returncode != 0
    assert "no such dir/python" in done.stderr


# -- launchd plist ----------------------------------------------------------------------


def test_plist_round_trips_with_the_settings_that_matter(tmp_path: Path) -> None:
    doc = plistlib.loads(render_launchd_plist(make_spec(tmp_path)))
    log = str(tmp_path / ".claudemesh" / "daemon" / "daemon.log")
    assert doc == {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [str(PYTHON), "-m", "claudemesh", "daemon", "up", "--foreground"],
        "EnvironmentVariables": {"CLAUDEMESH_CONFIG_DIR": str(tmp_path / ".claudemesh")},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "WorkingDirectory": str(tmp_path),
    }


def test_plist_uses_the_explicit_daemon_dir(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, daemon_dir=tmp_path / "my daemon")
    doc = plistlib.loads(render_launchd_plist(spec))
    assert doc["EnvironmentVariables"]["CLAUDEMESH_DAEMON_DIR"] == str(tmp_path / "my daemon")
    assert doc["StandardErrorPath"] == str(tmp_path / "my daemon" / "daemon.log")


# -- pure choices -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("linux", SYSTEMD), ("darwin", LAUNCHD), ("systemd", SYSTEMD), ("launchd", LAUNCHD)])
def test_platform_choice(name: str, expected: ServicePlatform) -> None:
    assert detect_platform(name) is expected


@pytest.mark.parametrize("name", ["win32", "freebsd14", "cygwin"])
def test_other_systems_are_refused_clearly(name: str) -> None:
    with pytest.raises(ConfigError, match=r"Linux \(systemd\) and macOS \(launchd\)") as info:
        detect_platform(name)
    assert info.value.exit_code == 2


def test_spec_from_env_keeps_the_daemon_dir_only_when_set(tmp_path: Path) -> None:
    spec = spec_from_env({}, home=tmp_path)
    assert spec == ServiceSpec(interpreter=PYTHON, config_dir=tmp_path / ".claudemesh",
                               daemon_dir=None, home=tmp_path)
    spec = spec_from_env({"CLAUDEMESH_CONFIG_DIR": str(tmp_path / "c"),
                          "CLAUDEMESH_DAEMON_DIR": str(tmp_path / "d")}, home=tmp_path)
    assert (spec.config_dir, spec.daemon_dir) == (tmp_path / "c", tmp_path / "d")


def test_unit_paths(tmp_path: Path) -> None:
    assert unit_path(SYSTEMD, tmp_path) == (
        tmp_path / ".config" / "systemd" / "user" / SYSTEMD_UNIT)
    assert unit_path(LAUNCHD, tmp_path) == (
        tmp_path / "Library" / "LaunchAgents" / "com.claudemesh.daemon.plist")
    xdg = tmp_path / "xdg"
    assert unit_path(SYSTEMD, tmp_path, {"XDG_CONFIG_HOME": str(xdg)}) == (
        xdg / "systemd" / "user" / SYSTEMD_UNIT)
    assert unit_path(SYSTEMD, tmp_path, {"XDG_CONFIG_HOME": "relative"}) == (
        tmp_path / ".config" / "systemd" / "user" / SYSTEMD_UNIT)


# -- unit_installed ---------------------------------------------------------------------


def test_unit_installed_accepts_sys_platform_values(tmp_path: Path) -> None:
    assert unit_installed(tmp_path, "linux") is None
    assert unit_installed(tmp_path, "win32") is None  # nothing can be installed there
    path = unit_path(SYSTEMD, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("[Unit]\n")
    assert unit_installed(tmp_path, "linux") == path
    assert unit_installed(tmp_path, SYSTEMD) == path
    assert unit_installed(tmp_path, "darwin") is None
