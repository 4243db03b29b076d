"""Installing and removing the service: files written, commands run in order, failures
reported, CI refused; the service state and the default runner (daemon/service/install.py)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from claudemesh.daemon.service import (
    CI_REFUSAL,
    LAUNCHD_LABEL,
    SYSTEMD_UNIT,
    CommandResult,
    install,
    render_launchd_plist,
    render_systemd_unit,
    run_command,
    service_state,
    uninstall,
    unit_installed,
)
from claudemesh.errors import ConfigError
from servicekit import (
    DISABLE,
    ENABLE,
    LAUNCHD,
    LINGER,
    RELOAD,
    SYSTEMD,
    UID,
    Recorder,
    files_under,
    make_spec,
)

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


# -- service_state and the default runner -----------------------------------------------


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
