from __future__ import annotations

import pytest

from claudemesh.crypto import (
    BoxedBody,
    CryptoFailure,
    MemberKey,
    box_decrypt,
    box_encrypt,
    hello_statement,
    join_statement,
    verify,
)


def test_sign_and_verify_with_domain_separation() -> None:
    key = MemberKey.generate()
    hello = hello_statement("m", "u", key.pubkey, 5, "00" * 16)
    signature = key.sign(hello)
    verify(key.pubkey, hello, signature)
    with pytest.raises(CryptoFailure):
        verify(key.pubkey, join_statement("m", "u", key.pubkey, "x", 5), signature)
    with pytest.raises(CryptoFailure):
        verify(MemberKey.generate().pubkey, hello, signature)
    with pytest.raises(CryptoFailure):
        verify(key.pubkey, hello, "zz")


def test_secret_key_round_trip_and_repr() -> None:
    key = MemberKey.generate()
    assert MemberKey.from_secret(key.secret_key) == key
    assert key.secret_key not in repr(key)
    with pytest.raises(CryptoFailure):
        MemberKey.from_secret(key.secret_key[:64] + MemberKey.generate().pubkey)


def test_crypto_box_round_trip_and_failures() -> None:
    alice, bob, eve = MemberKey.generate(), MemberKey.generate(), MemberKey.generate()
    boxed = box_encrypt(b"hi bob", sender_secret_hex=alice.secret_key,
                        recipient_pubkey_hex=bob.pubkey)
    assert box_decrypt(boxed, recipient_secret_hex=bob.secret_key,
                       sender_pubkey_hex=alice.pubkey) == b"hi bob"
    with pytest.raises(CryptoFailure):
        box_decrypt(boxed, recipient_secret_hex=eve.secret_key, sender_pubkey_hex=alice.pubkey)
    with pytest.raises(CryptoFailure):
        box_decrypt(BoxedBody(boxed.nonce, "not base64!"), recipient_secret_hex=bob.secret_key,
                    sender_pubkey_hex=alice.pubkey)
    with pytest.raises(CryptoFailure):
        box_encrypt(b"x", sender_secret_hex=alice.secret_key, recipient_pubkey_hex="cd" * 32)
