"""When a failed webhook delivery is tried again.

settings.webhook_retry_schedule[n] is the wait before attempt n (counting from 0; entry 0 is the
first attempt, right when the event is written), after attempt n - 1 failed. Each wait is
jittered by +-10 %, so the deliveries of one outage do not all come back in the same second.
An endpoint's Retry-After (429/503) stretches a wait, never shortens it, up to a day.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

JITTER = 0.1
MAX_RETRY_AFTER_SECONDS = 24 * 3600.0


def next_attempt_delay(attempts_made: int, schedule: Sequence[float], retry_after: float | None, rng: random.Random) -> float | None:
    """Seconds until the next attempt after `attempts_made` attempts failed; None: the schedule is spent."""
    if attempts_made < 0:
        raise ValueError("attempts_made counts attempts: it is never negative")
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made] * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS))
    return delay
