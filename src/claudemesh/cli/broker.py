"""``claudemesh broker up``: run a broker in the foreground (the operator's process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from claudemesh.cli.common import current_paths, json_option, service_report
from claudemesh.cli.output import PRINTER
from claudemesh.errors import ExitCode, InvalidRequest

__all__ = ["broker", "db_option", "default_db"]

DEFAULT_PORT = 7900  # the same as broker.settings.DEFAULT_PORT, without importing it


def default_db() -> Path:
    """``$CLAUDEMESH_CONFIG_DIR/broker/broker.db`` (default ``~/.claudemesh/broker/broker.db``)."""
    return current_paths().config_dir / "broker" / "broker.db"


def db_option(fn: Any) -> Any:
    """``--db``: the broker's store, for every command that opens it."""
    return click.option(
        "--db", envvar="CLAUDEMESH_BROKER_DB",
        help="The broker's store: a SQLite file, or a postgresql:// URL that several brokers"
        " share (env CLAUDEMESH_BROKER_DB keeps a password off the command line)"
        " [default: $CLAUDEMESH_CONFIG_DIR/broker/broker.db].")(fn)


@click.group()
def broker() -> None:
    """Run the broker that meshes connect to."""


@broker.command("up")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (plain ws://; put TLS in front for other networks).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="0 lets the OS pick; the bound port is printed.")
@db_option
@click.option("--ping-interval", type=float, default=30.0, hidden=True)
@click.option("--ping-timeout", type=float, default=45.0, hidden=True)
@click.option("--presence-lease", type=float, default=90.0, hidden=True)
@click.option("--delivery-lease", type=float, default=30.0, hidden=True)
@click.option("--hello-timeout", type=float, default=10.0, hidden=True)
@click.option("--rate-per-s", type=float, default=1000.0, hidden=True)
@click.option("--rate-burst", type=int, default=2000, hidden=True)
@click.option("--inline-bytes", type=click.IntRange(1024), default=65536, hidden=True)
@click.option("--revocation-poll", type=float, default=1.0, hidden=True)
@click.option("--sweep-interval", type=float, default=60.0, hidden=True)
@click.option("--heartbeat-interval", type=float, default=2.0, hidden=True)
@click.option("--dead-after", type=float, default=10.0, hidden=True,
              help="A broker silent this long loses its members' presence leases.")
@click.option("--omit-feature", multiple=True, hidden=True,
              help="Tests only: leave a feature out of hello_ack.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="PEM certificate (chain): serve wss://. SIGHUP reloads it and the key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="The certificate's PEM private key.")
@click.option("--max-file-bytes", type=click.IntRange(0), default=50 * 1024 * 1024,
              show_default=True, help="The largest file members may share through this"
              " broker (plaintext bytes; larger uploads get 413).")
@click.option("--blob-dir", type=click.Path(file_okay=False),
              help="Where shared files' ciphertext is kept [default: <db>.blobs beside a"
              " SQLite store; $CLAUDEMESH_CONFIG_DIR/broker/blobs for PostgreSQL].")
@json_option
def up(*, host: str, port: int, db: str | None, ping_interval: float, ping_timeout: float,
       presence_lease: float, delivery_lease: float, hello_timeout: float, rate_per_s: float,
       rate_burst: int, inline_bytes: int, revocation_poll: float, sweep_interval: float,
       heartbeat_interval: float, dead_after: float, omit_feature: tuple[str, ...],
       tls_cert: str | None, tls_key: str | None, max_file_bytes: int,
       blob_dir: str | None) -> int:
    """Serve meshes over WebSocket at ws[s]://HOST:PORT/ws until SIGTERM or Ctrl-C."""
    import asyncio  # noqa: PLC0415 - the server stack stays off the CLI's hot path

    from claudemesh.broker.server import run_broker  # noqa: PLC0415
    from claudemesh.broker.settings import BrokerSettings  # noqa: PLC0415
    from claudemesh.logs import configure_logging  # noqa: PLC0415

    if (tls_cert is None) != (tls_key is None):
        raise InvalidRequest("give both --tls-cert and --tls-key, or neither")
    from claudemesh.tls import is_loopback_host  # noqa: PLC0415

    if tls_cert is None and not is_loopback_host(host):
        PRINTER.warn(f"serving plain ws:// on {host}: links from other machines are not"
                     " encrypted and cannot authenticate this broker; use --tls-cert/--tls-key"
                     " (`claudemesh broker cert --self-signed` makes a pair)")
    configure_logging()
    location = str(db or default_db())
    if blob_dir is None and location.startswith(("postgresql://", "postgres://")):
        blob_dir = str(current_paths().config_dir / "broker" / "blobs")
    settings = BrokerSettings(
        host=host, port=port, ping_interval_s=ping_interval, ping_timeout_s=ping_timeout,
        presence_lease_s=presence_lease, delivery_lease_s=delivery_lease,
        hello_timeout_s=hello_timeout, rate_per_s=rate_per_s, rate_burst=rate_burst,
        inline_bytes=inline_bytes, revocation_poll_s=revocation_poll,
        sweep_interval_s=sweep_interval, heartbeat_interval_s=heartbeat_interval,
        broker_dead_after_s=dead_after, omit_features=frozenset(omit_feature),
        tls_cert=tls_cert, tls_key=tls_key, max_file_bytes=max_file_bytes, blob_dir=blob_dir)

    def on_ready(info: dict[str, Any]) -> None:
        if PRINTER.json:
            sys.stdout.write(json.dumps(info) + "\n")
        else:
            pin = f"; TLS key {info['pin']}" if info.get("pin") else ""
            sys.stdout.write(f"broker listening on {info['url']} (store {info['db']}{pin})\n")
        sys.stdout.flush()

    return asyncio.run(run_broker(settings, location, on_ready))


@broker.command("cert")
@click.option("--self-signed", is_flag=True, required=True,
              help="Make a self-signed certificate (the only kind this command makes).")
@click.option("--host", "hosts", multiple=True, required=True,
              help="A name or IP address joiners use to reach the broker; repeat for more.")
@click.option("--dir", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write cert.pem and key.pem"
              " [default: $CLAUDEMESH_CONFIG_DIR/broker/tls].")
@click.option("--renew", is_flag=True,
              help="Keep the existing key (so invites' pins stay valid); new certificate.")
@click.option("--days", type=click.IntRange(1, 3650), default=825, show_default=True)
@json_option
def cert(*, self_signed: bool, hosts: tuple[str, ...], out_dir: Path | None, renew: bool,
         days: int) -> int:
    """Make a TLS key and certificate for `broker up --tls-cert/--tls-key` (a quick start:
    invites from this broker pin the key, so joiners need no CA)."""
    from claudemesh.privatefs import ensure_private_dir, write_private_file  # noqa: PLC0415
    from claudemesh.tls import pin_of_cert_file  # noqa: PLC0415
    from claudemesh.tls import self_signed as make  # noqa: PLC0415

    del self_signed  # required: names the kind of certificate
    where = out_dir or current_paths().config_dir / "broker" / "tls"
    cert_file, key_file = where / "cert.pem", where / "key.pem"
    if key_file.exists() and not renew:
        raise InvalidRequest(f"{key_file} exists; --renew keeps that key, or choose another"
                             " --dir (a new key breaks the pin of every invite made so far)")
    key_pem = key_file.read_bytes() if renew and key_file.exists() else None
    cert_pem, key_pem = make(list(hosts), key_pem=key_pem, days=days)
    ensure_private_dir(where)
    write_private_file(key_file, key_pem)
    write_private_file(cert_file, cert_pem)
    pin = pin_of_cert_file(cert_file)
    PRINTER.result({"cert": str(cert_file), "key": str(key_file), "pin": pin,
                    "hosts": list(hosts)},
                   f"wrote {cert_file} and {key_file} (key pin {pin})\n"
                   f"run: claudemesh broker up --host 0.0.0.0 --tls-cert {cert_file}"
                   f" --tls-key {key_file}\n"
                   f"invite with: --broker-url wss://{hosts[0]}:{DEFAULT_PORT}/ws"
                   f" --tls-cert {cert_file}")
    return 0


@broker.command("check")
@db_option
@json_option
def check(db: str | None) -> int:
    """Run the orphan check of daemon-spec §4.7.3; exit 1 on any inconsistency."""
    import asyncio  # noqa: PLC0415

    from claudemesh.broker.store import open_store  # noqa: PLC0415

    async def run() -> list[dict[str, Any]]:
        store = open_store(db or default_db())
        try:
            return await store.orphan_check()
        finally:
            await store.close()

    findings = asyncio.run(run())
    text = "store is consistent" if not findings else "\n".join(
        f"{f['kind']}: {json.dumps({k: v for k, v in f.items() if k != 'kind'})}"
        for f in findings)
    PRINTER.result({"ok": not findings, "findings": findings}, text)
    return ExitCode.FAILURE if findings else 0


# -- the broker as a service (cli/broker_service.py) ------------------------------------


def _scope_options(fn: Any) -> Any:
    return click.option("--system", is_flag=True,
                        help="A system service (/etc/systemd/system, /Library/LaunchDaemons;"
                        " needs root) instead of the invoking user's.")(fn)


@broker.command("install-service")
@click.option("--host", default="127.0.0.1", show_default=True, help="As for `broker up`.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="As for `broker up`.")
@db_option
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="As for `broker up`.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="As for `broker up`.")
@_scope_options
@click.option("--run-as", metavar="USER",
              help="The account a --system service runs as [default: $SUDO_USER, else you].")
@click.option("--dry-run", is_flag=True, help="Print the unit/plist and the commands only.")
@click.option("--allow-ci", is_flag=True, help="Install even in a CI environment.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, metavar="[-- BROKER_UP_ARGS...]")
@json_option
def install_service(*, host: str, port: int, db: str | None, tls_cert: str | None,
                    tls_key: str | None, system: bool, run_as: str | None, dry_run: bool,
                    allow_ci: bool, extra: tuple[str, ...]) -> int:
    """Run `broker up` as a systemd service (Linux) or a launchd job (macOS).

    Arguments after `--` are passed to `broker up` as they are.
    """
    import getpass  # noqa: PLC0415
    import os  # noqa: PLC0415

    from claudemesh.cli.broker_service import broker_args, broker_spec  # noqa: PLC0415
    from claudemesh.daemon.service import install  # noqa: PLC0415

    if run_as is not None and not system:
        raise click.UsageError("--run-as needs --system: a user service runs as you")
    if system and run_as is None:
        run_as = os.environ.get("SUDO_USER") or getpass.getuser()
    args = broker_args(db=str(db or default_db()), host=host, port=port, cwd=Path.cwd(),
                       tls_cert=tls_cert, tls_key=tls_key, extra=extra)
    spec = broker_spec(os.environ, home=Path.home(), args=args, system=system, run_as=run_as)
    report = install(spec, env=os.environ, dry_run=dry_run, allow_ci=allow_ci)
    return service_report(report, show_unit=dry_run)


@broker.command("uninstall-service")
@_scope_options
@click.option("--dry-run", is_flag=True, help="Print the commands only.")
@json_option
def uninstall_service(system: bool, dry_run: bool) -> int:
    """Stop and remove the service installed by `broker install-service`."""
    import os  # noqa: PLC0415

    from claudemesh.cli.broker_service import broker_unit  # noqa: PLC0415
    from claudemesh.daemon.service import uninstall  # noqa: PLC0415

    report = uninstall(home=Path.home(), env=os.environ, dry_run=dry_run,
                       unit=broker_unit(system=system))
    return service_report(report)
