from __future__ import annotations

import pytest

from claudemesh.protocol.invite import Invite, InviteError, decode_invite, encode_invite

INVITE = Invite("ws://127.0.0.1:7900/ws", "m1", "demo", "i1", 123, "s3cret", "ab" * 64)


def test_round_trip_and_secret_stays_out_of_repr() -> None:
    text = encode_invite(INVITE)
    assert text.startswith("cm1_") and "=" not in text
    assert decode_invite(f"  {text}\n") == INVITE
    assert "s3cret" not in repr(INVITE)


@pytest.mark.parametrize(("text", "reason"), [
    ("hello", "starts with"),
    ("cm1_!!!", "damaged"),
    ("cm1_e30", "unsupported invite version"),
    (encode_invite(Invite("http://x", "m", "n", "i", 1, "s", "g")), "ws://"),
])
def test_bad_invites_say_why(text: str, reason: str) -> None:
    with pytest.raises(InviteError) as info:
        decode_invite(text)
    assert reason in str(info.value)


def test_failover_urls_ride_along_and_are_covered_by_the_signature_string() -> None:
    multi = Invite("ws://a:1/ws", "m1", "demo", "i1", 123, "s", "sig",
                   broker_urls=("ws://b:2/ws", "ws://a:1/ws"))
    decoded = decode_invite(encode_invite(multi))
    assert decoded.urls == ("ws://a:1/ws", "ws://b:2/ws")
    assert decoded.signed_urls == "ws://a:1/ws,ws://b:2/ws"
    assert INVITE.signed_urls == INVITE.broker_url  # one URL: the same statement as before
