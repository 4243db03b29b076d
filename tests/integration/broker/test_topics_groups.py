"""topic_history, list_groups, join_group roles and anycast (``queue``) through a real
broker, on both stores (issue 15)."""

from __future__ import annotations

from collections import Counter

from brokerkit import BrokerProcess, Mesh, clients


async def test_topic_history_pages_push_shaped_items_to_subscribers(
        broker: BrokerProcess, mesh: Mesh) -> None:
    alice, bob = mesh.join("alice"), mesh.join("bob")
    async with clients((broker.url, alice), (broker.url, bob)) as (a, b):
        await a.request({"type": "subscribe", "topic": "news"})
        sent = [await a.post("#news", f"n{i}", f"h-{i}", meta={"i": i}) for i in range(3)]
        refused = await b.request({"type": "topic_history", "topic": "news"})
        assert (refused["type"], refused["code"]) == ("error", "not_subscribed")
        await b.request({"type": "subscribe", "topic": "news"})
        page = await b.request({"type": "topic_history", "topic": "news", "limit": 2})
        assert page["type"] == "result" and page["topic"] == "news"
        assert [i["client_message_id"] for i in page["items"]] == ["h-2", "h-1"]
        assert page["next_before"] == sent[1]["history_id"]
        first = page["items"][0]
        assert "delivery_id" not in first and "type" not in first
        assert (first["body"], first["meta"], first["sender_name"], first["history_id"]) == (
            {"kind": "plain", "text": "n2"}, {"i": 2}, "alice", sent[2]["history_id"])
        rest = await b.request({"type": "topic_history", "topic": "news", "limit": 2,
                                "before": page["next_before"]})
        assert ([i["client_message_id"] for i in rest["items"]], rest["next_before"]) == (
            ["h-0"], None)
        bad = await b.request({"type": "topic_history", "topic": "news", "limit": 0})
        assert (bad["type"], bad["code"]) == ("error", "invalid_frame")


async def test_roles_list_groups_and_anycast_round_robin(broker: BrokerProcess,
                                                        mesh: Mesh) -> None:
    names = ("alice", "bob", "carol", "dave")
    idents = [mesh.join(n) for n in names]
    async with clients(*((broker.url, i) for i in idents)) as opened:
        a, *members = opened
        for client, role in zip(members, ("lead", None, "qa"), strict=True):
            joined = await client.request({"type": "join_group", "group": "ops"}
                                          | ({"role": role} if role else {}))
            assert (joined["changed"], joined["role"]) == (True, role)
        kept = await members[0].request({"type": "join_group", "group": "ops"})
        assert kept["changed"] is False  # no role given: "lead" stays
        [ops] = (await a.request({"type": "list_groups"}))["groups"]
        assert (ops["group"], ops["members"], ops["member"], ops["role"]) == (
            "ops", 3, False, None)
        assert [(m["display_name"], m["role"], m["online"]) for m in ops["roster"]] == [
            ("bob", "lead", True), ("carol", None, True), ("dave", "qa", True)]
        got: Counter[str] = Counter()
        for n in range(6):
            frame = a.envelope("@ops", f"any {n}", f"any-{n}")
            answer = await a.request({**frame, "destination_kind": "queue"})
            assert answer["code"] == 201, answer
        for client, name in zip(members, names[1:], strict=True):
            for _ in range(2):
                push = await client.next("push")
                assert push["destination_kind"] == "queue"
                got[name] += 1
            await client.nothing("push", 0.3)
        assert got == {"bob": 2, "carol": 2, "dave": 2}
        # The same id cannot be both anycast and fan-out (the fingerprint covers the kind).
        again = await a.request(a.envelope("@ops", "any 0", "any-0"))
        assert again["code"] == 409
        alone = await a.request({**a.envelope("@solo", "x", "solo-1"),
                                 "destination_kind": "queue"})
        assert (alone["code"], alone["error"]) == (404, "destination_not_found")
        not_group = await a.request({**a.envelope("#news", "x", "q-1"),
                                     "destination_kind": "queue"})
        assert (not_group["code"], not_group["error"]) == (400, "invalid_envelope")
