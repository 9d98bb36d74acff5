"""The webhook retry schedule: jittered waits, Retry-After honoured up to a day, then no more."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, strategies as st

from relay.config import Settings
from relay.webhooks.schedule import MAX_RETRY_AFTER_SECONDS, next_attempt_delay

SCHEDULE = Settings.webhook_retry_schedule


def test_the_default_schedule_waits_each_entry_in_turn_then_stops() -> None:
    rng = random.Random(7)
    delays = [next_attempt_delay(made, SCHEDULE, None, rng) for made in range(1, 10)]
    assert delays[-2:] == [None, None]
    for delay, planned in zip(delays[:7], SCHEDULE[1:], strict=True):
        assert delay is not None and 0.9 * planned <= delay <= 1.1 * planned
    # Jittered: not the planned values themselves.
    assert delays[:7] != list(SCHEDULE[1:])


def test_a_zero_wait_stays_zero() -> None:
    assert next_attempt_delay(0, SCHEDULE, None, random.Random(1)) == 0.0


def test_retry_after_stretches_a_wait_but_never_shortens_it() -> None:
    rng = random.Random(3)
    assert next_attempt_delay(1, SCHEDULE, 120.0, rng) == 120.0
    shorter = next_attempt_delay(3, SCHEDULE, 10.0, rng)
    assert shorter is not None and shorter >= 0.9 * SCHEDULE[3]


def test_retry_after_is_capped_at_a_day() -> None:
    assert next_attempt_delay(1, SCHEDULE, 10 * MAX_RETRY_AFTER_SECONDS, random.Random(5)) == MAX_RETRY_AFTER_SECONDS


def test_retry_after_does_not_bring_back_a_spent_schedule() -> None:
    assert next_attempt_delay(len(SCHEDULE), SCHEDULE, 60.0, random.Random(5)) is None


def test_negative_attempt_counts_are_a_bug() -> None:
    with pytest.raises(ValueError):
        next_attempt_delay(-1, SCHEDULE, None, random.Random(5))


@given(
    schedule=st.lists(st.floats(min_value=0, max_value=1e6), max_size=12),
    made=st.integers(min_value=0, max_value=20),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e9),
    seed=st.integers(),
)
def test_every_delay_is_within_its_bounds(schedule: list[float], made: int, retry_after: float | None, seed: int) -> None:
    delay = next_attempt_delay(made, schedule, retry_after, random.Random(seed))
    if made >= len(schedule):
        assert delay is None
        return
    assert delay is not None
    planned = schedule[made]
    floor = 0.9 * planned if retry_after is None else max(0.9 * planned, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    ceiling = 1.1 * planned if retry_after is None else max(1.1 * planned, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    assert floor - 1e-9 <= delay <= ceiling + 1e-9
