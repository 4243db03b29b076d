"""The one backoff schedule: its arithmetic, its use of the RNG, and the callers' numbers."""

from __future__ import annotations

import itertools
import random

import pytest

from claudemesh.backoff import Schedule
from claudemesh.daemon.drain_rules import retry_delay_ms
from claudemesh.daemon.link_rules import backoff_delays
from claudemesh.sdk.reconnect import Backoff


class Counting:
    """An RNG that records what it is asked and always answers the top of the range."""

    def __init__(self) -> None:
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return b


def test_delays_grow_by_the_factor_and_stay_at_the_cap() -> None:
    schedule = Schedule(0.5, 30.0)
    assert [schedule.base(n) for n in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert Schedule(100, 1000, factor=3).base(3) == 1000
    assert Schedule(100, 10_000, factor=3).base(3) == 2700
    assert Schedule(1, 5, factor=1).base(10**9) == 1  # a factor of 1 ends the loop at once


def test_the_first_delay_is_initial_as_given_like_a_loop_would_have_it() -> None:
    assert Schedule(50, 10).base(0) == 50
    assert Schedule(50, 10).base(1) == 10


def test_the_iterator_and_the_indexed_delay_agree() -> None:
    schedule = Schedule(0.5, 30.0, jitter=0.25)
    one, two = random.Random(7), random.Random(7)
    assert list(itertools.islice(schedule.delays(one), 12)) == [
        schedule.delay(n, two) for n in range(12)]


def test_jitter_asks_the_rng_once_per_delay_even_when_it_is_zero() -> None:
    rng = Counting()
    assert Schedule(2.0, 8.0, jitter=0.25).delay(1, rng) == 4.0 * 1.25
    assert list(itertools.islice(Schedule(1.0, 2.0).delays(rng), 3)) == [1.0, 2.0, 2.0]
    assert rng.asked == [(-0.25, 0.25)] + [(-0.0, 0.0)] * 3


def _old_link_delays(rng: random.Random, initial: float, factor: float, cap: float,
                     jitter: float) -> list[float]:
    base, out = initial, []
    for _ in range(15):
        out.append(base * (1.0 + rng.uniform(-jitter, jitter)))
        base = min(cap, base * factor)
    return out


def _old_retry_delay_ms(attempts: int, rng: random.Random, initial: int, cap: int,
                        jitter: float) -> int:
    base: int = min(cap, initial * (1 << min(30, max(0, attempts - 1))))
    return max(1, round(base * (1.0 + rng.uniform(-jitter, jitter))))


@pytest.mark.parametrize("seed", range(5))
def test_the_link_and_the_drain_keep_their_exact_numbers(seed: int) -> None:
    """What link_rules and drain_rules computed before they shared the schedule."""
    params = random.Random(seed)
    initial, factor = params.choice([0.5, 0.1, 3.0, 40.0]), params.choice([2.0, 1.5, 3.0])
    cap, jitter = params.choice([30.0, 7.0, 1000.0]), params.choice([0.25, 0.0, 0.5])
    new = backoff_delays(random.Random(seed), initial_s=initial, factor=factor, cap_s=cap,
                         jitter=jitter)
    assert list(itertools.islice(new, 15)) == _old_link_delays(
        random.Random(seed), initial, factor, cap, jitter)
    ms_initial, ms_cap = params.choice([500, 1, 70_000]), params.choice([30_000, 2**62])
    for attempts in (0, 1, 2, 3, 7, 31, 32, 60, 10_000):
        assert retry_delay_ms(attempts, random.Random(attempts), initial_ms=ms_initial,
                              cap_ms=ms_cap, jitter=jitter) == _old_retry_delay_ms(
            attempts, random.Random(attempts), ms_initial, ms_cap, jitter)


def test_the_sdk_backoff_is_the_schedule_without_jitter() -> None:
    backoff, schedule = Backoff(), Schedule(0.2, 5.0)
    assert [backoff.next() for _ in range(8)] == [schedule.base(n) for n in range(8)]
