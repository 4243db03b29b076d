"""``claudemesh mesh ...`` (operator, against the broker's store) and ``claudemesh join``."""

from __future__ import annotations

import getpass
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from claudemesh.cli.broker import db_option, default_db
from claudemesh.cli.common import current_paths, json_option
from claudemesh.cli.output import PRINTER
from claudemesh.clock import now_ms
from claudemesh.errors import AlreadyJoined, InvalidRequest

__all__ = ["join", "mesh"]

T = TypeVar("T")


def _with_store(db: str | None, action: Callable[[Any], Awaitable[T]]) -> T:
    import asyncio  # noqa: PLC0415 - only operator commands need it

    from claudemesh.broker.store import open_store  # noqa: PLC0415

    async def run() -> T:
        store = open_store(db or default_db())
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


async def _find_mesh(store: Any, ref: str) -> Any:
    mesh = await store.get_mesh(ref)
    if mesh is None:
        raise InvalidRequest(f"no mesh called {ref!r} in this broker's store")
    return mesh


@click.group()
def mesh() -> None:
    """Create meshes, mint invites and revoke members (run by the broker's operator)."""


def _invite_options(fn: Any) -> Any:
    fn = click.option("--broker-url", "broker_urls", multiple=True,
                      default=["ws://127.0.0.1:7900/ws"], show_default=True,
                      help="Where joiners reach this broker; repeat it for failover brokers"
                      " that share the store.")(fn)
    fn = click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                      help="The broker's TLS certificate: the invite pins its public key, so"
                      " joiners need no CA (a self-signed broker is safe).")(fn)
    fn = click.option("--pin", default="", help="The broker's key pin (sha256/…, as `broker"
                      " cert` and `broker up` print it), instead of --tls-cert.")(fn)
    fn = click.option("--max-uses", type=click.IntRange(1), default=10, show_default=True)(fn)
    fn = click.option("--valid-hours", type=click.FloatRange(0.01), default=168.0,
                      show_default=True)(fn)
    return fn


def _invite_pin(broker_urls: tuple[str, ...], tls_cert: Path | None, pin: str) -> str:
    """The pin an invite carries, with a loud warning for plain ws:// across a network."""
    from claudemesh.tls import is_loopback_url, pin_of_cert_file  # noqa: PLC0415

    if tls_cert is not None and pin:
        raise InvalidRequest("give --tls-cert or --pin, not both")
    if tls_cert is not None:
        pin = pin_of_cert_file(tls_cert)
    if pin and not all(u.startswith("wss://") for u in broker_urls):
        raise InvalidRequest("a pinned key needs wss:// broker URLs")
    for url in broker_urls:
        if url.startswith("ws://") and not is_loopback_url(url):
            PRINTER.warn(f"{url} is plain ws:// to another machine: messages' metadata and"
                         " topic bodies cross the network unencrypted; run the broker with"
                         " --tls-cert/--tls-key and invite with wss://")
    return pin


@mesh.command("create")
@click.argument("name")
@db_option
@_invite_options
@click.option("--dedupe-retention-days", type=click.IntRange(3), default=365, show_default=True)
@click.option("--permanent-dedupe", is_flag=True, help="Keep dedupe rows forever.")
@click.option("--message-retention-days", type=click.IntRange(1), default=30, show_default=True)
@click.option("--connection-policy", type=click.Choice(["prefer_newest", "prefer_oldest"]),
              default="prefer_newest", show_default=True)
@json_option
def create(*, name: str, db: str | None, broker_urls: tuple[str, ...], max_uses: int,
           valid_hours: float, tls_cert: Path | None, pin: str,
           dedupe_retention_days: int, permanent_dedupe: bool, message_retention_days: int,
           connection_policy: str) -> int:
    """Create a mesh and print an invite (on the last line) for its first members."""
    from claudemesh.broker.admin import MeshOptions, create_mesh, mint_invite  # noqa: PLC0415

    options = MeshOptions("permanent" if permanent_dedupe else "retention_scoped",
                          dedupe_retention_days, message_retention_days, connection_policy)
    pin = _invite_pin(broker_urls, tls_cert, pin)

    async def action(store: Any) -> tuple[Any, str]:
        created = await create_mesh(store, name, options, now_ms=now_ms())
        invite = await mint_invite(store, created, broker_url=broker_urls[0],
                                   more_urls=broker_urls[1:], max_uses=max_uses,
                                   valid_hours=valid_hours, now_ms=now_ms(), pin=pin)
        return created, invite

    created, invite = _with_store(db, action)
    PRINTER.result({"mesh_id": created.id, "invite": invite},
                   f"mesh {created.name} created ({created.id}); invite for {max_uses}"
                   f" member(s), valid {valid_hours:g} h:\n{invite}")
    return 0


