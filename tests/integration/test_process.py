"""The daemon as a process: files and modes, one instance, signals, stale files, limits."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import DaemonHandle, cli, new_daemon, wait_gone


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_files_are_private(daemon: DaemonHandle) -> None:
    paths = daemon.paths
    daemon.send({"to": "#t", "message": "m"})
    assert mode(paths.config_dir) == 0o700
    assert mode(paths.daemon_dir) == 0o700
    assert stat.S_ISSOCK(paths.sock.lstat().st_mode)
    assert mode(paths.sock) == 0o600
    for path in (paths.token, paths.pid, paths.http_port, paths.outbox_db, paths.log,
                 Path(f"{paths.outbox_db}-wal"), Path(f"{paths.outbox_db}-shm")):
        assert mode(path) == 0o600, path
    token = paths.token.read_text().strip()
    assert len(token) == 43 and set(token) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert int(paths.pid.read_text()) == daemon.pid
    assert token not in paths.log.read_text()


def test_token_survives_restarts_and_a_loose_directory_is_tightened(
        daemon: DaemonHandle) -> None:
    token = daemon.token()
    daemon.stop()
    daemon.paths.daemon_dir.chmod(0o755)
    daemon.paths.token.chmod(0o644)
    daemon.start()
    assert daemon.token() == token
    assert mode(daemon.paths.daemon_dir) == 0o700
    assert mode(daemon.paths.token) == 0o600


def test_a_second_daemon_on_the_same_directory_refuses_cleanly(daemon: DaemonHandle) -> None:
    result = cli(daemon.env, "daemon", "up", "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["error"] == "daemon_already_running"
    assert str(daemon.pid) in error["detail"]
    foreground = cli(daemon.env, "daemon", "up", "--foreground")
    assert foreground.returncode == 1
    assert "already runs" in foreground.stderr
    assert daemon.uds().call("GET", "/v1/version")["pid"] == daemon.pid
    assert int(daemon.paths.pid.read_text()) == daemon.pid


def test_concurrent_starts_leave_exactly_one_daemon() -> None:
    daemon = new_daemon(start=False)
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "claudemesh", "daemon", "up", "--json"],
                                  env=daemon.env, stdout=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outcomes = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
        winners = [o for o in outcomes if "pid" in o and "error" not in o]
        assert len(winners) == 1
        assert {o["error"] for o in outcomes if "error" in o} == {"daemon_already_running"}
        daemon.info = winners[0]
        assert daemon.uds().call("GET", "/v1/version")["pid"] == daemon.pid
    finally:
        daemon.cleanup()


def test_sigterm_finishes_the_request_in_flight_then_removes_its_files() -> None:
    """1. run the daemon in the foreground as our child; 2. start a send and hold back
    the end of its body; 3. SIGTERM; 4. finish the body: the send is still accepted;
    5. the process exits 0 and leaves no socket, pid or port file."""
    daemon = new_daemon(start=False)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "claudemesh", "daemon", "up", "--foreground", "--json"],
            env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        daemon.info = json.loads(proc.stdout.readline())
        body = json.dumps({"to": "#t", "message": "late", "client_message_id": "late-1"}).encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.paths.sock))
        sock.sendall(b"POST /v1/send HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None, "must wait for the request in flight"
        sock.sendall(body[10:])
        sock.settimeout(10)
        answer = sock.recv(65536)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 202"), answer
        assert proc.wait(timeout=20) == 0
        for path in (daemon.paths.sock, daemon.paths.pid, daemon.paths.http_port):
            assert not path.exists(), path
        assert daemon.db_rows() == [("late-1", "pending", 0, None)]
        assert "daemon_stopped" in (proc.stderr.read() if proc.stderr else "")
    finally:
        daemon.cleanup()


def test_down_stops_the_daemon_and_then_says_not_running(daemon: DaemonHandle) -> None:
    result = cli(daemon.env, "daemon", "down", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"stopped": True, "pid": daemon.pid}
    wait_gone(daemon.pid)
    assert not daemon.paths.sock.exists()
    again = cli(daemon.env, "daemon", "down", "--json")
    assert (again.returncode, json.loads(again.stdout)["running"]) == (0, False)


def test_a_stale_socket_and_pid_file_do_not_block_a_start(daemon: DaemonHandle) -> None:
    """After kill -9 the socket file and pid file stay behind; the next start takes over."""
    daemon.kill9()
    assert daemon.paths.sock.exists()
    assert daemon.paths.pid.exists()
    status = cli(daemon.env, "daemon", "status", "--json")
    assert status.returncode == 3
    assert "no daemon is running" in json.loads(status.stdout)["detail"]
    daemon.start()
    assert daemon.uds().call("GET", "/v1/health")["pid"] == daemon.pid


def test_no_tcp_serves_only_the_socket() -> None:
    daemon = new_daemon(extra=("--no-tcp",))
    try:
        assert daemon.info["tcp_port"] is None
        assert not daemon.paths.http_port.exists()
        assert daemon.uds().call("GET", "/v1/health")["status"] == "degraded"  # no broker
    finally:
        daemon.cleanup()


def test_a_busy_tcp_port_fails_the_start_with_a_clear_message() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    daemon = new_daemon(start=False)
    try:
        result = cli(daemon.env, "daemon", "up", "--tcp-port", str(holder.getsockname()[1]))
        assert result.returncode == 1
        assert "--tcp-port" in result.stderr
        assert not daemon.paths.pid.exists()
        assert not daemon.paths.sock.exists()
    finally:
        holder.close()
        daemon.cleanup()


def test_a_socket_path_over_the_os_limit_is_refused_by_name(tmp_path: Path) -> None:
    long_dir = Path("/tmp") / ("d" * 100)
    env = {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(tmp_path),
           "CLAUDEMESH_DAEMON_DIR": str(long_dir)}
    try:
        result = cli(env, "daemon", "up", "--json")
        assert result.returncode == 2
        error = json.loads(result.stdout)
        assert error["error"] == "socket_path_too_long"
        assert str(long_dir / "daemon.sock") in error["detail"]
        assert "107" in error["detail"]
    finally:
        subprocess.run(["rm", "-rf", str(long_dir)], check=False)


def test_a_broken_config_is_exit_2_and_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{oops")
    env = {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(tmp_path)}
    env.pop("CLAUDEMESH_DAEMON_DIR", None)
    result = cli(env, "daemon", "up")
    assert result.returncode == 2
    assert str(tmp_path / "config.json") in result.stderr
    assert not (tmp_path / "daemon" / "daemon.pid").exists()


def test_a_corrupt_outbox_refuses_to_start(daemon: DaemonHandle) -> None:
    for i in range(300):
        daemon.send({"to": "#t", "message": "x" * 400, "client_message_id": f"c{i}"})
    daemon.stop()
    path = daemon.paths.outbox_db
    data = bytearray(path.read_bytes())
    for offset in range(4096 + 100, len(data), 4096):
        data[offset:offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    result = cli(daemon.env, "daemon", "up", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "store_corrupt"
    assert not daemon.paths.sock.exists()


@pytest.mark.parametrize("slugs", [(), ("a", "b")])
def test_mesh_selection(slugs: tuple[str, ...]) -> None:
    daemon = new_daemon(slugs)
    try:
        resp = daemon.send({"to": "#t", "message": "m"})
        assert resp.status == 422
        assert resp.body["error"] == ("no_mesh_joined" if not slugs else "mesh_required")
        if slugs:
            ok = daemon.send({"to": "#t", "message": "m", "mesh": "b"})
            assert ok.status == 202
            assert daemon.outbox()[0]["mesh"] == "b"
    finally:
        daemon.cleanup()


def fake_host(root: Path, machine_id: str, mac: str = "00:11:22:33:44:55") -> str:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "machine-id").write_text(machine_id + "\n")
    nic = root / "sys" / "class" / "net" / "eth0"
    nic.mkdir(parents=True, exist_ok=True)
    (nic / "address").write_text(mac + "\n")
    return str(root)


def test_a_copied_daemon_directory_refuses_to_start_with_exit_4(tmp_path: Path) -> None:
    """1. first run records the host; 2. the machine-id changes (a cloned disk): daemon up
    exits 4 naming both ids and accept-host; 3. a MAC-only change is not a mismatch;
    4. accept-host, then it starts."""
    daemon = new_daemon(start=False)
    try:
        root = fake_host(tmp_path / "host", "aaaa1111")
        daemon.start("--host-root", root)
        record = json.loads((daemon.paths.daemon_dir / "host_fingerprint.json").read_text())
        assert record["host_id"] == "linux:aaaa1111"
        assert mode(daemon.paths.daemon_dir / "host_fingerprint.json") == 0o600
        daemon.stop()
        fake_host(tmp_path / "host", "aaaa1111", mac="00:11:22:33:44:66")
        daemon.start("--host-root", root)  # MAC-only change: still this host
        daemon.stop()
        fake_host(tmp_path / "host", "bbbb2222")
        refused = cli(daemon.env, "daemon", "up", "--host-root", root, "--json")
        assert refused.returncode == 4
        error = json.loads(refused.stdout)
        assert error["error"] == "host_mismatch"
        assert "aaaa1111" in error["detail"] and "bbbb2222" in error["detail"]
        assert "claudemesh daemon accept-host" in error["detail"]
        assert not daemon.paths.sock.exists()
        accepted = cli(daemon.env, "daemon", "accept-host", "--host-root", root, "--json")
        assert accepted.returncode == 0, accepted.stderr
        daemon.start("--host-root", root)
    finally:
        daemon.cleanup()
