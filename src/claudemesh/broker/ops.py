"""Plain HTTP answers on the broker's WebSocket port: liveness, readiness and metrics.

websockets hands every request to ``process_request`` before the upgrade;
:meth:`OpsEndpoints.answer` lets ``/ws`` through to the handshake, answers ``/healthz``,
``/readyz`` and ``/metrics``, and keeps every other path a 404. Liveness says only that
the process serves; readiness asks the store a trivial question within
:data:`READY_TIMEOUT_S` (a load balancer should stop sending daemons to a broker whose
store is gone). A scrape runs the same check, then reads the queue depth within
:data:`SCRAPE_TIMEOUT_S`; a store that fails either is ``cm_broker_store_up 0``, and the
scrape still answers, without queue samples, rather than hang.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from claudemesh import __version__
from claudemesh.broker.metrics import (
    CONTENT_TYPE,
    QUEUE_DEPTH_MESHES,
    BrokerMetrics,
    Scrape,
    render,
)
from claudemesh.broker.store.base import BrokerStore
from claudemesh.errors import ClaudemeshError

__all__ = ["READY_TIMEOUT_S", "SCRAPE_TIMEOUT_S", "OpsEndpoints"]

log = logging.getLogger(__name__)

READY_TIMEOUT_S: Final = 2.0
SCRAPE_TIMEOUT_S: Final = 2.0
_JSON: Final = "application/json"

Route = Callable[[ServerConnection], Awaitable[Response]]


def _reply(connection: ServerConnection, status: http.HTTPStatus, body: str,
           content_type: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]  # Headers is a multidict: replace, not add
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    return response


class OpsEndpoints:
    """The ``process_request`` of the broker's server (see the module docstring)."""

    def __init__(self, store: BrokerStore, metrics: BrokerMetrics, *, broker_id: str) -> None:
        self._store = store
        self._metrics = metrics
        self._broker_id = broker_id
        self._routes: dict[str, Route] = {"/healthz": self._healthz, "/readyz": self._readyz,
                                          "/metrics": self._scrape}

    async def answer(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/ws":
            return None  # the WebSocket handshake goes on
        route = self._routes.get(urlsplit(request.path).path)
        if route is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "the broker serves /ws only\n")
        return await route(connection)

    async def _healthz(self, connection: ServerConnection) -> Response:
        return _reply(connection, http.HTTPStatus.OK, json.dumps({"ok": True}), _JSON)

    async def _readyz(self, connection: ServerConnection) -> Response:
        reason = await self._store_problem()
        if reason is None:
            return _reply(connection, http.HTTPStatus.OK, json.dumps({"ok": True}), _JSON)
        return _reply(connection, http.HTTPStatus.SERVICE_UNAVAILABLE,
                      json.dumps({"ok": False, "reason": reason}), _JSON)

    async def _store_problem(self) -> str | None:
        """None when the store answers ``ping`` in time, else why not (no secrets: store
        errors name a DSN without its password)."""
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self._store.ping()
        except TimeoutError:
            return f"the store did not answer within {READY_TIMEOUT_S:g} s"
        except ClaudemeshError as exc:
            return exc.detail
        return None

    async def _scrape(self, connection: ServerConnection) -> Response:
        problem = await self._store_problem()
        depth: dict[str, int] | None = None
        if problem is None:
            try:
                async with asyncio.timeout(SCRAPE_TIMEOUT_S):
                    depth = await self._store.pending_by_mesh(limit=QUEUE_DEPTH_MESHES)
            except TimeoutError:
                problem = f"the queue depth took longer than {SCRAPE_TIMEOUT_S:g} s"
            except ClaudemeshError as exc:
                problem = exc.detail
        if problem is not None:
            log.warning("metrics_store_unavailable", extra={"reason": problem})
        text = render(self._metrics, Scrape(self._broker_id, __version__, depth,
                                            store_up=depth is not None))
        return _reply(connection, http.HTTPStatus.OK, text, CONTENT_TYPE)
