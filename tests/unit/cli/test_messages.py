"""The tables of ``claudemesh inbox`` and ``claudemesh peers`` (pure formatters)."""

from __future__ import annotations

from typing import Any

from claudemesh.cli.messages import format_inbox, format_peers
from claudemesh.cli.output import format_table
from claudemesh.sdk import InboxItem, Peer

ME, BOB = "cd" * 32, "ab" * 32
INBOX_HEADERS = ["SEQ", "RECEIVED", "MESH", "FROM", "TO", "MESSAGE"]
PEER_HEADERS = ["MESH", "NAME", "PRESENCE", "STATUS", "SUMMARY", "PUBKEY"]


def item(seq: int, **fields: Any) -> InboxItem:
    doc: dict[str, Any] = {
        "seq": seq, "id": f"i-{seq}", "client_message_id": f"c-{seq}",
        "broker_message_id": f"b-{seq}", "mesh": "demo", "sender_pubkey": BOB,
        "sender_name": "bob", "destination": "#news", "topic": "news",
        "recipient_pubkey": None, "body": "hi", "undecryptable": None, "meta": None,
        "priority": "next", "reply_to": None, "history_id": None,
        "created_at": "2026-11-26T15:00:00.000Z",
        "received_at": f"2026-11-26T15:00:0{seq}.000Z"}
    return InboxItem.from_wire({**doc, **fields})


def peer(name: str, **fields: Any) -> Peer:
    doc: dict[str, Any] = {"mesh": "demo", "pubkey": BOB, "member_id": "u", "display_name": name,
                           "online": True, "status": "idle", "summary": None}
    return Peer.from_wire({**doc, **fields})


def test_an_empty_inbox_says_so() -> None:
    assert format_inbox([], None) == "inbox is empty"


def test_inbox_rows_show_the_topic_or_dm_and_the_body_on_one_line() -> None:
    items = [item(1, body="hello\n\n   world\tagain"),
             item(2, destination=ME, topic=None, recipient_pubkey=ME, body="psst")]
    assert format_inbox(items, None) == format_table(INBOX_HEADERS, [
        (1, "2026-11-26T15:00:01.000Z", "demo", "bob", "#news", "hello world again"),
        (2, "2026-11-26T15:00:02.000Z", "demo", "bob", "(dm)", "psst")])


def test_an_undecryptable_dm_shows_why_instead_of_a_body() -> None:
    text = format_inbox([item(3, topic=None, destination=ME, body=None,
                              undecryptable="box_open_failed")], None)
    assert text.splitlines()[1].endswith("(dm)  [box_open_failed]")


def test_a_long_body_is_cut_to_sixty_characters_with_an_ellipsis() -> None:
    row = format_inbox([item(4, body="x" * 61)], None).splitlines()[1]
    assert row.endswith("  " + "x" * 59 + "…")
    assert format_inbox([item(4, body="y" * 60)], None).splitlines()[1].endswith(
        "  " + "y" * 60)


def test_a_further_page_is_announced_with_its_cursor() -> None:
    text = format_inbox([item(1)], "1")
    assert text.splitlines()[-1] == "more: --cursor 1"
    assert "more:" not in format_inbox([item(1)], None)


def test_peers_show_presence_status_a_short_summary_and_the_key_prefix() -> None:
    listed = [peer("bob", summary="fixing the build " * 4),
              peer("carol", online=False, status=None, pubkey=ME, mesh="work")]
    assert format_peers(listed, []) == format_table(PEER_HEADERS, [
        ("demo", "bob", "online", "idle", "fixing the build fixing the build fixin…",
         BOB[:16] + "…"),
        ("work", "carol", "offline", None, "", ME[:16] + "…")])


def test_meshes_whose_link_is_down_are_named_under_the_table() -> None:
    text = format_peers([], ["work", "home"])
    assert text.splitlines() == [" ".join(PEER_HEADERS).replace(" ", "  "),
                                 "not connected (peers unknown): work, home"]
