"""One agent session on the mesh: the tools' behaviour, without the MCP plumbing.

:class:`AgentSession` holds the registered session and a :class:`~claudemesh.sdk.AsyncClient`
and implements every tool as a coroutine that returns a :class:`ToolOutcome` (text for
the model, structured data, whether it is an error). ``mcp_server`` turns those into MCP
results and feeds :meth:`AgentSession.on_event` from the one event stream it holds.

Who shows a message. A new message may reach the model three ways here: a
``wait_for_message`` call that is waiting, a channel push, or a later ``inbox`` call.
It must be shown once. A waiting ``wait_for_message`` takes precedence (its caller is
blocked on exactly that), so a message event first wakes the matching waiters and is
pushed only when none is waiting; and every message this process shows is *claimed* (by
its ``seq``) in the same event-loop step that decides to show it, so a push and a
waiter's inbox query that race for one message never both present it.

Race-free waiting. ``wait_for_message`` registers its waiter (its mark on the stream)
*before* it asks the daemon for unread messages, and clears its wake-up flag before the
query: a message stored after the query set the flag and is handed to the waiter by its
event (shown from the event, with no second query), and one stored before is in the
answer. After it stops waiting it looks once more, so a message whose push was held back
for it is shown rather than left unread.

Shown, then marked. Messages a tool shows are marked seen (``tool_call``) after the
result is built, off the call's path; the claim keeps this process from showing them
twice meanwhile, and a crash before the mark lands shows them again later, never hides
them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from claudemesh.agent import naming
from claudemesh.agent.framing import frame
from claudemesh.agent.search_tools import SearchTools
from claudemesh.agent.tools import (
    TOOLS_BY_NAME,
    ToolInputError,
    ToolOutcome,
    check_arguments,
    send_message_id,
)
from claudemesh.agent.topic_tools import TopicTools
from claudemesh.errors import (
    BrokerUnavailable,
    ClaudemeshError,
    DaemonUnreachable,
    IdempotencyKeyReused,
    InvalidRequest,
    MeshRequired,
    MessageNotFound,
    NoMeshJoined,
    PayloadTooLarge,
    SessionNameTaken,
    SessionNotFound,
    UnknownDestination,
    UnknownMesh,
    UnknownSession,
)
from claudemesh.sdk import AsyncClient, Event, InboxItem, Session, VersionInfo

__all__ = ["TOOL_MAX_CHARS", "AgentSession", "Registration", "ToolOutcome", "register"]

log = logging.getLogger("claudemesh.mcp")

TOOL_MAX_CHARS: Final = 40_000  # a tool result's framed text (a model's context is finite)
PUSH_MAX_CHARS: Final = 16_000  # one channel push
WAIT_BATCH: Final = 20
RECHECK_S: Final = 15.0  # wait_for_message looks again this often even if not woken
REPLY_SCAN: Final = 1000  # how far back reply() looks for a message id it has not seen
REMEMBERED: Final = 4096  # message ids and claims kept in memory
INBOX_HINT: Final = "call inbox() to read them"

Pusher = Callable[[InboxItem, str], Coroutine[Any, Any, bool]]


@dataclass(frozen=True, slots=True)
class Registration:
    """What the session was registered with, to register it again if it is lost."""

    name: str
    harness: str
    pid: int | None
    cwd: str | None
    default: bool


async def register(client: AsyncClient, wanted: Registration) -> Session:
    """Register ``wanted.name``, or ``name-2`` ... ``name-9`` while the name is taken.

    Raises:
        SessionNameTaken: every candidate is held by another live process.
    """
    names = list(naming.candidates(wanted.name))
    holders: list[str] = []
    for name in names:
        try:
            return await client.register_session(
                name, harness=wanted.harness, pid=wanted.pid, cwd=wanted.cwd,
                default=wanted.default)
        except SessionNameTaken as exc:
            holder = exc.fields.get("holder") or {}
            holders.append(f"{name} (pid {holder.get('pid')}, {holder.get('harness')})")
            log.info("session name %s is taken; trying the next", name)
    raise SessionNameTaken(
        f"session names {names[0]} to {names[-1]} are all held by other live processes:"
        f" {', '.join(holders)}; pick another with --session NAME or"
        f" ${naming.ENV_SESSION}")


@dataclass(eq=False)
class _Waiter:
    sender: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: list[InboxItem] = field(default_factory=list)  # from the stream, since woken


class _Bounded(OrderedDict[Any, Any]):
    """An insertion-ordered map that forgets its oldest entries past REMEMBERED."""

    def remember(self, key: Any, value: Any = None) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > REMEMBERED:
            self.popitem(last=False)


class AgentSession(TopicTools, SearchTools):
    """The tools of one registered session; see the module docstring for the rules."""

    def __init__(self, client: AsyncClient, session: Session, registration: Registration,
                 *, connection_id: str) -> None:
        self.client = client
        self.session = session
        self.registration = registration
        self.connection_id = connection_id
        self.pusher: Pusher | None = None  # set once the MCP client accepts channel pushes
        self._waiters: set[_Waiter] = set()
        self._claimed = _Bounded()  # seq -> None: shown by this process
        self._items = _Bounded()  # inbox item id -> InboxItem, for reply()
        self._meshes: list[dict[str, str]] = []
        self._marking: set[asyncio.Task[None]] = set()  # seen marks on their way

    # -- the tool call entry point ----------------------------------------------------------

    async def call(self, tool: str, arguments: Mapping[str, Any] | None,
                   request_id: int | str | None) -> ToolOutcome:
        """Run one tool call; every failure comes back as an error outcome, never raised."""
        spec = TOOLS_BY_NAME.get(tool)
        if spec is None:
            return _error(f"there is no tool {tool!r}; the tools are"
                          f" {', '.join(TOOLS_BY_NAME)}")
        try:
            args = check_arguments(spec, arguments)
        except ToolInputError as exc:
            return _error(f"bad arguments: {exc}")
        handler = getattr(self, f"_tool_{tool}")
        for attempt in (1, 2):
            try:
                outcome: ToolOutcome = await handler(args, request_id)
            except (UnknownSession, SessionNotFound) as exc:
                # The daemon forgot this session (reaped, or its store was reset): register
                # it again under the same name once, then retry the call.
                if attempt == 2 or not await self._reregister(exc):
                    return _error(f"this session is no longer registered with the daemon"
                                  f" ({exc.detail}); restart the claudemesh MCP server")
            except ClaudemeshError as exc:
                return _error(await self._explain(tool, args, exc))
            except Exception as exc:
                log.exception("tool %s failed", tool)
                return _error(f"internal error in the claudemesh MCP server"
                              f" ({type(exc).__name__}: {exc}); its stderr log has more")
            else:
                return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reregister(self, exc: ClaudemeshError) -> bool:
        log.warning("session %s lost (%s); registering it again", self.session.name, exc)
        try:  # under the name it had, which may be a -N one
            self.session = await register(
                self.client, dataclasses.replace(self.registration, name=self.session.name))
        except ClaudemeshError as again:
            log.warning("registering the session again failed: %s", again)
            return False
        return True

    # -- tools ------------------------------------------------------------------------------

    async def _tool_whoami(self, args: dict[str, Any], request_id: object) -> ToolOutcome:
        version = await self._load_meshes()
        self.session = await self.client.session(self.session.session_id)
        s = self.session
        data = {"session_id": s.session_id, "name": s.name, "address": s.address,
                "addresses": [a.raw for a in s.addresses], "meshes": self._meshes,
                "default": s.default, "harness": s.harness, "summary": s.summary,
                "status": s.status, "daemon_version": version.daemon_version,
                "unread": s.unread, "channel_push": self.pusher is not None}
        return ToolOutcome(_json(data), data)

    async def _tool_send(self, args: dict[str, Any], request_id: int | str | None) -> ToolOutcome:
        return await self._send("send", args, request_id, to=args["to"],
                                reply_to=args.get("reply_to"), mesh=args.get("mesh"))

    async def _tool_reply(self, args: dict[str, Any], request_id: int | str | None) -> ToolOutcome:
        item = await self._find_item(args["message_id"])
        if item is None:
            return _error(f"no message with id {args['message_id']!r} for this session among"
                          f" the latest {REPLY_SCAN}; the id is the one in a message's header"
                          " (inbox, wait_for_message or a channel event)")
        to = item.reply_to_address or (
            f"{item.sender_pubkey}/{item.from_session}" if item.from_session
            else item.sender_pubkey)
        return await self._send("reply", args, request_id, to=to,
                                reply_to=item.broker_message_id, mesh=item.mesh)

    async def _send(self, tool: str, args: dict[str, Any], request_id: int | str | None, *,
                    to: str, reply_to: str | None, mesh: str | None) -> ToolOutcome:
        if mesh is None and len(await self._mesh_list()) == 1:
            mesh = self._meshes[0]["mesh"]  # what the daemon picks; said in the result
        cmid = send_message_id(session_id=self.session.session_id,
                               connection_id=self.connection_id,
                               request_id=request_id if request_id is not None else "",
                               tool=tool, arguments=args)
        delay = args.get("in_seconds")  # a retry's later time is ignored: the row keeps its
        when = None if delay is None else datetime.now(UTC) + timedelta(seconds=delay)
        result = await self.client.send(
            to, args["message"], mesh=mesh, priority=args["priority"], client_message_id=cmid,
            reply_to=reply_to, session=self.session.session_id, deliver_at=when)
        status: str = "sent (an identical earlier call)" if result.duplicate else result.status
        if result.status == "scheduled":
            status += f" for {result.deliver_at}"
        data = {"client_message_id": result.client_message_id, "status": result.status,
                "duplicate": result.duplicate, "to": to, "mesh": mesh,
                "broker_message_id": result.broker_message_id, "deliver_at": result.deliver_at}
        text = (f"Message to {to}{f' in mesh {mesh}' if mesh else ''}: {status},"
                f" client_message_id {result.client_message_id}. It will be delivered even"
                " if the broker is down now; message_status shows how far it got.\n"
                + _json(data))
        return ToolOutcome(text, data)

    async def _tool_inbox(self, args: dict[str, Any], request_id: object) -> ToolOutcome:
        sender, limit = args.get("from"), args["limit"]
        sid = self.session.session_id
        if args["unread_only"]:
            page = await self.client.inbox(session=sid, unread=True, sender=sender,
                                           order="asc", limit=limit)
            # not what a push showed a moment ago (its mark may still be on the way)
            items = [item for item in page.items if item.seq not in self._claimed]
            complete = sender is None and len(page.items) < limit
        else:
            page = await self.client.inbox(session=sid, sender=sender, order="desc",
                                           limit=limit)
            items = list(reversed(page.items))
            complete = False
        return await self._present(items, empty="No messages." if not args["unread_only"]
                                   else "No unread messages.", complete=complete)

    async def _tool_wait_for_message(self, args: dict[str, Any],
                                     request_id: object) -> ToolOutcome:
        timeout_s, sender = float(args["timeout_s"]), args.get("from")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waiter = _Waiter(sender)
        self._waiters.add(waiter)  # our mark on the stream: from here on, events wake us
        try:
            looked = False
            while True:
                waiter.wake.clear()
                if not looked:  # first, and after each quiet RECHECK_S: ask the daemon
                    waiter.arrived.clear()  # its answer covers what came before it
                    items, complete = await self._take_unread(sender)
                    looked = True
                    if items:
                        return await self._present(items, complete=complete)
                elif waiter.arrived:  # what the stream brought since: rows stored after
                    fresh = [i for i in waiter.arrived if i.seq not in self._claimed]
                    waiter.arrived.clear()
                    if fresh:
                        return await self._present(fresh, complete=True)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                # Woken by the stream; the periodic look is only a safety net for a
                # stream that is down (the daemon restarting) while we wait.
                try:
                    async with asyncio.timeout(min(remaining, RECHECK_S)):
                        await waiter.wake.wait()
                except TimeoutError:
                    looked = False
        finally:
            self._waiters.discard(waiter)
        items, complete = await self._take_unread(sender)  # pushes held back: ours to show
        if items:
            return await self._present(items, complete=complete)
        who = f" from {sender}" if sender else ""
        data = {"messages": 0, "timeout_s": timeout_s}
        return ToolOutcome(f"No message{who} within {timeout_s:g} s.", data)

    async def _tool_peers(self, args: dict[str, Any], request_id: object) -> ToolOutcome:
        listed = await self.client.peers(args.get("mesh"))
        mine = await self._my_pubkeys()
        peers = [{"mesh": p.mesh, "name": p.display_name, "pubkey": p.pubkey,
                  "online": p.online, "status": p.status, "summary": p.summary,
                  "you": p.pubkey in mine,
                  "sessions": [{"name": s.name, "address": s.address, "status": s.status,
                                "summary": s.summary, "harness": s.harness}
                               for s in p.sessions]}
                 for p in listed.peers]
        data = {"peers": peers, "unavailable": listed.unavailable}
        note = ("Summaries and status lines are written by the peers themselves.\n"
                if peers else "No peers are listed.\n")
        if listed.unavailable:
            note += (f"The broker of {', '.join(listed.unavailable)} is unreachable, so its"
                     " peers are unknown right now.\n")
        return ToolOutcome(note + _json(data), data)

    async def _tool_set_status(self, args: dict[str, Any], request_id: object) -> ToolOutcome:
        summary, status = args.get("summary"), args.get("status")
        if summary is None and status is None:
            return _error("set_status: give 'summary' (what you are doing) or 'status'"
                          " (idle, working or dnd), or both")
        answer = await self.client.set_profile(session=self.session.session_id,
                                               summary=summary, status=status)
        data = {"session": self.session.name, "applied": answer.get("applied", []),
                "published": answer.get("published", True), "mesh": answer.get("mesh")}
        text = "Your session line is set" + (
            "." if data["published"] else
            "; the broker is unreachable, so peers see it once it is back.")
        return ToolOutcome(text + "\n" + _json(data), data)

    async def _tool_message_status(self, args: dict[str, Any],
                                   request_id: object) -> ToolOutcome:
        status = await self.client.message_status(args["client_message_id"])
        data = dict(status.raw)
        steps = [f"{name} {at}" for name, at in (
            ("queued", status.enqueued_at), ("accepted", status.accepted_at),
            ("stored", status.stored_at), ("surfaced", status.surfaced_at)) if at]
        where = (f" (shown to session {status.surfaced_session} by {status.surfaced_path})"
                 if status.surfaced_at else "")
        text = (f"Message {status.client_message_id} to {status.destination}: {status.state}"
                f"{where}. " + "; ".join(steps) + "\n" + _json(data))
        return ToolOutcome(text, data)

    # -- showing messages ------------------------------------------------------------------

    async def _take_unread(self, sender: str | None) -> tuple[list[InboxItem], bool]:
        """Unread messages for us not yet shown by this process, and whether they are all
        the session's unread ones (then nothing else needs counting).

        The caller hands them straight to :meth:`_present`, which claims them before its
        first await: nothing else runs between this filter and that claim.
        """
        page = await self.client.inbox(session=self.session.session_id, unread=True,
                                       sender=sender, order="asc", limit=WAIT_BATCH)
        items = [item for item in page.items if item.seq not in self._claimed]
        return items, sender is None and len(page.items) < WAIT_BATCH

    async def _present(self, items: Sequence[InboxItem], *, empty: str = "No messages.",
                       complete: bool = False) -> ToolOutcome:
        """Frame ``items`` for a tool result, claim the ones shown and mark them seen
        (``tool_call``); those that did not fit stay unread and are counted. With
        ``complete`` (``items`` hold every unread message) and all of them shown, there is
        nothing to count and the daemon is not asked."""
        for item in items:
            self._items.remember(item.id, item)
        if not items:
            return ToolOutcome(empty, None)
        probe = frame(items, max_chars=TOOL_MAX_CHARS, hint=INBOX_HINT)
        shown = list(items[:probe.shown])
        for item in shown:  # claimed before the first await below
            self._claimed.remember(item.seq)
        unseen = [item.id for item in shown if item.seen_at is None]
        more = 0 if complete and len(shown) == len(items) else max(
            0, await self._unread() - len(unseen))  # counted before our marks land
        if unseen:  # after the result is on its way: shown, then marked (never the reverse)
            self._mark_later(unseen, "tool_call")
        text = frame(shown, max_chars=TOOL_MAX_CHARS, more=more, hint=INBOX_HINT).text
        return ToolOutcome(text, None)

    def _mark_later(self, ids: list[str], path: str) -> None:
        """Mark ``ids`` seen off the tool call's path: the call answers one request sooner,
        and the claim already keeps this process from showing them twice."""
        task = asyncio.create_task(self._mark(ids, path))
        self._marking.add(task)
        task.add_done_callback(self._marking.discard)

    async def _mark(self, ids: list[str], path: str) -> None:
        try:
            await self.client.mark_seen(self.session.session_id, ids=ids, path=path)
        except ClaudemeshError as exc:
            log.warning("marking %d message(s) seen failed: %s", len(ids), exc)

    async def _unread(self) -> int:
        self.session = await self.client.session(self.session.session_id)
        return self.session.unread

    async def on_event(self, event: Event) -> None:
        """One event of the stream: wake waiters, or push it, for messages of this session."""
        item = event.message
        if item is None or item.session not in (None, self.session.name):
            return
        self._items.remember(item.id, item)
        woken = [w for w in self._waiters if _from(item, w.sender)]
        for waiter in woken:
            waiter.arrived.append(item)
            waiter.wake.set()
        if woken or self.pusher is None or item.seq in self._claimed:
            return
        self._claimed.remember(item.seq)
        framed = frame([item], max_chars=PUSH_MAX_CHARS, hint=INBOX_HINT).text
        if await self.pusher(item, framed):
            try:
                await self.client.mark_seen(self.session.session_id, ids=[item.id],
                                            path="mcp_push")
            except ClaudemeshError as exc:
                log.warning("marking pushed message %s seen failed: %s", item.id, exc)

    async def pump_events(self) -> None:
        """Follow the daemon's event stream for the life of the process.

        It starts after the newest message stored now, so one that arrives before the
        stream is open is replayed rather than missed. The SDK reconnects and resumes
        by itself; should the stream still end or fail, it is opened again after the
        last ``seq`` handled.
        """
        last: int | None = None
        try:
            newest = await self.client.inbox(limit=1, order="desc")
            last = newest.items[0].seq if newest.items else 0
        except ClaudemeshError as exc:
            log.warning("reading the newest message failed (%s); following live only", exc)
        while True:
            try:
                async for event in self.client.events(last_event_id=last, reconnect=True,
                                                      session=self.session.name):
                    last = event.seq if event.seq is not None else last
                    try:
                        await self.on_event(event)
                    except ClaudemeshError as exc:
                        log.warning("event %s %s not handled: %s", event.kind, event.id, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the event stream failed; following it again in 1 s")
            await asyncio.sleep(1.0)

    async def end(self) -> None:
        """Unregister the session, best effort (the daemon reaps it by pid anyway), once
        the seen marks on their way have landed."""
        await asyncio.gather(*self._marking, return_exceptions=True)
        try:
            await self.client.end_session(self.session.session_id)
        except ClaudemeshError as exc:
            log.info("ending session %s: %s", self.session.name, exc)

    # -- helpers ----------------------------------------------------------------------------

    async def _find_item(self, message_id: str) -> InboxItem | None:
        known = self._items.get(message_id)
        if isinstance(known, InboxItem):
            return known
        page = await self.client.inbox(session=self.session.session_id, order="desc",
                                       limit=REPLY_SCAN)
        for item in page.items:
            self._items.remember(item.id, item)
            if item.id == message_id:
                return item
        return None

    async def _load_meshes(self) -> VersionInfo:
        version = await self.client.version()
        self._meshes = [{"mesh": m.slug, "member_name": m.display_name,
                         "member_pubkey": m.member_pubkey} for m in version.meshes]
        return version

    async def _mesh_list(self) -> list[dict[str, str]]:
        if not self._meshes:
            await self._load_meshes()
        return self._meshes

    async def _my_pubkeys(self) -> set[str]:
        return {m["member_pubkey"] for m in await self._mesh_list()}

    async def _explain(self, tool: str, args: Mapping[str, Any],
                       exc: ClaudemeshError) -> str:
        """What went wrong, said so that the model knows what to do next."""
        if isinstance(exc, UnknownDestination):
            return await self._unknown_peer(str(args.get("to", "")), args.get("mesh"), exc)
        meshes = ", ".join(m["mesh"] for m in self._meshes) or "whoami() lists them"
        for kind, template in _EXPLANATIONS:
            if isinstance(exc, kind):
                return template.format(detail=exc.detail, tool=tool, meshes=meshes,
                                       id=args.get("client_message_id"))
        return f"{tool} failed: {exc.code}: {exc.detail}"

    async def _unknown_peer(self, to: str, mesh: str | None, exc: ClaudemeshError) -> str:
        where = f" in mesh {mesh}" if mesh else ""
        try:
            listed = await self.client.peers(mesh)
        except ClaudemeshError:
            known = "unknown (the broker is unreachable)"
        else:
            names = sorted({p.display_name for p in listed.peers})
            known = ", ".join(names) or "none"
            if not mesh and len({p.mesh for p in listed.peers}) == 1:
                where = f" in mesh {listed.peers[0].mesh}"
        return (f"no peer called {to!r}{where} ({exc.detail}); known peers: {known} —"
                " use peers() first, and send to a name, name/session or pubkey it lists")


# What a model should do about each refusal, most specific class first.
_EXPLANATIONS: Final[tuple[tuple[type[ClaudemeshError], str], ...]] = (
    (MeshRequired, "several meshes are joined ({meshes}); say which with mesh=..."),
    (UnknownMesh, "{detail}; the joined meshes are: {meshes}"),
    (NoMeshJoined, "{detail}; ask the user to join a mesh first"),
    (PayloadTooLarge, "the message is too large ({detail}); split it into several sends"),
    (BrokerUnavailable, "the broker is unreachable right now ({detail}); messages you send"
                        " are queued and delivered when it is back, but peers cannot be"
                        " listed"),
    (MessageNotFound, "no message sent from here has client_message_id {id!r}; use the id"
                      " that send or reply returned"),
    (IdempotencyKeyReused, "the daemon refused a reused message id ({detail}); call {tool}"
                           " again (a new call gets a new id)"),
    (InvalidRequest, "the daemon refused the {tool} call: {detail}"),
    (DaemonUnreachable, "the claudemesh daemon is not answering ({detail}); try again in a"
                        " moment, or ask the user to run `claudemesh daemon status`"),
)


def _from(item: InboxItem, sender: str | None) -> bool:
    if sender is None:
        return True
    wanted = sender.lower()
    return wanted in {(item.sender_name or "").lower(), item.sender_pubkey.lower()}


def _error(text: str) -> ToolOutcome:
    return ToolOutcome(text, None, is_error=True)


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)
