from __future__ import annotations

from claudemesh.broker.ratelimit import TokenBucket


def test_burst_then_refill() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3)
    assert [bucket.take(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(10.0)
    assert 0.49 < wait <= 0.5
    assert bucket.take(10.5) == 0.0
    assert bucket.take(100.0) == 0.0  # refills up to the burst, not beyond
    assert [bucket.take(100.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take(100.0) > 0
