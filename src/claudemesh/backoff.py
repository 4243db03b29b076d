"""Exponential backoff as plain arithmetic: one schedule for every retry loop.

The broker link's reconnects, the drain's per-row retries and the SDK's event-stream
reconnects all wait ``initial``, then ``factor`` times longer each time up to ``cap``;
the daemon's two add ``+-jitter`` so many peers do not retry in step. Each caller keeps
its own numbers (units included: seconds or milliseconds) and does its own sleeping.

A delay is computed as a loop would: the first is ``initial`` as given, each next one is
``min(cap, previous * factor)``. The RNG is passed in and asked for exactly one
``uniform(-jitter, jitter)`` per jittered delay, even when ``jitter`` is 0, so a seeded
schedule is reproducible. Pure: no clock, no sleeping, no ``random`` import.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Schedule", "Uniform"]


class Uniform(Protocol):
    """What a schedule needs of an RNG (``random.Random`` is one)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True)
class Schedule:
    initial: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0  # a fraction: 0.25 is +-25 %

    def step(self, delay: float) -> float:
        """The un-jittered delay after ``delay``."""
        return min(self.cap, delay * self.factor)

    def base(self, n: int) -> float:
        """The ``n``-th un-jittered delay, 0 being the first."""
        delay = self.initial
        for _ in range(n):
            following = self.step(delay)
            if following == delay:  # at the cap (or a factor of 1): it stays there
                break
            delay = following
        return delay

    def jittered(self, delay: float, rng: Uniform) -> float:
        """``delay`` moved by up to ``+-jitter`` of itself."""
        return delay * (1.0 + rng.uniform(-self.jitter, self.jitter))

    def delay(self, n: int, rng: Uniform) -> float:
        """The ``n``-th delay, jittered."""
        return self.jittered(self.base(n), rng)

    def delays(self, rng: Uniform) -> Iterator[float]:
        """The jittered delays in order, without end; start a new one to reset."""
        delay = self.initial
        while True:
            yield self.jittered(delay, rng)
            delay = self.step(delay)
