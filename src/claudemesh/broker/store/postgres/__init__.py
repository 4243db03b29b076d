"""The broker's shared store: PostgreSQL through asyncpg, for several brokers at once.

Theory of operation, one module a part (each opens with its own section):

* ``schema``: the tables (as SQLite's, in the PostgreSQL schema ``mesh``), the accept as
  the SQL function ``mesh.accept_message``, and migrations applied exactly once by
  brokers starting together.
* ``connection``: the lazy pool, and :meth:`~connection.PgPool.run`, which runs each
  operation in one READ COMMITTED transaction, retries deadlocks and serialization
  failures, and turns driver errors into :class:`~claudemesh.errors.StoreError`.
* ``store``: :class:`PostgresBrokerStore`, the operations of base.py: the accept
  (R-BRK-10), delivery claims, the commit order of a mesh's accepts, presence.
* ``notify``: :class:`PgNotifier`, LISTEN/NOTIFY wake-ups between brokers over one
  dedicated, reconnecting connection.

The names below are the package's face; ``from claudemesh.broker.store.postgres import X``
is how the rest of claudemesh reaches them.
"""

from __future__ import annotations

from claudemesh.broker.store.postgres.notify import CHANNEL, NOTIFY_LIMIT, PgNotifier
from claudemesh.broker.store.postgres.schema import PG_MIGRATIONS, migrate
from claudemesh.broker.store.postgres.store import PostgresBrokerStore

__all__ = ["CHANNEL", "NOTIFY_LIMIT", "PG_MIGRATIONS", "PgNotifier", "PostgresBrokerStore",
           "migrate"]
