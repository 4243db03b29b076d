"""Installing the daemon as a user service: rendered files, the command plan, CI refusal."""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from claudemesh.daemon.service import (
    CI_REFUSAL,
    LAUNCHD_LABEL,
    SYSTEMD_UNIT,
    CommandResult,
    ServicePlatform,
    ServiceSpec,
    detect_ci,
    detect_platform,
    install,
    render_launchd_plist,
    render_systemd_unit,
    run_command,
    service_state,
    spec_from_env,
    uninstall,
    unit_installed,
    unit_path,
)
from claudemesh.errors import ConfigError

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
        "RestartPreventExitStatus": "4 6",
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


# -- install ----------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_lists_the_commands(tmp_path: Path) -> None:
    runner = Recorder()
    spec = make_spec(tmp_path)
    report = install(spec, env={}, dry_run=True, runner=runner, platform=SYSTEMD, uid=UID)
    assert files_under(tmp_path) == []
    assert runner.calls == []
    assert report.ok and report.dry_run
    assert report.path == tmp_path / ".config" / "systemd" / "user" / SYSTEMD_UNIT
    assert report.content == render_systemd_unit(spec)
    assert [list(c.argv) for c in report.commands] == [RELOAD, ENABLE, LINGER]
    assert all(c.result is None for c in report.commands)
    assert "would write" in report.summary


def test_install_writes_the_unit_and_runs_the_commands_in_order(tmp_path: Path) -> None:
    runner = Recorder()
    spec = make_spec(tmp_path)
    report = install(spec, env={}, runner=runner, platform=SYSTEMD, uid=UID)
    path = tmp_path / ".config" / "systemd" / "user" / SYSTEMD_UNIT
    assert report.ok, report.errors
    assert report.path == path and report.installed
    assert path.read_text() == render_systemd_unit(spec) == report.content
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert files_under(tmp_path) == [path]  # no temporary file left behind
    assert runner.calls == [RELOAD, ENABLE, LINGER]
    assert report.warnings == []
    assert [c.result.returncode if c.result else None for c in report.commands] == [0, 0, 0]
    assert unit_installed(tmp_path, SYSTEMD) == path
    json.dumps(report.to_dict())  # the CLI's --json output


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


def test_systemctl_missing_is_reported_and_the_file_is_still_written(tmp_path: Path) -> None:
    runner = Recorder({("systemctl",): CommandResult(127, "", "systemctl: command not found")})
    report = install(make_spec(tmp_path), env={}, runner=runner, platform=SYSTEMD, uid=UID)
    assert not report.ok
    assert report.path.is_file()
    assert runner.calls == [RELOAD]  # nothing after the first failure
    assert [c.result is None for c in report.commands] == [False, True, True]
    (error,) = report.errors
    assert "systemctl --user daemon-reload" in error
    assert "does not seem to run systemd" in error
    assert str(report.path) in error
    assert "not running" in report.summary


def test_a_runner_that_raises_is_reported_not_raised(tmp_path: Path) -> None:
    def missing(argv: list[str]) -> Exception:
        return FileNotFoundError(2, "No such file or directory", argv[0])

    runner = Recorder(raises=missing)
    report = install(make_spec(tmp_path), env={}, runner=runner, platform=SYSTEMD, uid=UID)
    assert not report.ok and report.path.is_file()
    assert "systemctl: command not found" in report.errors[0]


def test_no_user_bus_is_explained(tmp_path: Path) -> None:
    runner = Recorder({("systemctl",): CommandResult(
        1, "", "Failed to connect to bus: No medium found\n")})
    report = install(make_spec(tmp_path), env={}, runner=runner, platform=SYSTEMD, uid=UID)
    assert not report.ok and report.path.is_file()
    assert "Failed to connect to bus" in report.errors[0]
    assert "user bus" in report.errors[0]


def test_a_failed_start_points_at_the_journal(tmp_path: Path) -> None:
    runner = Recorder({tuple(ENABLE): CommandResult(
        1, "", "Job for claudemesh-daemon.service failed because the control process exited")})
    report = install(make_spec(tmp_path), env={}, runner=runner, platform=SYSTEMD, uid=UID)
    assert not report.ok
    assert runner.calls == [RELOAD, ENABLE]
    assert f"journalctl --user -u {SYSTEMD_UNIT}" in report.errors[0]


