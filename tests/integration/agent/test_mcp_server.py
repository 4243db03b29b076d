"""`claudemesh mcp` end to end: the real server process, spoken to by the `mcp` SDK's own
stdio client, on alice's and bob's real daemons and a real broker (meshkit.mesh2)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientSession, IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from pydantic import BaseModel, ConfigDict

from claudemesh.agent.framing import BOUNDARY
from helpers import DaemonHandle, short_tmpdir
from meshkit import Mesh2, mesh2

CHANNEL_METHOD = "notifications/claude/channel"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ChannelParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    content: str
    meta: dict[str, str]


@dataclass
class Agent:
    """One `claudemesh mcp` process and the SDK client session talking to it."""

    session: ClientSession
    dispatcher: JSONRPCDispatcher[Any]
    daemon: DaemonHandle
    pushed: list[ChannelParams] = field(default_factory=list)
    wire_errors: list[Exception] = field(default_factory=list)

    async def call(self, tool: str, arguments: dict[str, Any] | None = None,
                   timeout: float = 30) -> types.CallToolResult:
        return await self.session.call_tool(tool, arguments or {},
                                            read_timeout_seconds=timeout)

    async def ok(self, tool: str, arguments: dict[str, Any] | None = None,
                 timeout: float = 30) -> types.CallToolResult:
        result = await self.call(tool, arguments, timeout)
        assert not result.is_error, text(result)
        return result

    async def whoami(self) -> dict[str, Any]:
        result = await self.ok("whoami")
        assert result.structured_content is not None
        return result.structured_content


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def server_env(daemon: DaemonHandle, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in daemon.env.items()
           if k.startswith("CLAUDEMESH_") or k == "PYTHONPATH"}  # PYTHONPATH: the code tested
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@contextlib.asynccontextmanager
async def agent(daemon: DaemonHandle, *args: str, declare_channel: bool = False,
                env: dict[str, str] | None = None,
                cwd: Path | None = None) -> AsyncIterator[Agent]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "claudemesh", "mcp",
                                                                 *args],
                                   env=env or server_env(daemon), cwd=cwd)
    pushed: list[ChannelParams] = []
    wire_errors: list[Exception] = []

    async def on_channel(channel: ChannelParams) -> None:
        pushed.append(channel)

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, Exception):  # e.g. a stray non-JSON line on stdout
            wire_errors.append(message)

    async with stdio_client(params) as (read_stream, write_stream):
        dispatcher: JSONRPCDispatcher[Any] = JSONRPCDispatcher(read_stream, write_stream)
        async with ClientSession(
                dispatcher=dispatcher, message_handler=on_message,
                notification_bindings=[NotificationBinding(
                    method=CHANNEL_METHOD, params_type=ChannelParams, handler=on_channel)],
        ) as session:
            await initialize(session, {"claude/channel": {}} if declare_channel else None)
            handle = Agent(session, dispatcher, daemon, pushed, wire_errors)
            yield handle
            assert wire_errors == []


async def initialize(session: ClientSession,
                     experimental: dict[str, dict[str, Any]] | None) -> types.InitializeResult:
    """The handshake by hand: ClientSession.initialize() never sends `experimental`."""
    result = await session.send_request(
        types.InitializeRequest(params=types.InitializeRequestParams(
            protocol_version=LATEST_HANDSHAKE_VERSION,
            capabilities=types.ClientCapabilities(experimental=experimental),
            client_info=types.Implementation(name="claudemesh-tests", version="1"))),
        types.InitializeResult)
    session.adopt(result)
    await session.send_notification(types.InitializedNotification())
    return result


def unread(daemon: DaemonHandle, session: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"session": session, "unread": "1", "order": "asc"})
    return list(daemon.uds().call("GET", f"/v1/inbox?{query}")["items"])


def session_items(daemon: DaemonHandle, session: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"session": session, "order": "asc", "limit": "1000"})
    return list(daemon.uds().call("GET", f"/v1/inbox?{query}")["items"])


async def until(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await anyio.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


async def test_initialize_lists_tools_with_schemas(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "t-init") as alice:
        init = alice.session.initialize_result
        assert init is not None
        assert init.capabilities.experimental == {"claude/channel": {}}
        assert init.instructions is not None and "untrusted" in init.instructions
        tools = {t.name: t for t in (await alice.session.list_tools()).tools}
        assert set(tools) == {"whoami", "send", "reply", "inbox", "wait_for_message",
                              "peers", "set_status", "message_status", "topic_subscribe",
                              "topic_unsubscribe", "topic_list", "topic_post", "topic_history",
                              "group_join", "group_leave", "group_list", "search",
                              "thread"}
        for tool in tools.values():
            assert tool.description and len(tool.description) > 40
            assert tool.input_schema["type"] == "object"
            assert tool.input_schema.get("additionalProperties") is False
        assert tools["send"].input_schema["required"] == ["to", "message"]
        assert tools["send"].output_schema is not None
        assert tools["inbox"].output_schema is None  # messages go to the model as framed text
        me = await alice.whoami()
        assert me["name"] == "t-init" and me["address"] == "alice/t-init"
        assert me["meshes"][0]["member_name"] == "alice"
        assert me["meshes"][0]["member_pubkey"] == shared_pair.alice_key
        assert me["unread"] == 0 and me["channel_push"] is False
        assert isinstance(me["daemon_version"], str)


async def test_send_then_wait_for_message(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-send") as alice, \
            agent(shared_pair.bob, "--session", "b-send") as bob:
        sent = await alice.ok("send", {"to": "bob/b-send", "message": "hello bob"})
        assert sent.structured_content is not None
        assert sent.structured_content["to"] == "bob/b-send"
        assert sent.structured_content["mesh"] == shared_pair.alice.meshes[0]["slug"]
        assert sent.structured_content["status"] in ("queued", "inflight", "done")
        got = await bob.ok("wait_for_message", {"timeout_s": 20})
        body = text(got)
        assert "hello bob" in body and "from alice/a-send" in body
        assert f"<<<begin peer-message {BOUNDARY}" not in body  # each process its own token
        assert re.search(r"<<<begin peer-message cm[0-9a-f]{16}>>>\nhello bob\n"
                         r"<<<end peer-message cm[0-9a-f]{16}>>>", body)
        assert unread(shared_pair.bob, "b-send") == []
        quiet = await bob.ok("wait_for_message", {"timeout_s": 1})
        assert text(quiet) == "No message within 1 s."


async def test_wait_blocks_until_a_message_arrives(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-wait") as alice, \
            agent(shared_pair.bob, "--session", "b-wait") as bob:
        results: list[types.CallToolResult] = []
        started = time.monotonic()

        async def wait() -> None:
            results.append(await bob.ok("wait_for_message",
                                        {"timeout_s": 60, "from": "alice"}, timeout=90))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(1.5)
            assert results == []
            await alice.ok("send", {"to": "bob/b-wait", "message": "are you there?"})
        assert time.monotonic() - started >= 1.5
        assert "are you there?" in text(results[0])
        assert unread(shared_pair.bob, "b-wait") == []


async def test_inbox_marks_what_it_returns_seen(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-inbox") as alice, \
            agent(shared_pair.bob, "--session", "b-inbox") as bob:
        for n in (1, 2, 3):
            await alice.ok("send", {"to": "bob/b-inbox", "message": f"note {n}"})
        await until(lambda: len(unread(shared_pair.bob, "b-inbox")) == 3)
        first = await bob.ok("inbox", {"limit": 2})
        body = text(first)
        assert body.index("note 1") < body.index("note 2") and "note 3" not in body
        assert "1 more message is waiting" in body
        assert [i["body"] for i in unread(shared_pair.bob, "b-inbox")] == ["note 3"]
        second = await bob.ok("inbox")
        assert "note 3" in text(second) and "note 1" not in text(second)
        assert text(await bob.ok("inbox")) == "No unread messages."
        assert unread(shared_pair.bob, "b-inbox") == []
        everything = text(await bob.ok("inbox", {"unread_only": False, "from": "alice"}))
        assert everything.index("note 1") < everything.index("note 3")
        assert text(await bob.ok("inbox", {"unread_only": False, "from": "carol"})) == (
            "No messages.")


async def test_a_retried_send_call_lands_once(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-retry") as alice, \
            agent(shared_pair.bob, "--session", "b-retry"):
        await alice.session.list_tools()
        params = {"name": "send", "arguments": {"to": "bob/b-retry", "message": "only once"}}
        # The same JSON-RPC request twice (same id, same arguments), as a client that
        # lost the first answer would resend it, through the SDK's own dispatcher.
        first = await alice.dispatcher.send_raw_request("tools/call", params,
                                                        {"request_id": "retry-7"})
        again = await alice.dispatcher.send_raw_request("tools/call", params,
                                                        {"request_id": "retry-7"})
        cmid = first["structuredContent"]["client_message_id"]
        assert again["structuredContent"]["client_message_id"] == cmid
        assert not first["isError"] and not again["isError"]
        # A new call with the same text is a new message.
        other = await alice.dispatcher.send_raw_request("tools/call", params,
                                                        {"request_id": "retry-8"})
        assert other["structuredContent"]["client_message_id"] != cmid
        rows = [r for r in shared_pair.alice.outbox() if r["client_message_id"] == cmid]
        assert len(rows) == 1
        await until(lambda: len(session_items(shared_pair.bob, "b-retry")) == 2)
        await anyio.sleep(1.0)  # a second copy would have arrived by now
        bodies = [i["body"] for i in session_items(shared_pair.bob, "b-retry")]
        assert bodies == ["only once", "only once"]
        assert [i["client_message_id"] for i in session_items(shared_pair.bob, "b-retry")].count(
            cmid) == 1


async def test_reply_comes_back_to_the_asking_session(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-reply") as alice, \
            agent(shared_pair.bob, "--session", "b-reply") as bob:
        await alice.ok("send", {"to": "bob/b-reply", "message": "ping?"})
        asked = text(await bob.ok("wait_for_message", {"timeout_s": 20}))
        message_id = re.search(r"· id (\S+)", asked)
        assert message_id is not None
        original = session_items(shared_pair.bob, "b-reply")[0]
        assert original["id"] == message_id.group(1)
        answered = await bob.ok("reply", {"message_id": original["id"], "message": "pong"})
        assert answered.structured_content is not None
        assert answered.structured_content["to"] == "alice/a-reply"
        back = text(await alice.ok("wait_for_message", {"timeout_s": 20}))
        assert "pong" in back and "from bob/b-reply" in back
        assert f"in reply to {original['broker_message_id']}" in back
        item = session_items(shared_pair.alice, "a-reply")[-1]
        assert (item["session"], item["reply_to"]) == ("a-reply", original["broker_message_id"])


async def test_channel_push_when_the_client_declares_it(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-push") as alice, \
            agent(shared_pair.bob, "--session", "b-push", declare_channel=True) as bob:
        assert (await bob.whoami())["channel_push"] is True
        sent = await alice.ok("send", {"to": "bob/b-push", "message": "pushed to you"})
        assert sent.structured_content is not None
        await until(lambda: bob.pushed)
        push = bob.pushed[0]
        assert "pushed to you" in push.content and "from alice/a-push" in push.content
        assert "<<<end peer-message cm" in push.content
        meta = push.meta
        assert {"from_name", "from_pubkey", "session", "mesh", "priority", "message_id",
                "reply_to"} <= set(meta)
        assert all(IDENTIFIER.fullmatch(k) and isinstance(v, str) for k, v in meta.items())
        assert (meta["from_name"], meta["from_pubkey"]) == ("alice", shared_pair.alice_key)
        assert (meta["session"], meta["reply_to"], meta["priority"]) == ("b-push", "", "next")
        await until(lambda: unread(shared_pair.bob, "b-push") == [])
        # alice sees the surfaced receipt, with the path the message took.
        cmid = sent.structured_content["client_message_id"]

        async def surfaced() -> dict[str, Any]:
            status = await alice.ok("message_status", {"client_message_id": cmid})
            assert status.structured_content is not None
            return status.structured_content

        deadline = time.monotonic() + 20
        while (status := await surfaced())["state"] != "surfaced":
            assert time.monotonic() < deadline, status
            await anyio.sleep(0.2)
        assert (status["surfaced_path"], status["surfaced_session"]) == ("mcp_push", "b-push")
        # A waiting wait_for_message gets the message instead of a push.
        results: list[types.CallToolResult] = []

        async def wait() -> None:
            results.append(await bob.ok("wait_for_message", {"timeout_s": 30}, timeout=60))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(1.0)
            await alice.ok("send", {"to": "bob/b-push", "message": "for the waiter"})
        assert "for the waiter" in text(results[0])
        await anyio.sleep(0.5)
        assert len(bob.pushed) == 1


async def test_no_push_without_the_capability_and_with_channel_flag(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-nopush") as alice, \
            agent(shared_pair.bob, "--session", "b-nopush") as bob:
        await alice.ok("send", {"to": "bob/b-nopush", "message": "wait for inbox"})
        await until(lambda: unread(shared_pair.bob, "b-nopush"))
        await anyio.sleep(1.5)
        assert bob.pushed == []
        assert len(unread(shared_pair.bob, "b-nopush")) == 1  # nobody marked it seen
        assert "wait for inbox" in text(await bob.ok("inbox"))
    async with agent(shared_pair.alice, "--session", "a-flag") as alice, \
            agent(shared_pair.bob, "--session", "b-flag", "--channel") as bob:
        await alice.ok("send", {"to": "bob/b-flag", "message": "forced push"})
        await until(lambda: bob.pushed)
        assert "forced push" in bob.pushed[0].content


async def test_tool_errors_are_results_the_model_can_act_on(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-err") as alice:
        unknown = await alice.call("send", {"to": "bb", "message": "hi"})
        assert unknown.is_error
        assert "no peer called 'bb'" in text(unknown) and "use peers() first" in text(unknown)
        assert "alice" in text(unknown) and "bob" in text(unknown)
        cases = [
            ("send", {"to": "bob"}, "'message' is required"),
            ("send", {"to": "bob", "message": "x", "priority": "urgent"}, "now, next, low"),
            ("send", {"to": "bob", "message": "x", "cc": "carol"}, "unknown argument 'cc'"),
            ("send", {"to": "bob", "message": ""}, "must not be empty"),
            ("wait_for_message", {"timeout_s": 601}, "outside 0-600"),
            ("inbox", {"limit": "ten"}, "must be integer"),
            ("inbox", {"unread_only": 1}, "must be boolean"),
            ("set_status", {}, "give 'summary'"),
            ("reply", {"message_id": "nope", "message": "x"}, "no message with id 'nope'"),
            ("message_status", {"client_message_id": "never-sent"},
             "no message sent from here"),
            ("teleport", {}, "there is no tool 'teleport'"),
        ]
        for tool, arguments, expected in cases:
            result = await alice.call(tool, arguments)
            assert result.is_error, (tool, arguments)
            assert expected in text(result), (tool, text(result))


async def test_peers_and_set_status(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-peers") as alice, \
            agent(shared_pair.bob, "--session", "b-peers") as bob:
        status = await bob.ok("set_status", {"summary": "reviewing #42", "status": "working"})
        assert status.structured_content is not None
        assert status.structured_content["session"] == "b-peers"

        async def bob_session() -> dict[str, Any] | None:
            listed = (await alice.ok("peers")).structured_content
            assert listed is not None
            bobs = [p for p in listed["peers"] if p["name"] == "bob"]
            sessions = [s for s in bobs[0]["sessions"] if s["name"] == "b-peers"] if bobs else []
            return sessions[0] if sessions and sessions[0]["summary"] else None

        deadline = time.monotonic() + 20
        while (seen := await bob_session()) is None:
            assert time.monotonic() < deadline
            await anyio.sleep(0.2)
        assert (seen["address"], seen["summary"], seen["status"]) == (
            "bob/b-peers", "reviewing #42", "working")
        listed = (await alice.ok("peers")).structured_content
        assert listed is not None
        assert [p["you"] for p in listed["peers"] if p["name"] == "alice"] == [True]


async def test_topic_and_group_tools(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-topic") as alice, \
            agent(shared_pair.bob, "--session", "b-topic") as bob:
        sub = (await bob.ok("topic_subscribe", {"topic": "#mcp-news"})).structured_content
        assert sub is not None and (sub["topic"], sub["subscribed"]) == ("mcp-news", True)
        listed = (await alice.ok("topic_list")).structured_content
        assert listed is not None
        assert {"topic": "mcp-news", "subscribers": 1, "subscribed": False} in listed["topics"]
        posted = await alice.ok("topic_post", {"topic": "mcp-news", "message": "first post"})
        assert posted.structured_content is not None
        assert posted.structured_content["to"] == "#mcp-news"
        got = await bob.ok("wait_for_message", {"timeout_s": 20})
        assert "first post" in text(got)
        history = text(await bob.ok("topic_history", {"topic": "mcp-news"}))
        assert re.search(r"<<<begin peer-message cm[0-9a-f]{16}>>>\nfirst post\n", history)
        refused = await alice.call("topic_history", {"topic": "mcp-news"})
        assert refused.is_error and "not_subscribed" in text(refused), text(refused)
        assert (await bob.ok("topic_unsubscribe", {"topic": "mcp-news"})).structured_content
        joined = (await bob.ok("group_join", {"group": "@mcp-ops", "role": "lead"}))
        assert joined.structured_content is not None
        assert joined.structured_content["role"] == "lead"
        groups = (await alice.ok("group_list")).structured_content
        assert groups is not None
        [ops] = [g for g in groups["groups"] if g["group"] == "mcp-ops"]
        assert [(m["display_name"], m["role"]) for m in ops["roster"]] == [("bob", "lead")]
        left = (await bob.ok("group_leave", {"group": "mcp-ops"})).structured_content
        assert left is not None and left["member"] is False
        bad = await bob.call("group_join", {"group": "ops", "role": "has space"})
        assert bad.is_error


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


FRAMED = r"<<<begin peer-message cm[0-9a-f]{16}>>>\n%s\n<<<end peer-message cm[0-9a-f]{16}>>>"


async def test_search_and_thread_tools(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-search") as alice, \
            agent(shared_pair.bob, "--session", "b-search") as bob:
        sent = [(await alice.ok("send", {"to": "bob/b-search", "message": m})).structured_content
                for m in ("is the quokka report ready?", "unrelated chatter")]
        cmids = {d["client_message_id"] for d in sent if d is not None}

        def ours_unread() -> int:  # (messages filed for every session count there too)
            return len([i for i in unread(shared_pair.bob, "b-search")
                        if i["client_message_id"] in cmids])

        await until(lambda: ours_unread() == 2)
        found = text(await bob.ok("search", {"query": "quokka"}))
        assert found.startswith("1 received message matches 'quokka', best match first.")
        assert re.search(FRAMED % re.escape("is the quokka report ready?"), found)
        assert "from alice/a-search" in found and "unrelated" not in found
        assert ours_unread() == 2  # a lookup marks nothing read
        assert text(await bob.ok("search", {"query": "platypus"})) == (
            "No received message matches 'platypus'.")
        mine = text(await alice.ok("search", {"query": "quokka", "sent": True}))
        assert mine.startswith("1 sent message matches")
        assert "from you (sent from here)" in mine and "· to you" not in mine
        assert re.search(FRAMED % re.escape("is the quokka report ready?"), mine)

        header = re.search(r"· id (\S+)", found)
        assert header is not None
        answered = await bob.ok("reply", {"message_id": header.group(1),
                                          "message": "yes, quokka report attached"})
        assert answered.structured_content is not None
        reply_cmid = answered.structured_content["client_message_id"]
        [received] = await until(lambda: [i for i in session_items(shared_pair.alice, "a-search")
                                          if i["client_message_id"] == reply_cmid])
        await until(lambda: [r for r in shared_pair.bob.outbox()
                             if r["client_message_id"] == reply_cmid and r["status"] == "done"])
        for who, message_id in ((alice, received["id"]), (bob, reply_cmid)):
            shown = text(await who.ok("thread", {"message_id": message_id}))
            assert shown.startswith("Thread ") and ": 2 messages, oldest first." in shown
            assert shown.index("is the quokka report ready?") < shown.index(
                "yes, quokka report attached")
            assert shown.count("from you (sent from here)") == 1
        both = text(await alice.ok("search", {"query": "quokka", "limit": 5}))
        assert "yes, quokka report attached" in both and "from bob/b-search" in both

        cases = [
            ("thread", {"message_id": "nope"}, "no message received or sent here has id 'nope'"),
            ("thread", {}, "'message_id' is required"),
            ("search", {"query": ""}, "must not be empty"),
            ("search", {"query": "x", "limit": 51}, "outside 1-50"),
            ("search", {"query": "x", "sent": "yes"}, "must be boolean"),
            ("search", {"query": '"unbalanced'}, "q:"),
            ("search", {"query": "x", "mesh": "elsewhere"}, "joined meshes"),
            ("send", {"to": "bob", "message": "x", "in_seconds": 0}, "outside 1-31536000"),
            ("send", {"to": "bob", "message": "x", "in_seconds": "soon"}, "must be integer"),
            ("send", {"to": "bob", "message": "x", "in_seconds": 1.5}, "must be integer"),
            ("send", {"to": "bob", "message": "x", "deliver_at": "2030-01-01T00:00:00Z"},
             "unknown argument 'deliver_at'"),
        ]
        for tool, arguments, expected in cases:
            result = await alice.call(tool, arguments)
            assert result.is_error, (tool, arguments)
            assert expected in text(result), (tool, text(result))


async def test_send_with_in_seconds_is_scheduled_and_lands_later(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-later") as alice, \
            agent(shared_pair.bob, "--session", "b-later"):
        before = time.time() * 1000
        sent = await alice.ok("send", {"to": "bob/b-later", "message": "in two seconds",
                                       "in_seconds": 2})
        after = time.time() * 1000
        data = sent.structured_content
        assert data is not None and data["status"] == "scheduled"
        assert f"scheduled for {data['deliver_at']}" in text(sent)
        assert before + 2000 - 1 <= _ms(data["deliver_at"]) <= after + 2000
        [row] = [r for r in shared_pair.alice.outbox()
                 if r["client_message_id"] == data["client_message_id"]]
        assert row["deliver_at"] == data["deliver_at"]

        def landed() -> list[dict[str, Any]]:  # (messages for every session are there too)
            return [i for i in session_items(shared_pair.bob, "b-later")
                    if i["client_message_id"] == data["client_message_id"]]

        if time.time() * 1000 < _ms(data["deliver_at"]) - 300:  # a slow machine may be late
            assert landed() == []
        [item] = await until(landed)
        assert item["body"] == "in two seconds"
        assert _ms(item["received_at"]) >= _ms(data["deliver_at"])


async def test_reply_with_in_seconds_is_scheduled_and_still_a_reply(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-later-reply") as alice, \
            agent(shared_pair.bob, "--session", "b-later-reply") as bob:
        asked = await alice.ok("send", {"to": "bob/b-later-reply", "message": "answer in a bit?"})
        assert asked.structured_content is not None
        cmid = asked.structured_content["client_message_id"]
        # (the session's inbox also holds what was filed for every session: look for ours)
        [original] = await until(lambda: [i for i in session_items(shared_pair.bob, "b-later-reply")
                                          if i["client_message_id"] == cmid])
        answered = await bob.ok("reply", {"message_id": original["id"], "message": "later",
                                          "in_seconds": 2})
        data = answered.structured_content
        assert data is not None and data["status"] == "scheduled"
        assert data["to"] == "alice/a-later-reply"
        assert f"scheduled for {data['deliver_at']}" in text(answered)
        [row] = [r for r in shared_pair.bob.outbox()
                 if r["client_message_id"] == data["client_message_id"]]
        assert (row["status"], row["deliver_at"]) == ("scheduled", data["deliver_at"])

        def landed() -> list[dict[str, Any]]:
            return [i for i in session_items(shared_pair.alice, "a-later-reply")
                    if i["client_message_id"] == data["client_message_id"]]

        [item] = await until(landed)
        assert (item["body"], item["reply_to"]) == ("later", original["broker_message_id"])
        assert _ms(item["received_at"]) >= _ms(data["deliver_at"])
        bad = await bob.call("reply", {"message_id": original["id"], "message": "x",
                                       "in_seconds": 0})
        assert bad.is_error and "outside 1-31536000" in text(bad)


async def test_session_names_and_end_of_life(shared_pair: Mesh2) -> None:
    holder = subprocess.Popen(["sleep", "120"])
    try:
        shared_pair.alice.uds().call("POST", "/v1/sessions",
                              {"name": "busy", "pid": holder.pid, "harness": "other"})
        async with agent(shared_pair.alice, "--session", "busy") as alice:
            me = await alice.whoami()
            assert me["name"] == "busy-2" and me["harness"] == "mcp"
            session_id = me["session_id"]
            live = shared_pair.alice.uds().call("GET", f"/v1/sessions/{session_id}")
            assert live["pid"] == os.getpid()  # the MCP client: our test process
        # stdin closed: the server ended its session.
        status = shared_pair.alice.uds().request("GET", f"/v1/sessions/{session_id}").status
        assert status == 404
    finally:
        holder.kill()
        holder.wait()
    project = short_tmpdir("cmp") / "My Project!"
    project.mkdir()
    async with agent(shared_pair.alice, cwd=project,
                     env=server_env(shared_pair.alice, CLAUDECODE="1")) as alice:
        me = await alice.whoami()
        assert (me["name"], me["harness"]) == ("My-Project-", "claude-code")
    async with agent(shared_pair.alice, "--default",
                     env=server_env(shared_pair.alice, CLAUDEMESH_SESSION="from-env")) as alice:
        me = await alice.whoami()
        assert (me["name"], me["default"]) == ("from-env", True)


def test_bad_session_name_fails_before_serving(shared_pair: Mesh2) -> None:
    result = subprocess.run([sys.executable, "-m", "claudemesh", "mcp", "--session", "-bad"],
                            env={**os.environ, **server_env(shared_pair.alice)}, input="",
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--session '-bad' is not a session name" in result.stderr


def test_names_all_taken_fails_with_a_clear_message(shared_pair: Mesh2) -> None:
    holder = subprocess.Popen(["sleep", "120"])
    try:
        for name in ["full", *(f"full-{n}" for n in range(2, 10))]:
            shared_pair.bob.uds().call("POST", "/v1/sessions", {"name": name, "pid": holder.pid})
        result = subprocess.run([sys.executable, "-m", "claudemesh", "mcp", "--session",
                                 "full"], env={**os.environ, **server_env(shared_pair.bob)},
                                input="", capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode != 0 and result.stdout == ""
        assert "full to full-9 are all held" in result.stderr
        assert "--session NAME" in result.stderr
    finally:
        holder.kill()
        holder.wait()


def sessions_named(daemon: DaemonHandle, name: str) -> list[dict[str, Any]]:
    listed = daemon.uds().call("GET", f"/v1/sessions?pid={os.getpid()}")["sessions"]
    return [s for s in listed if s["name"] == name]


def test_sigterm_ends_the_session(shared_pair: Mesh2) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "claudemesh", "mcp", "--session", "sig"],
                            env={**os.environ, **server_env(shared_pair.alice)},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not sessions_named(shared_pair.alice, "sig"):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(0.5)  # past registration, serving
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None and proc.stdout.read() == b""
        assert sessions_named(shared_pair.alice, "sig") == []
    finally:
        proc.kill()
        proc.wait()


async def test_a_session_lost_by_the_daemon_is_registered_again(shared_pair: Mesh2) -> None:
    async with agent(shared_pair.alice, "--session", "a-lost") as alice, \
            agent(shared_pair.bob, "--session", "b-lost") as bob:
        first = (await alice.whoami())["session_id"]
        shared_pair.alice.uds().call("DELETE", f"/v1/sessions/{first}")
        await alice.ok("send", {"to": "bob/b-lost", "message": "still here"})
        me = await alice.whoami()
        assert me["name"] == "a-lost" and me["session_id"] != first
        got = text(await bob.ok("wait_for_message", {"timeout_s": 20}))
        assert "still here" in got and "from alice/a-lost" in got


async def test_push_and_wait_go_on_after_the_daemon_restarts() -> None:
    m = mesh2()
    try:
        async with agent(m.alice, "--session", "a-rs") as alice, \
                agent(m.bob, "--session", "b-rs", declare_channel=True) as bob:
            await alice.ok("send", {"to": "bob/b-rs", "message": "before"})
            await until(lambda: bob.pushed)
            await anyio.to_thread.run_sync(m.bob.stop)
            await anyio.to_thread.run_sync(m.bob.start)
            await alice.ok("send", {"to": "bob/b-rs", "message": "after the restart"})
            await until(lambda: len(bob.pushed) == 2, timeout=40)
            assert "after the restart" in bob.pushed[1].content
            assert (await bob.whoami())["unread"] == 0
    finally:
        m.cleanup()
