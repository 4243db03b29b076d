"""Percentiles, medians and how they are printed, for every benchmark script."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def median(values: Iterable[float]) -> float:
    """The median, 0 when there are no values (a scenario that did not run)."""
    items = list(values)
    return statistics.median(items) if items else 0.0


def format_ms(p50: float, p90: float, p99: float, max_: float) -> str:
    """``p50 1.23 p90 … max …``: the one way latencies in milliseconds are printed."""
    return f"p50 {p50:.2f} p90 {p90:.2f} p99 {p99:.2f} max {max_:.2f}"


@dataclass(slots=True)
class Percentiles:
    """p50/p90/p99/max of latencies, in milliseconds."""

    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Percentiles:
        """From latencies in seconds, in any order."""
        ordered = sorted(seconds)
        return cls(*(percentile(ordered, q) * 1e3 for q in (0.50, 0.90, 0.99, 1.0)))

    def __str__(self) -> str:
        return format_ms(self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms) + " ms"


def spread(values: list[float]) -> dict[str, float]:
    """Median, p90, min and max of a few wall times (bench/cli_send.py).

    Its p90 is the lower neighbour at rank ``0.9 * (n - 1)``, not the nearest rank of
    :func:`percentile`: with 20 runs that is the 18th of 20, as the script always printed.
    """
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "min": ordered[0], "max": ordered[-1]}
