"""`claudemesh doctor` against a real daemon: healthy, then each planted fault found, with
its fix (issue 14)."""

from __future__ import annotations

import json
import os
from typing import Any

from helpers import DaemonHandle, cli
from meshkit import Mesh2, link_state, wait_for


def doctor(daemon: DaemonHandle) -> tuple[int, dict[str, Any]]:
    result = cli(daemon.env, "doctor", "--json")
    return result.returncode, json.loads(result.stdout)


def failing(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"] if c["level"] == "fail"}


def test_doctor_passes_a_healthy_daemon_and_finds_each_planted_fault(pair: Mesh2) -> None:
    alice = pair.alice
    code, report = doctor(alice)
    assert (code, report["ok"], failing(report)) == (0, True, {}), report
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["link demo"]["level"] == "ok"
    assert checks["clock demo"]["level"] == "ok"  # the broker's clock, from hello_ack

    token = alice.paths.token
    os.chmod(token, 0o644)
    os.chmod(alice.paths.daemon_dir, 0o755)
    code, report = doctor(alice)
    found = failing(report)
    assert code == 1 and not report["ok"]
    assert found[f"mode {token}"]["fix"] == f"chmod 600 {token}"
    assert found[f"mode {alice.paths.daemon_dir}"]["fix"] == f"chmod 700 {alice.paths.daemon_dir}"
    os.chmod(token, 0o600)
    os.chmod(alice.paths.daemon_dir, 0o700)

    pair.broker.stop()  # the broker goes away: the link backs off, with its last error
    wait_for(lambda: link_state(alice) != "open")
    code, report = doctor(alice)
    link = failing(report)["link demo"]
    assert code == 1 and "unreachable" in link["fix"]

    alice.stop()
    code, report = doctor(alice)
    assert code == 1 and failing(report)["daemon"]["fix"] == "claudemesh daemon up"
