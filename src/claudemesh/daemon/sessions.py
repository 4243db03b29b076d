"""The daemon's sessions: register, renew, end, and reap the dead (docs/api.md, issue 12).

A session is owned by a process (its pid *and* start time, read here, never taken from
the caller) or by a lease. It is alive while its owner is; the reaper looks every
``check_interval_s`` and deletes sessions whose owner is gone, so a crashed agent's
session disappears within one interval, and a live one never does, across daemon
restarts too (rows persist in ``inbox.db``). Registration is idempotent for the same
owner and refused for a name another live owner holds. Every change is reported to
``on_change`` (the mesh runtimes publish the live list to their brokers).

All state changes run under one asyncio lock: a registration's liveness check of a
name's current holder and its insert cannot interleave with another registration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from claudemesh.daemon.procinfo import process_info
from claudemesh.daemon.store.sessions import NewSession, SessionRow, SessionStore
from claudemesh.errors import (
    ClaudemeshError,
    ProcessNotFound,
    SessionNameTaken,
    SessionNotFound,
)
from claudemesh.protocol.ids import new_ulid
from claudemesh.sqlitedb.worker import DbWorker

__all__ = ["CHECK_INTERVAL_S", "DEFAULT_LEASE_S", "Registration", "SessionRegistry"]

log = logging.getLogger(__name__)

CHECK_INTERVAL_S: Final = 2.0
DEFAULT_LEASE_S: Final = 120


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    harness: str | None = None
    pid: int | None = None
    cwd: str | None = None
    default: bool = False
    lease_s: int | None = None


class SessionRegistry:
    """The rows live in ``inbox.db``; this registry is their only writer, so it keeps a
    copy in memory and a send from a session costs no database read."""

    def __init__(self, inbox: DbWorker, *, clock: Callable[[], int],
                 on_change: Callable[[], None] = lambda: None,
                 check_interval_s: float = CHECK_INTERVAL_S,
                 proc: Path = Path("/proc")) -> None:
        self._inbox = inbox
        self._clock = clock
        self._on_change = on_change
        self._interval = check_interval_s
        self._proc = proc
        self._lock = asyncio.Lock()
        self._rows: dict[str, SessionRow] | None = None  # by id, loaded on first use

    # -- liveness ------------------------------------------------------------------------

    def alive(self, row: SessionRow, now_ms: int) -> bool:
        if row.pid is None:
            return row.lease_expires_at is not None and row.lease_expires_at > now_ms
        info = process_info(row.pid, proc=self._proc)
        return info is not None and info.start == row.pid_start

    async def _all(self) -> dict[str, SessionRow]:
        if self._rows is None:
            rows = await self._inbox.run(lambda c: SessionStore(c).all(), durable=False)
            self._rows = {r.id: r for r in rows}
        return self._rows

    def _keep(self, row: SessionRow) -> SessionRow:
        assert self._rows is not None
        self._rows[row.id] = row
        return row

    # -- operations ------------------------------------------------------------------------

    async def register(self, reg: Registration) -> tuple[SessionRow, bool]:
        """Returns (session, created).

        Raises:
            ProcessNotFound: ``pid`` is not a running process of this user (422).
            SessionNameTaken: a live session of another owner holds the name (409).
        """
        pid_start: str | None = None
        if reg.pid is not None:
            info = process_info(reg.pid, proc=self._proc)
            if info is None:
                raise ProcessNotFound(f"no running process of this user has pid {reg.pid}",
                                      pid=reg.pid)
            pid_start = info.start
        lease = None if reg.pid is not None else (reg.lease_s or DEFAULT_LEASE_S)
        async with self._lock:
            now = self._clock()
            rows = await self._all()
            holder = next((r for r in rows.values() if r.name == reg.name), None)
            if holder is not None and holder.same_owner(reg.pid, pid_start) and (
                    self.alive(holder, now)):
                row = await self._inbox.run(lambda c: SessionStore(c).refresh(
                    holder.id, harness=reg.harness, cwd=reg.cwd,
                    is_default=True if reg.default else None, now_ms=now))
                assert row is not None
                self._reload_defaults(row)
                self._changed()
                return self._keep(row), False
            if holder is not None:
                if self.alive(holder, now):
                    raise SessionNameTaken(
                        f"session name {reg.name!r} is held by a live session"
                        f" ({holder.harness or 'no harness'}, pid {holder.pid})",
                        name=reg.name, holder={"session_id": holder.id, "pid": holder.pid,
                                               "harness": holder.harness})
                await self._delete([holder], reason="owner_gone")
            new = NewSession(new_ulid(now), reg.name, reg.harness, reg.pid, pid_start,
                             reg.cwd, reg.default, lease)
            row = await self._inbox.run(lambda c: SessionStore(c).insert(new, now))
            self._reload_defaults(row)
            self._keep(row)
        log.info("session_registered", extra={"session_id": row.id, "session": row.name,
                                               "harness": row.harness, "pid": row.pid})
        self._changed()
        return row, True

    def _reload_defaults(self, row: SessionRow) -> None:
        """Marking one session default unmarked the others in the database: follow it."""
        if row.is_default and self._rows is not None:
            for other in list(self._rows.values()):
                if other.id != row.id and other.is_default:
                    self._rows[other.id] = dataclasses.replace(other, is_default=False)

    async def get(self, session_id: str) -> SessionRow:
        """A live session by id (a dead one is reaped on the spot).

        Raises:
            SessionNotFound: no live session has that id (404).
        """
        row = (await self._all()).get(session_id)
        if row is None:
            raise SessionNotFound(f"no live session has id {session_id!r}",
                                  session_id=session_id)
        if not self.alive(row, self._clock()):
            async with self._lock:
                await self._delete([row], reason="owner_gone")
            self._changed()
            raise SessionNotFound(f"session {session_id!r} ended: its owner is gone",
                                  session_id=session_id)
        return row

    async def touch(self, session_id: str) -> SessionRow:
        """Renew a lease (any call naming the session does).

        Raises:
            SessionNotFound: unknown, or already reaped.
        """
        live = await self.get(session_id)
        if live.lease_s is None:
            return live  # owned by a pid: nothing to renew
        now = self._clock()
        row = await self._inbox.run(lambda c: SessionStore(c).touch(session_id, now),
                                    durable=False)
        if row is None:
            raise SessionNotFound(f"no live session has id {session_id!r}",
                                  session_id=session_id)
        return self._keep(row)

    async def set_line(self, session_id: str, *, summary: str | None,
                       status: str | None) -> SessionRow:
        await self.get(session_id)
        row = await self._inbox.run(lambda c: SessionStore(c).set_line(
            session_id, summary=summary, status=status))
        if row is None:
            raise SessionNotFound(f"no live session has id {session_id!r}",
                                  session_id=session_id)
        self._keep(row)
        self._changed()
        return row

    async def end(self, session_id: str) -> None:
        """Raises SessionNotFound when there is no such session."""
        async with self._lock:
            row = (await self._all()).get(session_id)
            if row is None:
                raise SessionNotFound(f"no live session has id {session_id!r}",
                                      session_id=session_id)
            await self._delete([row], reason="ended")
        self._changed()

    async def live(self) -> list[SessionRow]:
        """Every live session, oldest first; the dead are reaped first."""
        await self.reap()
        return sorted((await self._all()).values(), key=lambda r: (r.created_at, r.id))

    async def reap(self) -> list[str]:
        async with self._lock:
            now = self._clock()
            dead = [r for r in (await self._all()).values() if not self.alive(r, now)]
            await self._delete(dead, reason="owner_gone")
        if dead:
            self._changed()
        return [r.id for r in dead]

    async def run(self) -> None:
        """The reaper: look every interval (started with the daemon, cancelled at stop)."""
        while True:
            try:
                await self.reap()
            except ClaudemeshError:
                log.exception("session_reap_failed")
            await asyncio.sleep(self._interval)

    async def _delete(self, rows: list[SessionRow], *, reason: str) -> None:
        if not rows:
            return
        ids = [r.id for r in rows]
        await self._inbox.run(lambda c: SessionStore(c).delete(ids))
        for row in rows:
            if self._rows is not None:
                self._rows.pop(row.id, None)
            log.info("session_ended", extra={"session_id": row.id, "session": row.name,
                                             "reason": reason})

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:  # a subscriber's bug must not fail the route that changed it
            log.exception("session_change_callback_failed")
