"""Broker stores behind one interface (base.py); the location's scheme picks one."""

from __future__ import annotations

from pathlib import Path

from claudemesh.broker.store.base import BrokerStore
from claudemesh.errors import ConfigError

__all__ = ["open_store", "redact_location"]


def open_store(location: str | Path) -> BrokerStore:
    """A SQLite path (the embedded default), or a ``postgresql://`` / ``postgres://`` DSN.

    The PostgreSQL store opens lazily: its pool is created (and the schema migrated) on
    its first operation, inside the caller's event loop.
    """
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        try:
            from claudemesh.broker.store.postgres import PostgresBrokerStore  # noqa: PLC0415
        except ModuleNotFoundError as exc:
            if exc.name != "asyncpg":
                raise
            raise ConfigError("the PostgreSQL store needs asyncpg:"
                              " pip install 'claudemesh[postgres]'") from exc
        return PostgresBrokerStore(text)
    from claudemesh.broker.store.sqlite import SqliteBrokerStore  # noqa: PLC0415

    return SqliteBrokerStore(Path(text).expanduser())


def redact_location(location: str | Path) -> str:
    """The store location without a DSN's password, for messages, logs and ``--json``."""
    text = str(location)
    head, sep, rest = text.partition("://")
    if not sep or "@" not in rest:
        return text
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{head}://{user}@{host}" if user else f"{head}://{host}"
