"""Phase A of ``POST /v1/send`` (routes_send): id choice, name resolution, and the outbox
row it prepares, on a real DaemonContext and a real peer directory; nothing is written.

The whole route, with its lookup table, is tests/integration/test_send_lookup_table.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from claudemesh.crypto import BoxedBody, MemberKey, box_decrypt
from claudemesh.daemon.directory import Peer, PeerDirectory
from claudemesh.daemon.ipc.context import DaemonContext
from claudemesh.daemon.ipc.requests import SendRequest
from claudemesh.daemon.ipc.routes_send import (
    choose_client_message_id,
    prepare_send,
    resolve_destination,
)
from claudemesh.errors import (
    InvalidRequest,
    MeshRequired,
    NoMeshJoined,
    PayloadTooLarge,
    UnknownDestination,
    UnknownMesh,
)
from claudemesh.protocol.destination import Destination, DestinationKind, PeerName
from claudemesh.protocol.envelope import FrozenSend
from claudemesh.protocol.features import Negotiated, build_feature_map, validate_features
from claudemesh.protocol.ids import new_ulid
from claudemesh.protocol.sealed import Plain, SealedMessage, open_plaintext

BOB = MemberKey.generate()
CAROL = MemberKey.generate()

Factory = Callable[..., DaemonContext]


# choose_client_message_id (R-CMID-1 / A-15)


def test_the_header_wins_and_may_repeat_the_body_field() -> None:
    assert choose_client_message_id("k-1", None) == "k-1"
    assert choose_client_message_id("k-1", "k-1") == "k-1"
    assert choose_client_message_id(None, "k-2") == "k-2"
    assert choose_client_message_id(None, None) is None


def test_a_header_and_body_that_differ_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="differ"):
        choose_client_message_id("k-1", "k-2")


@pytest.mark.parametrize("header", ["", "has space", "x" * 129, "é"])
def test_a_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(InvalidRequest, match="Idempotency-Key must be"):
        choose_client_message_id(header, None)


# resolve_destination (A-14f)


def directory(*peers: tuple[str, str, str]) -> PeerDirectory:
    d = PeerDirectory()
    for mesh, pubkey, name in peers:
        d.upsert(mesh, Peer(pubkey, name))
    return d


def test_a_parsed_destination_is_used_as_it_is() -> None:
    dest = Destination(DestinationKind.TOPIC, "general")
    assert resolve_destination(dest, "demo", PeerDirectory()) is dest


def test_a_name_one_peer_holds_becomes_a_dm_to_its_pubkey() -> None:
    peers = directory(("demo", BOB.pubkey, "bob"), ("demo", CAROL.pubkey, "carol"))
    assert resolve_destination(PeerName("bob"), "demo", peers) == Destination(
        DestinationKind.DM, BOB.pubkey)


def test_a_name_nobody_holds_in_that_mesh_is_unknown() -> None:
    peers = directory(("work", BOB.pubkey, "bob"))
    with pytest.raises(UnknownDestination) as caught:
        resolve_destination(PeerName("bob"), "demo", peers)
    assert caught.value.fields == {"to": "bob"}
    assert "no known peer in mesh 'demo' is called 'bob'" in caught.value.detail
    assert caught.value.http_status == 422


def test_a_name_two_peers_hold_lists_both_and_picks_neither() -> None:
    peers = directory(("demo", BOB.pubkey, "sam"), ("demo", CAROL.pubkey, "sam"))
    with pytest.raises(UnknownDestination) as caught:
        resolve_destination(PeerName("sam"), "demo", peers)
    assert caught.value.fields == {"to": "sam",
                                   "candidates": sorted([BOB.pubkey, CAROL.pubkey])}
    assert caught.value.detail.startswith("2 peers in mesh 'demo' are called 'sam'")


# prepare_send: Phase A on a real context


def request(to: str, message: str = "hello", **fields: Any) -> SendRequest:
    return SendRequest.model_validate({"to": to, "message": message, **fields})


def bob_opens(ctx: DaemonContext, payload: bytes) -> bytes:
    body = FrozenSend.from_bytes(payload).body
    return box_decrypt(BoxedBody(body["nonce"], body["ciphertext"]),
                       recipient_secret_hex=BOB.secret_key,
                       sender_pubkey_hex=ctx.config.meshes[0].pubkey)


def test_a_topic_send_becomes_a_row_with_its_frozen_envelope(make_context: Factory) -> None:
    ctx = make_context("demo")
    prepared = prepare_send(ctx, request("#news", "hi", priority="now", meta={"k": 1}),
                            "k-1")
    row = prepared.send
    assert (row.client_message_id, row.mesh, row.destination_kind, row.destination_ref,
            row.priority, row.purpose) == ("k-1", "demo", "topic", "news", "now", "message")
    frozen = FrozenSend.from_bytes(row.payload)
    assert (frozen.mesh, frozen.body, frozen.meta) == (
        "demo", {"kind": "plain", "text": "hi"}, {"k": 1})
    assert row.fingerprint == prepared.request_fingerprint


def test_without_an_id_the_daemon_mints_a_ulid_on_its_clock(make_context: Factory) -> None:
    ctx = make_context("demo")
    ctx.clock = lambda: 1_764_165_600_000
    one = prepare_send(ctx, request("#news"), None).send
    two = prepare_send(ctx, request("#news"), None).send
    assert one.client_message_id[:10] == new_ulid(1_764_165_600_000)[:10]
    assert one.client_message_id != two.client_message_id
    assert one.fingerprint == two.fingerprint  # the id is not part of the fingerprint


def test_the_body_id_is_used_when_no_header_is_given(make_context: Factory) -> None:
    ctx = make_context("demo")
    assert prepare_send(ctx, request("#news", client_message_id="b-1"), None
                        ).send.client_message_id == "b-1"
    with pytest.raises(InvalidRequest):
        prepare_send(ctx, request("#news", client_message_id="b-1"), "h-1")


def test_the_mesh_must_be_named_when_several_are_joined(make_context: Factory) -> None:
    ctx = make_context("demo", "work")
    with pytest.raises(MeshRequired):
        prepare_send(ctx, request("#news"), "k-1")
    assert prepare_send(ctx, request("#news", mesh="work"), "k-1").send.mesh == "work"
    with pytest.raises(UnknownMesh):
        prepare_send(ctx, request("#news", mesh="elsewhere"), "k-1")


def test_a_daemon_that_joined_nothing_refuses(make_context: Factory) -> None:
    with pytest.raises(NoMeshJoined):
        prepare_send(make_context(), request("#news"), "k-1")


@pytest.mark.parametrize(("to", "detail"), [
    ("#", "field 'to': #name must be"),
    ("#news/build", "field 'to': only a member"),
    ("bob/ bad", "field 'to': the session part"),
])
def test_a_to_that_does_not_parse_is_a_400_naming_the_field(make_context: Factory, to: str,
                                                           detail: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        prepare_send(make_context("demo"), request(to), "k-1")
    assert caught.value.detail.startswith(detail)


def test_a_name_resolves_through_the_contexts_directory(make_context: Factory) -> None:
    ctx = make_context("demo")
    with pytest.raises(UnknownDestination):
        prepare_send(ctx, request("bob"), "k-1")
    ctx.directory.upsert("demo", Peer(BOB.pubkey, "bob"))
    row = prepare_send(ctx, request("bob", "psst"), "k-1").send
    assert (row.destination_kind, row.destination_ref) == ("dm", BOB.pubkey)
    assert open_plaintext(bob_opens(ctx, row.payload)) == Plain("psst")


def test_a_session_on_either_end_is_sealed_into_the_dm(make_context: Factory) -> None:
    ctx = make_context("demo")
    ctx.directory.upsert("demo", Peer(BOB.pubkey, "bob"))
    row = prepare_send(ctx, request("bob/build", "look"), "k-1", from_session="review").send
    assert open_plaintext(bob_opens(ctx, row.payload)) == SealedMessage("look", "build",
                                                                        "review")
    bare = prepare_send(ctx, request(BOB.pubkey, "look"), "k-1").send
    assert row.fingerprint != bare.fingerprint  # the sessions are part of what was sent


def test_the_negotiated_inline_limit_applies_once_the_link_has_one(
        make_context: Factory) -> None:
    ctx = make_context("demo")
    assert prepare_send(ctx, request("#news", "x" * 5000), "k-1")  # no link yet: no limit
    negotiated = validate_features(build_feature_map(inline_bytes=1024, blob_bytes=1024))
    assert isinstance(negotiated, Negotiated) and negotiated.inline_bytes == 1024
    ctx.runtime("demo").link.negotiated = negotiated  # as the link does after hello_ack
    assert prepare_send(ctx, request("#news", "x" * 1024), "k-1")
    with pytest.raises(PayloadTooLarge) as caught:
        prepare_send(ctx, request("#news", "x" * 1025), "k-1")
    assert caught.value.fields == {"limit": 1024}
