"""Broker stores behind one interface (base.py); the location's scheme picks one."""

from __future__ import annotations

from pathlib import Path

from claudemesh.broker.store.base import BrokerStore
from claudemesh.errors import ConfigError

__all__ = ["open_store"]


def open_store(location: str | Path) -> BrokerStore:
    """A SQLite path (the embedded default); ``postgresql://`` arrives with issue 6."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        raise ConfigError("the PostgreSQL store is not built yet; use a SQLite path")
    from claudemesh.broker.store.sqlite import SqliteBrokerStore  # noqa: PLC0415

    return SqliteBrokerStore(Path(text).expanduser())
