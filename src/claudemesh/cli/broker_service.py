"""The broker as a service: what ``claudemesh broker install-service`` installs.

The unit runs ``<python> -m claudemesh broker up`` with the operator's flags, each path
made absolute (a service has no working directory), through the daemon's service package
(daemon/service/: the same renderers, plans and installer). It differs from the daemon's
unit in what it runs and how: ``Type=exec`` (the broker sends no READY=1), no restart
after exit 2 (a usage or configuration error that no restart fixes; a store that is down
exits 1 and is retried), a raised open-files limit (one per connection), and it may be a
system service (``--system``) run as an account of the operator's choice.

The unit file is world-readable (0644), so a ``--db`` URL that carries a password is
refused: the password belongs in ``~/.pgpass`` of the account the service runs as.
Pure: no file is read or written here; the CLI (cli/broker.py) hands the spec to
:func:`claudemesh.daemon.service.install`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

from claudemesh.daemon.service import ServiceSpec, ServiceUnit, spec_from_env
from claudemesh.errors import ConfigError, ExitCode

__all__ = [
    "BROKER_LAUNCHD_LABEL",
    "BROKER_SYSTEMD_UNIT",
    "broker_args",
    "broker_spec",
    "broker_unit",
]

BROKER_SYSTEMD_UNIT: Final = "claudemesh-broker.service"
BROKER_LAUNCHD_LABEL: Final = "com.claudemesh.broker"
BROKER_OPEN_FILES: Final = 65536
_PG_SCHEMES: Final = ("postgresql://", "postgres://")


def broker_unit(args: Sequence[str] = (), *, system: bool = False,
                run_as: str | None = None) -> ServiceUnit:
    """The broker's unit; ``args`` follow the interpreter (:func:`broker_args`)."""
    return ServiceUnit(
        BROKER_SYSTEMD_UNIT, BROKER_LAUNCHD_LABEL, "claudemesh broker", tuple(args),
        restart_prevent=(ExitCode.USAGE,), system=system, run_as=run_as,
        limit_nofile=BROKER_OPEN_FILES, what="the broker")


def _absolute(path: str, cwd: Path) -> str:
    candidate = Path(path).expanduser()
    return str(candidate if candidate.is_absolute() else cwd / candidate)


def _store_location(db: str, cwd: Path) -> str:
    """A SQLite path made absolute, or a PostgreSQL URL as given, if it has no password.

    Raises:
        ConfigError: the URL carries a password, which a world-readable unit would show.
    """
    if not db.startswith(_PG_SCHEMES):
        return _absolute(db, cwd)
    parts = urlsplit(db)
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise ConfigError(
            "the --db URL carries a password, and the unit file is readable by every user;"
            " leave it out of the URL and put it in ~/.pgpass of the account the service"
            " runs as (the PostgreSQL driver reads it there)")
    return db


def broker_args(*, db: str, host: str, port: int, cwd: Path, tls_cert: str | None = None,
                tls_key: str | None = None, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """``-m claudemesh broker up`` and its flags; ``extra`` (given after ``--``) verbatim.

    Raises:
        ConfigError: a PostgreSQL URL with a password (see the module docstring).
    """
    args = ["-m", "claudemesh", "broker", "up", "--db", _store_location(db, cwd),
            "--host", host, "--port", str(port)]
    if tls_cert is not None:
        args += ["--tls-cert", _absolute(tls_cert, cwd)]
    if tls_key is not None:
        args += ["--tls-key", _absolute(tls_key, cwd)]
    return (*args, *extra)


def broker_spec(env: Mapping[str, str], *, home: Path, args: Sequence[str],
                system: bool = False, run_as: str | None = None,
                interpreter: str | None = None) -> ServiceSpec:
    """The spec the CLI installs: its own interpreter and ``CLAUDEMESH_CONFIG_DIR``, and
    launchd's output in ``<config dir>/broker/broker.log``.

    Raises:
        ConfigError: the interpreter is unknown, or ``run_as`` without ``system``.
    """
    own = spec_from_env(env, home=home, interpreter=interpreter)
    return ServiceSpec(interpreter=own.interpreter, config_dir=own.config_dir,
                       daemon_dir=None, home=home,
                       unit=broker_unit(args, system=system, run_as=run_as),
                       log_file=own.config_dir / "broker" / "broker.log")
