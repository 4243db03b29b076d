"""agent.tools: schemas, argument checks, and the client_message_id of a send tool call."""

from __future__ import annotations

import re
from typing import Any

import pytest

from claudemesh.agent.mcp_server import channel_meta, mcp_tools
from claudemesh.agent.tools import (
    TOOLS,
    TOOLS_BY_NAME,
    ToolInputError,
    check_arguments,
    send_message_id,
)
from claudemesh.protocol.ids import is_valid_client_message_id
from claudemesh.sdk import InboxItem


def test_every_tool_has_a_closed_object_schema_and_a_description() -> None:
    assert [t.name for t in TOOLS] == ["whoami", "send", "reply", "inbox",
                                       "wait_for_message", "peers", "set_status",
                                       "message_status", "topic_subscribe",
                                       "topic_unsubscribe", "topic_list", "topic_post",
                                       "topic_history", "group_join", "group_leave",
                                       "group_list", "search", "thread"]
    for spec in TOOLS:
        assert spec.input_schema["type"] == "object"
        assert spec.input_schema["additionalProperties"] is False
        assert len(spec.description) > 80
        for name in spec.input_schema.get("required", []):
            assert name in spec.input_schema["properties"]
    # Tools whose result is peers' text carry no structured copy of it.
    assert TOOLS_BY_NAME["inbox"].output_schema is None
    assert TOOLS_BY_NAME["wait_for_message"].output_schema is None
    assert TOOLS_BY_NAME["topic_history"].output_schema is None
    assert TOOLS_BY_NAME["search"].output_schema is None
    assert TOOLS_BY_NAME["thread"].output_schema is None


def test_mcp_tools_carry_schemas_and_hints() -> None:
    tools = {t.name: t for t in mcp_tools()}
    assert tools["send"].input_schema == TOOLS_BY_NAME["send"].input_schema
    assert tools["whoami"].annotations is not None
    assert tools["whoami"].annotations.read_only_hint is True
    assert tools["send"].annotations is not None
    assert tools["send"].annotations.read_only_hint is False


def test_defaults_are_filled_in() -> None:
    assert check_arguments(TOOLS_BY_NAME["inbox"], None) == {"unread_only": True, "limit": 20}
    assert check_arguments(TOOLS_BY_NAME["send"], {"to": "bob", "message": "hi"}) == {
        "to": "bob", "message": "hi", "priority": "next"}
    assert check_arguments(TOOLS_BY_NAME["wait_for_message"], {"timeout_s": 2.5}) == {
        "timeout_s": 2.5}
    assert check_arguments(TOOLS_BY_NAME["search"], {"query": "deploy"}) == {
        "query": "deploy", "sent": False, "limit": 10}
    assert check_arguments(TOOLS_BY_NAME["send"], {"to": "b", "message": "m",
                                                   "in_seconds": 5})["in_seconds"] == 5
    # null is "not given", as a model sometimes sends optional arguments
    assert check_arguments(TOOLS_BY_NAME["inbox"], {"from": None})["unread_only"] is True


@pytest.mark.parametrize(("tool", "arguments", "message"), [
    ("send", {"message": "hi"}, "send: 'to' is required (a peer's display name"),
    ("send", {"to": "bob", "message": "hi", "cc": "x"},
     "send: unknown argument 'cc' (arguments: to, message, priority, reply_to, mesh,"
     " in_seconds)"),
    ("send", {"to": "bob", "message": "hi", "in_seconds": 0},
     "'in_seconds' is 0, outside 1-31536000 (whole seconds from now, 1 to 31536000)"),
    ("send", {"to": "bob", "message": "hi", "in_seconds": 60.0},
     "'in_seconds' must be integer, not float"),
    ("search", {}, "search: 'query' is required (words, up to 512 characters)"),
    ("search", {"query": "q" * 513}, "'query' is longer than 512 characters"),
    ("search", {"query": "x", "limit": 0}, "outside 1-50 (an integer from 1 to 50)"),
    ("search", {"query": "x", "sent": 1}, "'sent' must be boolean, not int"),
    ("thread", {"message_id": ""}, "'message_id' must not be empty"),
    ("thread", {"message_id": "m", "limit": 3}, "thread: unknown argument 'limit'"),
    ("send", {"to": 7, "message": "hi"}, "send: 'to' must be string, not int"),
    ("send", {"to": "bob", "message": "hi", "priority": "asap"},
     "'priority' must be one of now, next, low, not 'asap'"),
    ("send", {"to": "", "message": "hi"}, "'to' must not be empty"),
    ("send", {"to": "b" * 201, "message": "hi"}, "'to' is longer than 200 characters"),
    ("inbox", {"limit": 0}, "'limit' is 0, outside 1-100 (an integer from 1 to 100)"),
    ("inbox", {"limit": True}, "'limit' must be integer, not bool"),
    ("inbox", {"limit": 2.0}, "'limit' must be integer, not float"),
    ("inbox", {"unread_only": "yes"}, "'unread_only' must be boolean, not str"),
    ("wait_for_message", {"timeout_s": -1}, "outside 0-600 (seconds, from 0 to 600)"),
    ("whoami", {"x": 1}, "whoami: unknown argument 'x' (arguments: none)"),
    ("set_status", {"status": "busy"}, "must be one of idle, working, dnd"),
])
def test_bad_arguments_say_what_to_do(tool: str, arguments: dict[str, Any],
                                      message: str) -> None:
    with pytest.raises(ToolInputError) as raised:
        check_arguments(TOOLS_BY_NAME[tool], arguments)
    assert message in str(raised.value)


def mid(**changes: Any) -> str:
    inputs: dict[str, Any] = {"session_id": "01SESSION", "connection_id": "c0ffee",
                              "request_id": 7, "tool": "send",
                              "arguments": {"to": "bob", "message": "hi", "priority": "next"}}
    return send_message_id(**{**inputs, **changes})


def test_send_message_id_is_a_pure_function_of_the_call() -> None:
    assert mid() == mid()
    assert mid(arguments={"priority": "next", "message": "hi", "to": "bob"}) == mid()
    assert re.fullmatch(r"mcp-[0-9a-f]{48}", mid())
    assert is_valid_client_message_id(mid())


@pytest.mark.parametrize("change", [
    {"request_id": 8}, {"request_id": "7"}, {"connection_id": "another"},
    {"session_id": "01OTHER"}, {"tool": "reply"},
    {"arguments": {"to": "bob", "message": "hi!", "priority": "next"}},
])
def test_send_message_id_changes_with_any_input(change: dict[str, Any]) -> None:
    assert mid(**change) != mid()


def test_channel_meta_keys_are_identifiers_and_values_strings() -> None:
    item = InboxItem.from_wire({
        "seq": 3, "id": "01JX", "client_message_id": "c", "broker_message_id": "b",
        "mesh": "local", "sender_pubkey": "a" * 64, "sender_name": "alice",
        "destination": "b" * 64, "topic": None, "recipient_pubkey": "b" * 64, "body": "hi",
        "undecryptable": None, "meta": None, "priority": "now", "reply_to": None,
        "history_id": "9", "created_at": None, "received_at": "2026-12-02T15:00:00.000Z",
        "session": "build", "from_session": None, "reply_to_address": "alice"})
    meta = channel_meta(item)
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in meta)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta == {"from_name": "alice", "from_pubkey": "a" * 64, "from_session": "",
                    "session": "build", "mesh": "local", "priority": "now",
                    "message_id": "01JX", "reply_to": "", "reply_to_address": "alice",
                    "received_at": "2026-12-02T15:00:00.000Z"}
