"""A throwaway PostgreSQL cluster for tests: real server binaries, no docker.

Theory of operation. :class:`PgCluster` runs ``initdb`` into a fresh directory under
``/tmp`` and starts ``postgres`` on a free loopback port with durability switched off
(``fsync=off``: the data dies with the test run anyway). PostgreSQL refuses to run as
root, so when the tests run as root the data directory is handed to the ``postgres`` OS
user and the server binaries are started through ``runuser``. Authentication is
``trust`` on 127.0.0.1, so a DSN is just ``postgresql://postgres@127.0.0.1:<port>/<db>``.

One cluster serves a whole test process (:func:`shared_cluster`, or the session fixture
:func:`pg_cluster`, which wraps it); isolation comes from one fresh database per test
(:func:`fresh_dsn`), which costs a ``CREATE DATABASE`` (tens of milliseconds), not a new
server. The cluster is stopped (``-m immediate``) and its directory removed at the end of
the session, or at interpreter exit if nobody tore it down.

``pg_available()`` says whether this machine can do any of that; tests that need a
server skip with :func:`pg_unavailable_reason` when it cannot.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "PgCluster",
    "fresh_dsn",
    "needs_pg",
    "pg_available",
    "pg_cluster",
    "pg_required",
    "pg_unavailable_reason",
    "shared_cluster",
    "skip_without_pg",
]

_OS_USER = "postgres"
_START_ATTEMPTS = 3


def _bindir() -> Path | None:
    """Where ``initdb``/``pg_ctl`` live: ``pg_config --bindir``, else the Debian layout."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                 check=True, timeout=10).stdout.strip()
            candidates.append(Path(out))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=_version_key, reverse=True)]
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def _as_root() -> bool:
    return os.geteuid() == 0


def pg_unavailable_reason() -> str | None:
    """None when a throwaway cluster can be started here, else why not."""
    if importlib.util.find_spec("asyncpg") is None:
        return "asyncpg is not installed (pip install claudemesh[postgres])"
    if _bindir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) found"
    if _as_root():
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (initdb refuses root)"
        try:
            pwd.getpwnam(_OS_USER)
        except KeyError:
            return "running as root and there is no 'postgres' OS user to run the server"
    return None


def pg_available() -> bool:
    return pg_unavailable_reason() is None


def pg_required() -> bool:
    """CI sets CLAUDEMESH_REQUIRE_PG=1: a missing server is then a failure, not a skip."""
    return os.environ.get("CLAUDEMESH_REQUIRE_PG") == "1"


def skip_without_pg() -> None:
    """Skip the calling test when no cluster can run here (fail instead under CI)."""
    reason = pg_unavailable_reason()
    if reason is None:
        return
    if pg_required():
        pytest.fail(f"CLAUDEMESH_REQUIRE_PG=1 but {reason}")
    pytest.skip(reason)


#: Marks a test (or a parametrization) that needs PostgreSQL; see :func:`pg_required`.
needs_pg = pytest.mark.skipif(not pg_available() and not pg_required(),
                              reason=pg_unavailable_reason() or "")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One PostgreSQL server in a temporary directory; ``start()``, use, ``stop()``."""

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or _bindir()
        if found is None:
            raise RuntimeError(pg_unavailable_reason() or "PostgreSQL is not available")
        self.bindir = found
        self.root: Path | None = None
        self.port = 0

    @property
    def datadir(self) -> Path:
        assert self.root is not None, "the cluster is not started"
        return self.root / "data"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if _as_root():
            command = ["runuser", "-u", _OS_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                check=False)
        if result.returncode != 0:
            log = ""
            if self.root is not None and (self.root / "log").exists():
                log = (self.root / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({result.returncode}):"
                               f" {result.stderr.strip()} {result.stdout.strip()[-500:]} {log}")
        return result

    def start(self) -> PgCluster:
        """initdb and start the server; returns self. Retries on a port taken meanwhile."""
        self.root = Path(tempfile.mkdtemp(prefix="pgkit", dir="/tmp"))
        if _as_root():
            user = pwd.getpwnam(_OS_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust",
                  "-U", "postgres", "--no-sync", "-E", "UTF8")
        error: Exception | None = None
        for _ in range(_START_ATTEMPTS):
            self.port = _free_port()
            try:
                self.start_server()
                return self
            except RuntimeError as exc:
                error = exc
        self.stop()
        raise RuntimeError(f"the PostgreSQL test cluster did not start: {error}")

    def start_server(self) -> None:
        """Start the server on the initdb'd directory and ``self.port`` (again, after
        :meth:`stop_server`: an outage in a test)."""
        options = (f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                   " -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", options,
                  "-l", str(self.root / "log"), "start", "-w", "-t", "60")

    def stop_server(self) -> None:
        """Stop the server (fast shutdown) and keep its data, for :meth:`start_server`."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "stop", "-m", "fast",
                  "-w")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run one SQL command through psql (as the ``postgres`` role); returns its output."""
        psql = self.bindir / "psql"
        binary = str(psql) if psql.is_file() else (shutil.which("psql") or "psql")
        result = subprocess.run(
            [binary, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(dbname),
             "-c", sql], capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (letters, digits, '_'); returns its DSN."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Stop at once (the data is disposable) and remove the directory."""
        if self.root is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "stop",
                          "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


_shared: PgCluster | None = None


def shared_cluster() -> PgCluster:
    """The process-wide test cluster, started on first use and stopped at exit."""
    global _shared  # noqa: PLW0603
    if _shared is None:
        _shared = PgCluster().start()
        atexit.register(stop_shared_cluster)
    return _shared


def stop_shared_cluster() -> None:
    global _shared  # noqa: PLW0603
    if _shared is not None:
        _shared.stop()
        _shared = None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL cluster; skips the test when none can run here."""
    skip_without_pg()
    try:
        yield shared_cluster()
    finally:
        stop_shared_cluster()


def fresh_dsn(cluster: PgCluster) -> str:
    """A new empty database on ``cluster`` (``db_<random>``); returns its DSN."""
    return cluster.create_database(f"db_{secrets.token_hex(6)}")