def test_reinstalling_a_changed_unit_says_a_restart_is_needed(tmp_path: Path) -> None:
    install(make_spec(tmp_path), env={}, runner=Recorder(), platform=SYSTEMD, uid=UID)
    again = install(make_spec(tmp_path), env={}, runner=Recorder(), platform=SYSTEMD, uid=UID)
    assert again.warnings == []
    changed = install(make_spec(tmp_path, daemon_dir=tmp_path / "d"), env={},
                      runner=Recorder(), platform=SYSTEMD, uid=UID)
    assert changed.ok
    assert any("systemctl --user restart" in w for w in changed.warnings)


@pytest.mark.parametrize("dry_run", [False, True])
def test_ci_is_refused_before_anything_happens(tmp_path: Path, dry_run: bool) -> None:
    runner = Recorder()
    with pytest.raises(ConfigError) as info:
        install(make_spec(tmp_path), env={"CI": "true"}, dry_run=dry_run, runner=runner,
                platform=SYSTEMD, uid=UID)
    assert info.value.detail == CI_REFUSAL
    assert info.value.exit_code == 2
    assert info.value.fields == {"ci_variable": "CI"}
    assert runner.calls == [] and files_under(tmp_path) == []


def test_allow_ci_overrides_the_refusal(tmp_path: Path) -> None:
    runner = Recorder()
    report = install(make_spec(tmp_path), env={"GITHUB_ACTIONS": "true"}, allow_ci=True,
                     runner=runner, platform=SYSTEMD, uid=UID)
    assert report.ok and report.path.is_file()
    assert runner.calls == [RELOAD, ENABLE, LINGER]


def test_install_honours_the_home_argument(tmp_path: Path) -> None:
    other = tmp_path / "other home"
    report = install(make_spec(tmp_path), env={}, runner=Recorder(), home=other,
                     platform=SYSTEMD, uid=UID)
    assert report.path == other / ".config" / "systemd" / "user" / SYSTEMD_UNIT
    assert report.path.is_file()


def test_an_unwritable_target_is_reported(tmp_path: Path) -> None:
    (tmp_path / ".config").write_text("a file where a directory should be")
    runner = Recorder()
    report = install(make_spec(tmp_path), env={}, runner=runner, platform=SYSTEMD, uid=UID)
    assert not report.ok and not report.installed
    assert report.errors[0].startswith(f"cannot write {report.path}")
    assert runner.calls == []