@mesh.command("invite")
@click.argument("mesh_ref", metavar="MESH")
@db_option
@_invite_options
@json_option
def invite_cmd(mesh_ref: str, *, db: str | None, broker_urls: tuple[str, ...], max_uses: int,
               valid_hours: float, tls_cert: Path | None, pin: str) -> int:
    """Mint another invite for an existing mesh (by name or id)."""
    from claudemesh.broker.admin import mint_invite  # noqa: PLC0415

    pin = _invite_pin(broker_urls, tls_cert, pin)

    async def action(store: Any) -> tuple[Any, str]:
        found = await _find_mesh(store, mesh_ref)
        return found, await mint_invite(store, found, broker_url=broker_urls[0],
                                        more_urls=broker_urls[1:], max_uses=max_uses,
                                        valid_hours=valid_hours, now_ms=now_ms(), pin=pin)

    found, invite = _with_store(db, action)
    PRINTER.result({"mesh_id": found.id, "invite": invite}, invite)
    return 0


@mesh.command("revoke")
@click.argument("pubkey")
@db_option
@click.option("--mesh", "mesh_ref", help="Only in this mesh (default: every mesh).")
@json_option
def revoke_cmd(pubkey: str, db: str | None, mesh_ref: str | None) -> int:
    """Revoke a member; a live connection is closed with 4002 within a second."""
    from claudemesh.broker.admin import revoke  # noqa: PLC0415

    async def action(store: Any) -> list[Any]:
        found = await _find_mesh(store, mesh_ref) if mesh_ref else None
        return await revoke(store, pubkey, mesh=found, now_ms=now_ms())

    revoked = _with_store(db, action)
    PRINTER.result({"revoked": [{"mesh_id": m.mesh_id, "member_id": m.id,
                                 "display_name": m.display_name} for m in revoked]},
                   "\n".join(f"revoked {m.display_name} ({m.id}) in mesh {m.mesh_id}"
                             for m in revoked))
    return 0


def default_display_name() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "", getpass.getuser()) or "member"
    return name[:64]


@click.command("join")
@click.argument("invite_text", metavar="INVITE")
@click.option("--name", help="Your display name in the mesh [default: your user name].")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trust the broker's certificate by this CA bundle instead of the system's"
              " (an invite with a pinned key needs neither).")
@json_option
def join(invite_text: str, name: str | None, ca_file: Path | None) -> int:
    """Join a mesh with an invite: make a key, register it, and add the mesh to config.json."""
    from claudemesh.config import MeshConfig, add_mesh, load_meshes  # noqa: PLC0415
    from claudemesh.crypto import MemberKey  # noqa: PLC0415
    from claudemesh.joining import join_mesh  # noqa: PLC0415
    from claudemesh.protocol.destination import DISPLAY_NAME_RE  # noqa: PLC0415
    from claudemesh.protocol.invite import InviteError, decode_invite  # noqa: PLC0415
    from claudemesh.tls import is_loopback_url  # noqa: PLC0415

    try:
        invite = decode_invite(invite_text)
    except InviteError as exc:
        raise InvalidRequest(str(exc)) from None
    display_name = name or default_display_name()
    if not DISPLAY_NAME_RE.fullmatch(display_name):
        raise InvalidRequest("--name must be 1-64 characters without control characters,"
                             " not starting with #, @ or *")
    paths = current_paths()
    joined = load_meshes(paths.config_file)
    if any(m.mesh_id == invite.mesh_id for m in joined):
        raise AlreadyJoined(f"this machine already joined mesh {invite.mesh_name!r}"
                            f" (see {paths.config_file})")
    for url in invite.urls:
        if url.startswith("ws://") and not is_loopback_url(url):
            PRINTER.warn(f"{url} is plain ws:// to another machine: the link is not encrypted"
                         " (message bodies of DMs still are, end to end)")
    key = MemberKey.generate()
    ca = str(ca_file.resolve()) if ca_file is not None else None
    result = join_mesh(invite, key, display_name, ca_file=ca)
    slugs = {m.slug for m in joined}
    slug = invite.mesh_name
    suffix = 2
    while slug in slugs:
        slug, suffix = f"{invite.mesh_name}-{suffix}", suffix + 1
    add_mesh(paths.config_file, MeshConfig(
        slug=slug, mesh_id=invite.mesh_id, member_id=result.member_id,
        display_name=result.display_name, broker_url=invite.broker_url,
        pubkey=key.pubkey, secret_key=key.secret_key, broker_urls=invite.urls[1:],
        pin=invite.pin or None, ca_file=ca))
    data = {"mesh": slug, "mesh_id": invite.mesh_id, "member_id": result.member_id,
            "display_name": result.display_name, "pubkey": key.pubkey}
    PRINTER.result(data, f"joined mesh {slug} as {result.display_name}"
                         f" (pubkey {key.pubkey[:16]}…); restart the daemon to use it:"
                         " `claudemesh daemon down && claudemesh daemon up`")
    return 0
