"""The broker's embedded store: one SQLite file (``schema``: the tables, ``store``: the
operations on them).

The names below are the package's face; ``from claudemesh.broker.store.sqlite import X``
is how the rest of claudemesh reaches them.
"""

from __future__ import annotations

from claudemesh.broker.store.sqlite.schema import BROKER_MIGRATIONS
from claudemesh.broker.store.sqlite.store import SqliteBrokerStore

__all__ = ["BROKER_MIGRATIONS", "SqliteBrokerStore"]