def test_launchd_install_boots_out_then_bootstraps(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    plist = tmp_path / "Library" / "LaunchAgents" / "com.claudemesh.daemon.plist"
    runner = Recorder({("launchctl", "bootout"): CommandResult(
        113, "", "Boot-out failed: 113: Could not find specified service")})
    report = install(spec, env={}, runner=runner, platform=LAUNCHD, uid=UID)
    assert report.ok, report.errors  # bootout of a job that is not loaded is fine
    assert report.warnings == []
    assert plist.read_bytes() == render_launchd_plist(spec)
    assert stat.S_IMODE(plist.stat().st_mode) == 0o644
    assert runner.calls == [["launchctl", "bootout", f"gui/{UID}", str(plist)],
                            ["launchctl", "bootstrap", f"gui/{UID}", str(plist)]]
    # launchd will not create the directory of its log file
    assert (tmp_path / ".claudemesh" / "daemon").is_dir()
    assert unit_installed(tmp_path, "darwin") == plist


def test_launchd_bootstrap_failure_is_reported(tmp_path: Path) -> None:
    runner = Recorder({("launchctl", "bootstrap"): CommandResult(
        5, "", "Bootstrap failed: 5: Input/output error")})
    report = install(make_spec(tmp_path), env={}, runner=runner, platform=LAUNCHD, uid=UID)
    assert not report.ok and report.path.is_file()
    assert "Bootstrap failed: 5" in report.errors[0]


# -- uninstall --------------------------------------------------------------------------


def test_uninstall_reverses_every_step(tmp_path: Path) -> None:
    install(make_spec(tmp_path), env={}, runner=Recorder(), platform=SYSTEMD, uid=UID)
    runner = Recorder()
    report = uninstall(home=tmp_path, runner=runner, platform=SYSTEMD, uid=UID)
    assert report.ok, report.errors
    assert not report.path.exists() and not report.installed
    assert runner.calls == [DISABLE, RELOAD]
    assert report.content == render_systemd_unit(make_spec(tmp_path))
    assert unit_installed(tmp_path, SYSTEMD) is None


def test_uninstall_dry_run_touches_nothing(tmp_path: Path) -> None:
    install(make_spec(tmp_path), env={}, runner=Recorder(), platform=SYSTEMD, uid=UID)
    runner = Recorder()
    report = uninstall(home=tmp_path, dry_run=True, runner=runner, platform=SYSTEMD, uid=UID)
    assert report.ok and report.path.is_file()
    assert runner.calls == []
    assert [list(c.argv) for c in report.commands] == [DISABLE, RELOAD]


def test_uninstall_when_nothing_is_installed_says_so(tmp_path: Path) -> None:
    runner = Recorder()
    report = uninstall(home=tmp_path, runner=runner, platform=SYSTEMD, uid=UID)
    assert report.ok and not report.installed
    assert report.summary.startswith("not installed")
    assert runner.calls == [] and report.commands == []


def test_uninstall_without_systemctl_still_removes_the_file(tmp_path: Path) -> None:
    install(make_spec(tmp_path), env={}, runner=Recorder(), platform=SYSTEMD, uid=UID)
    runner = Recorder({("systemctl",): CommandResult(127, "", "systemctl: command not found")})
    report = uninstall(home=tmp_path, runner=runner, platform=SYSTEMD, uid=UID)
    assert not report.ok
    assert not report.path.exists()
    assert runner.calls == [DISABLE]
    assert "may still be loaded" in report.errors[0]


def test_uninstall_is_not_refused_in_ci(tmp_path: Path) -> None:
    install(make_spec(tmp_path), env={}, runner=Recorder(), platform=SYSTEMD, uid=UID)
    report = uninstall(home=tmp_path, env={"CI": "true"}, runner=Recorder(),
                       platform=SYSTEMD, uid=UID)
    assert report.ok and not report.path.exists()


def test_launchd_uninstall_boots_out_and_removes_the_plist(tmp_path: Path) -> None:
    install(make_spec(tmp_path), env={}, runner=Recorder(), platform=LAUNCHD, uid=UID)
    runner = Recorder()
    report = uninstall(home=tmp_path, runner=runner, platform=LAUNCHD, uid=UID)
    assert report.ok and not report.path.exists()
    assert runner.calls == [["launchctl", "bootout", f"gui/{UID}", str(report.path)]]


# -- unit_installed, service_state and the default runner -------------------------------


def test_unit_installed_accepts_sys_platform_values(tmp_path: Path) -> None:
    assert unit_installed(tmp_path, "linux") is None
    assert unit_installed(tmp_path, "win32") is None  # nothing can be installed there
    path = unit_path(SYSTEMD, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("[Unit]\n")
    assert unit_installed(tmp_path, "linux") == path
    assert unit_installed(tmp_path, SYSTEMD) == path
    assert unit_installed(tmp_path, "darwin") is None


def test_service_state_asks_the_service_manager() -> None:
    active = Recorder({("systemctl",): CommandResult(0, "active\n")})
    assert service_state(SYSTEMD, runner=active) == "active"
    assert active.calls == [["systemctl", "--user", "is-active", SYSTEMD_UNIT]]
    failed = Recorder({("systemctl",): CommandResult(3, "failed\n")})
    assert service_state("linux", runner=failed) == "failed"
    no_bus = Recorder({("systemctl",): CommandResult(1, "", "Failed to connect to bus")})
    assert service_state(SYSTEMD, runner=no_bus) is None
    loaded = Recorder()
    assert service_state(LAUNCHD, runner=loaded, uid=UID) == "loaded"
    assert loaded.calls == [["launchctl", "print", f"gui/{UID}/{LAUNCHD_LABEL}"]]
    missing = Recorder({("launchctl",): CommandResult(127, "", "not found")})
    assert service_state(LAUNCHD, runner=missing, uid=UID) is None


def test_default_runner_never_raises_for_a_missing_program() -> None:
    result = run_command(["claudemesh-no-such-program-for-tests"])
    assert result.returncode == 127
    assert "command not found" in result.stderr


def test_default_runner_captures_output() -> None:
    result = run_command([sys.executable, "-c", "import sys; print('out'); "
                          "print('err', file=sys.stderr); sys.exit(3)"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
