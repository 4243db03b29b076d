from __future__ import annotations

import random

import pytest

from claudemesh.daemon.link_rules import (
    TERMINAL,
    TRANSITIONS,
    CloseVerdict,
    IllegalLinkMove,
    LinkState,
    backoff_delays,
    check_move,
    classify_close,
)


def test_backoff_doubles_from_500_ms_to_a_30_s_cap_with_25_percent_jitter() -> None:
    delays = backoff_delays(random.Random(1))
    got = [next(delays) for _ in range(12)]
    bases = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30]
    for delay, base in zip(got, bases, strict=True):
        assert base * 0.75 <= delay <= base * 1.25
    assert len({round(d, 6) for d in got[6:]}) > 1  # jitter really varies


def test_no_jitter_gives_the_exact_schedule() -> None:
    delays = backoff_delays(random.Random(0), jitter=0.0)
    assert [next(delays) for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_terminal_states_lead_nowhere_but_closed() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] <= {LinkState.CLOSED}
    assert all(state in TRANSITIONS for state in LinkState)


def test_illegal_moves_raise_and_legal_ones_pass() -> None:
    check_move(LinkState.NEGOTIATING, LinkState.INCOMPATIBLE)
    with pytest.raises(IllegalLinkMove):
        check_move(LinkState.INCOMPATIBLE, LinkState.CONNECTING)
    with pytest.raises(IllegalLinkMove):
        check_move(LinkState.OPEN, LinkState.NEGOTIATING)


@pytest.mark.parametrize(("code", "error", "verdict"), [
    (1000, None, CloseVerdict.RETRY), (1001, None, CloseVerdict.RETRY),
    (1011, None, CloseVerdict.RETRY), (None, None, CloseVerdict.RETRY),
    (4001, "stale_timestamp", CloseVerdict.RETRY), (4001, "replayed_nonce", CloseVerdict.RETRY),
    (4001, "unknown_member", CloseVerdict.REJECTED), (4001, "bad_signature", CloseVerdict.REJECTED),
    (4002, None, CloseVerdict.REJECTED), (4003, None, CloseVerdict.REJECTED),
    (4004, None, CloseVerdict.REJECTED), (4008, None, CloseVerdict.RETRY),
])
def test_close_classification(code: int | None, error: str | None,
                              verdict: CloseVerdict) -> None:
    assert classify_close(code, error) is verdict
