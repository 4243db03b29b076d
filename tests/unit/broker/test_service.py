"""The broker as a service (cli/broker_service.py through daemon/service/): the unit and
plist it renders, where they go, the commands around them, and the CLI's --dry-run."""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

from claudemesh.cli.broker_service import (
    BROKER_LAUNCHD_LABEL,
    BROKER_SYSTEMD_UNIT,
    broker_args,
    broker_spec,
    broker_unit,
)
from claudemesh.daemon.service import (
    SYSTEMD_UNIT,
    CommandResult,
    ServiceSpec,
    install,
    render_launchd_plist,
    render_systemd_unit,
    uninstall,
    unit_path,
)
from claudemesh.errors import ConfigError
from servicekit import (
    LAUNCHD,
    PYTHON,
    SYSTEMD,
    UID,
    Recorder,
    files_under,
    one,
    parse_unit,
    systemd_words,
)

RELOAD = ["systemctl", "--user", "daemon-reload"]
ENABLE = ["systemctl", "--user", "enable", "--now", BROKER_SYSTEMD_UNIT]
LINGER = ["loginctl", "show-user", str(UID), "--property=Linger"]


def spec(home: Path, *, system: bool = False, run_as: str | None = None,
         extra: tuple[str, ...] = ()) -> ServiceSpec:
    args = broker_args(db="data/broker.db", host="127.0.0.1", port=7901, cwd=home / "work",
                       tls_cert="tls/cert.pem", tls_key="/etc/cm/key.pem", extra=extra)
    return broker_spec({"CLAUDEMESH_CONFIG_DIR": str(home / "cm")}, home=home, args=args,
                       system=system, run_as=run_as, interpreter=str(PYTHON))


def broker_up_words(home: Path, *extra: str) -> list[str]:
    return [str(PYTHON), "-m", "claudemesh", "broker", "up",
            "--db", str(home / "work" / "data" / "broker.db"), "--host", "127.0.0.1",
            "--port", "7901", "--tls-cert", str(home / "work" / "tls" / "cert.pem"),
            "--tls-key", "/etc/cm/key.pem", *extra]


# -- systemd ----------------------------------------------------------------------------


def test_the_unit_runs_broker_up_with_its_paths_made_absolute(tmp_path: Path) -> None:
    unit = parse_unit(render_systemd_unit(spec(tmp_path, extra=("--omit-feature", "x y"))))
    assert one(unit, "Unit", "Description") == "claudemesh broker"
    assert one(unit, "Unit", "After") == "network-online.target"
    service = {k: v[0] for k, v in unit["Service"].items()}
    exec_start = service.pop("ExecStart")
    assert systemd_words(exec_start) == broker_up_words(tmp_path, "--omit-feature", "x y")
    assert service == {
        "Type": "exec",  # the broker sends no READY=1
        "Restart": "on-failure",
        "RestartSec": "5",
        "RestartPreventExitStatus": "2",  # usage or configuration: a restart cannot fix it
        "Environment": f"CLAUDEMESH_CONFIG_DIR={tmp_path / 'cm'}",
        "StandardOutput": "journal",
        "StandardError": "journal",
        "LimitNOFILE": "65536",
        "TimeoutStopSec": "30",  # SIGTERM: the broker closes every link with 1001 first
        "NoNewPrivileges": "yes",
    }
    assert one(unit, "Install", "WantedBy") == "default.target"


def test_a_system_unit_runs_as_its_account_and_starts_with_the_system(tmp_path: Path) -> None:
    made = spec(tmp_path, system=True, run_as="cmbroker")
    unit = parse_unit(render_systemd_unit(made))
    assert one(unit, "Service", "User") == "cmbroker"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    recorder = Recorder()
    report = install(made, env={}, dry_run=True, runner=recorder, platform=SYSTEMD, uid=UID)
    assert report.path == Path("/etc/systemd/system") / BROKER_SYSTEMD_UNIT
    assert [c.argv for c in report.commands] == [
        ("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", BROKER_SYSTEMD_UNIT)]
    assert recorder.calls == []
    assert report.summary.startswith("would write /etc/systemd/system/")


def test_a_user_install_writes_the_broker_unit_beside_the_daemons(tmp_path: Path) -> None:
    """1. install with a recording runner: the broker's file, the user's systemctl;
    2. the daemon's unit is not touched; 3. uninstall removes exactly the broker's."""
    made = spec(tmp_path)
    recorder = Recorder()
    report = install(made, env={}, runner=recorder, platform=SYSTEMD, uid=UID)
    path = tmp_path / ".config" / "systemd" / "user" / BROKER_SYSTEMD_UNIT
    assert (report.ok, report.path, report.installed) == (True, path, True)
    assert report.summary == f"installed {BROKER_SYSTEMD_UNIT} ({path}); systemd runs the broker"
    assert path.read_text() == render_systemd_unit(made)
    assert path.stat().st_mode & 0o777 == 0o644
    assert recorder.calls == [RELOAD, ENABLE, LINGER]
    assert files_under(tmp_path) == [path]
    assert not (path.parent / SYSTEMD_UNIT).exists()
    recorder.calls.clear()
    gone = uninstall(home=tmp_path, env={}, runner=recorder, platform=SYSTEMD, uid=UID,
                     unit=broker_unit())
    assert gone.ok and not path.exists()
    assert recorder.calls == [["systemctl", "--user", "disable", "--now", BROKER_SYSTEMD_UNIT],
                              RELOAD]


