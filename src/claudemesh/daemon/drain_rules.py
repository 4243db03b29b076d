"""The drain's rules: what a broker answer does to an outbox row, retry delays, max age.

Pure functions (DESIGN §5.3, daemon-spec §4.8-4.9, R-OBX-4):

=====================================  ===========  ====================================
answer                                 row          note
=====================================  ===========  ====================================
201, or 200 duplicate                  done         ``broker_message_id``, ``history_id``
429 ``rate_limited``, any 5xx          pending      retried after a backoff (A-8)
no answer (timeout, link dropped)      pending      retried; the broker dedupes a repeat
409 ``idempotency_key_reused``         dead         R-FP-5: log loudly, operator requeues
409 ``stale_epoch``                    reseal       sealed under the current epoch, resent
any other 4xx                          dead         ``last_error`` = ``code: detail``
=====================================  ===========  ====================================

Retries use the reconnect schedule (R-OBX-7): 500 ms x 2 per attempt up to 30 s, with
+-25 % jitter. There is no attempt cap (A-25); a row gives up only when it is older than
``max_age_hours`` (R-AGE-2/3), which follows the broker's dedupe window.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import Final

from claudemesh.backoff import Schedule
from claudemesh.protocol.features import DedupeParams
from claudemesh.protocol.replies import BrokerReply, SendResult

__all__ = ["Verdict", "VerdictKind", "classify_result", "max_age_hours", "retry_delay_ms"]

DEFAULT_MAX_AGE_HOURS: Final = 168  # R-AGE-2 (permanent mode default, and before negotiation)
PERMANENT_MAX_AGE_CAP_HOURS: Final = 720


class VerdictKind(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    RESEAL = "reseal"  # a topic post under an epoch the topic's membership left behind


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    error: str | None = None
    broker_message_id: str | None = None
    history_id: str | None = None
    history_available: bool = True
    retry_after_ms: int | None = None


def classify_result(answer: BrokerReply) -> Verdict:
    """Turn the broker's answer to one ``send`` into what happens to the row."""
    if not isinstance(answer, SendResult):
        return Verdict(VerdictKind.RETRY, error=f"unexpected answer: {str(answer)[:200]}")
    if answer.accepted:
        return Verdict(VerdictKind.DONE, broker_message_id=answer.broker_message_id,
                       history_id=answer.history_id,
                       history_available=answer.history_available is not False)
    return _refused(answer)


def _refused(answer: SendResult) -> Verdict:
    status, extra = answer.status, answer.data
    error = f"{answer.code or 'unknown'}: {answer.detail or ''}".rstrip(": ")
    if answer.code == "stale_epoch":
        return Verdict(VerdictKind.RESEAL, error=f"{status} {error}", retry_after_ms=0)
    if status == 409:
        prefix = extra.get("broker_fingerprint_prefix")
        return Verdict(VerdictKind.DEAD, error=f"idempotency_key_reused:"
                                               f" {extra.get('conflict')} (broker {prefix})")
    if status == 429 or status >= 500:
        retry = extra.get("retry_after_ms")
        return Verdict(VerdictKind.RETRY, error=f"{status} {error}",
                       retry_after_ms=retry if isinstance(retry, int) else None)
    if 400 <= status < 500:
        return Verdict(VerdictKind.DEAD, error=f"{status} {error}")
    return Verdict(VerdictKind.RETRY, error=f"unexpected answer: {str(answer)[:200]}")


def retry_delay_ms(attempts: int, rng: random.Random, *, initial_ms: int = 500,
                   cap_ms: int = 30_000, jitter: float = 0.25) -> int:
    """Delay before attempt ``attempts + 1`` (``attempts`` >= 1 transmissions so far).

    The first delay is capped too, and the exponent stops at 30 doublings."""
    schedule = Schedule(min(initial_ms, cap_ms), cap_ms, 2, jitter)
    return max(1, round(schedule.delay(min(30, max(0, attempts - 1)), rng)))


def max_age_hours(dedupe: DedupeParams | None, *, override: int | None = None) -> int:
    """R-AGE-2/3: how long a row may keep retrying before it goes dead.

    ``None`` (never negotiated) gives the 168 h default (A-26). An override may shorten the
    window, never stretch it past the broker's dedupe window (R-AGE-4).
    """
    if dedupe is None or dedupe.retention_days is None:
        derived = DEFAULT_MAX_AGE_HOURS
        ceiling = PERMANENT_MAX_AGE_CAP_HOURS
    else:
        days = dedupe.retention_days
        margin = max(24, math.ceil(days * 0.1 * 24))
        derived = max(72, days * 24 - margin)
        ceiling = days * 24 - 1
    if override is None:
        return derived
    if override > ceiling:
        raise ValueError(f"outbox_max_age_above_dedupe_window: {override} h > {ceiling} h")
    return override
