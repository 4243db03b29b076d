"""The processes under test, started and stopped the way a user does: through the CLI.

A :class:`Broker` is ``claudemesh broker up`` with the per-member rate limit lifted (the
hidden ``--rate-per-s``/``--rate-burst`` flags); a :class:`Member` has its own config
directory, joins with ``claudemesh join`` and runs ``claudemesh daemon up``. Each is
stopped the polite way first and killed only if that fails, and only our own pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

RATE_FLAGS: Final = ("--rate-per-s", "1000000", "--rate-burst", "1000000")
READY_TIMEOUT_S: Final = 60.0
CLI_TIMEOUT_S: Final = 120.0
STOP_TIMEOUT_S: Final = 60.0


def claudemesh_cli() -> str:
    """The console script beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name("claudemesh")
    if beside.exists():
        return str(beside)
    found = shutil.which("claudemesh")
    if found is None:
        raise SystemExit("claudemesh console script not found; install the project first")
    return found


def stop_process(proc: subprocess.Popen[Any], sig: signal.Signals) -> int | None:
    """Send ``sig`` and wait; SIGKILL our own process only if it does not stop."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@dataclass(slots=True)
class Broker:
    """``claudemesh broker up`` on ``root/broker.db`` (or ``store``); restartable on its port."""

    root: Path
    store: str = ""  # a postgresql:// DSN several brokers share (bench/cluster.py)
    cli: str = field(default_factory=claudemesh_cli)
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    url: str = ""
    tls: tuple[str, str] | None = None  # (cert, key): serve wss://, invites pin the key

    @property
    def db(self) -> str:
        return self.store or str(self.root / "broker.db")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CLAUDEMESH_CONFIG_DIR": str(self.root / "home")}

    def start(self) -> None:
        """Start on ``self.port`` (0 the first time) and wait for the ready line."""
        log = (self.root / "broker.log").open("a")
        try:
            self.proc = subprocess.Popen(
                [self.cli, "broker", "up", "--port", str(self.port), "--db", self.db,
                 "--json", *RATE_FLAGS, *self.tls_flags],
                env=self.env, stdout=subprocess.PIPE, stderr=log, text=True)
        finally:
            log.close()
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            line = self.proc.stdout.readline() if sel.select(timeout=READY_TIMEOUT_S) else ""
        if not line:
            raise SystemExit("broker did not start:\n" + self.log_tail())
        info = json.loads(line)
        self.port, self.url = int(info["port"]), str(info["url"])

    @property
    def tls_flags(self) -> tuple[str, ...]:
        return () if self.tls is None else ("--tls-cert", self.tls[0], "--tls-key", self.tls[1])

    def make_cert(self) -> None:
        """A self-signed pair for 127.0.0.1 (``broker cert``); start() then serves wss://."""
        where = self.root / "tls"
        out = subprocess.run(
            [self.cli, "broker", "cert", "--self-signed", "--host", "127.0.0.1", "--dir",
             str(where), "--json"], env=self.env, capture_output=True, text=True,
            timeout=CLI_TIMEOUT_S, check=False)
        if out.returncode != 0:
            raise SystemExit(f"broker cert failed: {out.stdout}{out.stderr}")
        info = json.loads(out.stdout)
        self.tls = (str(info["cert"]), str(info["key"]))

    def stop(self) -> int | None:
        """SIGTERM and wait: the exit status, or None if it had to be killed."""
        return None if self.proc is None else stop_process(self.proc, signal.SIGTERM)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "broker.log").read_text()[-2000:]
        return ""

    def create_mesh(self, name: str, *, max_uses: int, urls: list[str] | None = None) -> str:
        """``claudemesh mesh create``; returns the invite (listing ``urls``, default ours)."""
        listed = [arg for url in (urls or [self.url]) for arg in ("--broker-url", url)]
        out = subprocess.run(
            [self.cli, "mesh", "create", name, "--db", self.db, *listed,
             "--max-uses", str(max_uses), "--json",
             *(("--tls-cert", self.tls[0]) if self.tls else ())],
            env=self.env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
        if out.returncode != 0:
            raise SystemExit(f"mesh create failed: {out.stdout}{out.stderr}")
        return str(json.loads(out.stdout)["invite"])


@dataclass(slots=True)
class Member:
    """A member with its own config directory and daemon."""

    name: str
    config_dir: Path
    cli: str = field(default_factory=claudemesh_cli)
    pubkey: str = ""
    pid: int = 0
    sock: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "CLAUDEMESH_DAEMON_DIR"}
        env["CLAUDEMESH_CONFIG_DIR"] = str(self.config_dir)
        return env

    @property
    def daemon_dir(self) -> Path:
        """Where the daemon keeps its databases, socket and log."""
        return self.config_dir / "daemon"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.cli, *args], env=self.env, capture_output=True,
                              text=True, timeout=CLI_TIMEOUT_S, check=False)

    def join(self, invite: str) -> None:
        """``claudemesh join`` into a new config directory; reads our pubkey back."""
        self.config_dir.mkdir(mode=0o700)
        out = self._run("join", invite, "--name", self.name, "--json")
        if out.returncode != 0:
            raise SystemExit(f"join {self.name} failed: {out.stdout}{out.stderr}")
        config = json.loads((self.config_dir / "config.json").read_text())
        self.pubkey = str(config["meshes"][0]["pubkey"])

    def start(self, *extra: str) -> dict[str, Any]:
        """``claudemesh daemon up --json [extra]``; returns what it printed."""
        out = self._run("daemon", "up", "--json", *extra)
        if out.returncode != 0:
            raise SystemExit(f"daemon up ({self.name}) failed: {out.stdout}{out.stderr}")
        info: dict[str, Any] = json.loads(out.stdout)
        self.pid, self.sock = int(info["pid"]), str(info["sock"])
        return info

    def stop(self) -> str | None:
        """``claudemesh daemon down``; SIGKILL our own pid only if that fails (and say so)."""
        if not self.pid:
            return None
        out = self._run("daemon", "down", "--json")
        if out.returncode == 0:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        return (f"daemon down ({self.name}) failed ({out.returncode}):"
                f" {out.stdout}{out.stderr}; killed pid {self.pid}")


def start_py_spy(pid: int, path: str, *, gil: bool = False) -> subprocess.Popen[bytes]:
    """``py-spy record --format raw --threads`` of ``pid`` into ``path`` until stopped.

    ``gil`` keeps only samples holding the GIL, so threads waiting on fsync or a socket
    do not show as work.
    """
    exe = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(exe if exe.exists() else "py-spy"), "record", "--pid",
                             str(pid), "--format", "raw", "--threads",
                             *(["--gil"] if gil else []), "--rate", "200", "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write its profile; wait for that."""
    stop_process(proc, signal.SIGINT)