def test_a_failed_start_points_at_the_brokers_journal(tmp_path: Path) -> None:
    failing = Recorder({tuple(ENABLE): CommandResult(1, "", "Job failed")})
    report = install(spec(tmp_path), env={}, runner=failing, platform=SYSTEMD, uid=UID)
    assert not report.ok
    assert f"journalctl --user -u {BROKER_SYSTEMD_UNIT}" in report.errors[0]


# -- launchd ----------------------------------------------------------------------------


def test_the_plist_runs_broker_up_and_logs_under_the_config_dir(tmp_path: Path) -> None:
    doc = plistlib.loads(render_launchd_plist(spec(tmp_path)))
    log = str(tmp_path / "cm" / "broker" / "broker.log")
    assert doc == {
        "Label": BROKER_LAUNCHD_LABEL,
        "ProgramArguments": broker_up_words(tmp_path),
        "EnvironmentVariables": {"CLAUDEMESH_CONFIG_DIR": str(tmp_path / "cm")},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "WorkingDirectory": str(tmp_path),
        "SoftResourceLimits": {"NumberOfFiles": 65536},
    }
    report = install(spec(tmp_path), env={}, dry_run=True, platform=LAUNCHD, uid=UID)
    assert report.path == tmp_path / "Library" / "LaunchAgents" / f"{BROKER_LAUNCHD_LABEL}.plist"
    assert [c.argv[:3] for c in report.commands] == [("launchctl", "bootout", f"gui/{UID}"),
                                                     ("launchctl", "bootstrap", f"gui/{UID}")]


def test_a_system_plist_is_a_launch_daemon_with_a_user_name(tmp_path: Path) -> None:
    made = spec(tmp_path, system=True, run_as="cmbroker")
    assert plistlib.loads(render_launchd_plist(made))["UserName"] == "cmbroker"
    path = Path("/Library/LaunchDaemons") / f"{BROKER_LAUNCHD_LABEL}.plist"
    assert unit_path(LAUNCHD, tmp_path, unit=made.unit) == path
    report = install(made, env={}, dry_run=True, platform=LAUNCHD, uid=UID)
    assert [c.argv for c in report.commands] == [("launchctl", "bootout", "system", str(path)),
                                                 ("launchctl", "bootstrap", "system", str(path))]


# -- what is refused --------------------------------------------------------------------


@pytest.mark.parametrize("db", ["postgresql://cm:s3cret@db.example/cm",
                                "postgres://db.example/cm?password=s3cret"])
def test_a_store_url_with_a_password_is_refused(tmp_path: Path, db: str) -> None:
    with pytest.raises(ConfigError, match="pgpass") as caught:
        broker_args(db=db, host="127.0.0.1", port=7900, cwd=tmp_path)
    assert "s3cret" not in str(caught.value)


def test_a_store_url_without_a_password_is_kept_as_given(tmp_path: Path) -> None:
    args = broker_args(db="postgresql://cm@db.example/cm", host="::", port=1, cwd=tmp_path)
    assert args == ("-m", "claudemesh", "broker", "up", "--db", "postgresql://cm@db.example/cm",
                    "--host", "::", "--port", "1")


def test_only_a_system_service_runs_as_another_account() -> None:
    with pytest.raises(ConfigError, match="system"):
        broker_unit(run_as="cmbroker")
    with pytest.raises(ConfigError, match="account name"):
        broker_unit(system=True, run_as="bad name")


# -- the CLI ----------------------------------------------------------------------------


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI",
                        "JENKINS_URL", "XDG_CONFIG_HOME", "SUDO_USER")}
    env.update(HOME=str(tmp_path), CLAUDEMESH_CONFIG_DIR=str(tmp_path / "cm"))
    return subprocess.run([sys.executable, "-m", "claudemesh", "broker", *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)


def test_cli_dry_run_prints_the_unit_and_touches_nothing(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "install-service", "--dry-run", "--json", "--port", "7999",
                     "--db", "b.db", "--", "--omit-feature", "frame_batch")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    if sys.platform != "linux":
        pytest.skip("the CLI renders the unit of this machine's service manager")
    path = tmp_path / ".config" / "systemd" / "user" / BROKER_SYSTEMD_UNIT
    assert (report["ok"], report["dry_run"], report["path"]) == (True, True, str(path))
    unit = parse_unit(report["content"])
    assert systemd_words(one(unit, "Service", "ExecStart")) == [
        sys.executable, "-m", "claudemesh", "broker", "up", "--db", str(tmp_path / "b.db"),
        "--host", "127.0.0.1", "--port", "7999", "--omit-feature", "frame_batch"]
    assert one(unit, "Service", "Restart") == "on-failure"
    assert [c["argv"] for c in report["commands"]][:2] == [RELOAD, ENABLE]
    assert all(c["returncode"] is None for c in report["commands"])
    assert files_under(tmp_path) == []


def test_cli_refuses_run_as_without_system_and_uninstalls_nothing_quietly(
        tmp_path: Path) -> None:
    refused = run_cli(tmp_path, "install-service", "--dry-run", "--run-as", "cmbroker")
    assert refused.returncode == 2
    assert "--run-as needs --system" in refused.stderr
    result = run_cli(tmp_path, "uninstall-service", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["ok"], report["installed"]) == (True, False)
    assert report["summary"].startswith("not installed")
