"""A real DaemonContext for the route helpers: the daemon's own wiring (run._open_stores)
over SQLite files in tmp_path, with no server and no broker link (nothing dials out)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from claudemesh.config import Config, MeshConfig, Paths
from claudemesh.crypto import MemberKey
from claudemesh.daemon.ipc.context import DaemonContext
from claudemesh.daemon.run import DaemonOptions, _open_stores


def mesh_config(slug: str) -> MeshConfig:
    key = MemberKey.generate()
    return MeshConfig(slug=slug, mesh_id=f"m-{slug}", member_id=f"u-{slug}",
                      display_name="alice", broker_url="ws://127.0.0.1:9/ws",
                      pubkey=key.pubkey, secret_key=key.secret_key)


@pytest.fixture
async def make_context(tmp_path: Path) -> AsyncIterator[Callable[..., DaemonContext]]:
    """``make_context("demo", "work")``: a daemon's context that joined those meshes, each
    with a fresh member key; its stores close at the end of the test."""
    homes = itertools.count()
    async with contextlib.AsyncExitStack() as stack:
        def make(*slugs: str) -> DaemonContext:
            root = tmp_path / f"home-{next(homes)}"
            config_dir, daemon_dir = root / "config", root / "daemon"
            for d in (config_dir, daemon_dir):
                d.mkdir(parents=True, mode=0o700)
            config = Config(paths=Paths(config_dir, daemon_dir),
                            meshes=tuple(mesh_config(s) for s in slugs))
            ctx, _ = _open_stores(config, DaemonOptions(tcp=False), stack)
            return ctx
        yield make
