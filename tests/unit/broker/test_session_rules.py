"""The broker connection's state table (src/claudemesh/broker/session_rules.py), alone."""

from __future__ import annotations

import itertools

import pytest

from claudemesh.broker.session_rules import (
    TERMINAL,
    TRANSITIONS,
    IllegalSessionMove,
    SessionState,
    check_move,
)

LEGAL = [(old, new) for old, news in TRANSITIONS.items() for new in sorted(news)]
ILLEGAL = [(old, new) for old, new in itertools.product(SessionState, SessionState)
           if new not in TRANSITIONS[old]]


def test_the_table_has_a_row_for_every_state() -> None:
    assert set(TRANSITIONS) == set(SessionState)


def test_the_table_holds_exactly_the_moves_a_connection_makes() -> None:
    assert set(LEGAL) == {(SessionState.AWAITING_HELLO, SessionState.OPEN),
                          (SessionState.AWAITING_HELLO, SessionState.CLOSED),
                          (SessionState.OPEN, SessionState.CLOSED)}


@pytest.mark.parametrize(("old", "new"), LEGAL)
def test_every_legal_move_is_accepted(old: SessionState, new: SessionState) -> None:
    check_move(old, new)


@pytest.mark.parametrize(("old", "new"), ILLEGAL)
def test_every_illegal_move_raises_and_names_both_states(old: SessionState,
                                                          new: SessionState) -> None:
    with pytest.raises(IllegalSessionMove) as caught:
        check_move(old, new)
    assert (caught.value.old, caught.value.new) == (old, new)
    assert str(old) in str(caught.value) and str(new) in str(caught.value)


def test_no_state_moves_to_itself() -> None:
    assert all(state not in TRANSITIONS[state] for state in SessionState)


def test_the_terminal_state_has_no_exits() -> None:
    assert set(TERMINAL) == {SessionState.CLOSED}
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()


def test_every_state_but_the_terminal_one_can_reach_it() -> None:
    for state in set(SessionState) - TERMINAL:
        assert SessionState.CLOSED in TRANSITIONS[state]
