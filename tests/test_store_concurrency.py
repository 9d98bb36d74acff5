"""Check-then-write steps under contention, on both databases: several Store objects (each with
its own connections, as separate workers or replicas have) race for the same budget, session,
Idempotency-Key, rate-limit window and account state. Exactly one outcome may win each race."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from relay.store import Store, Usage

BACKENDS = ("sqlite", "postgresql")
NOW = 1_800_000_000.0
RACERS = 8
T = TypeVar("T")


@pytest.fixture
def stores(database: str) -> Iterator[list[Store]]:
    first = Store(database)
    first.ensure_schema()
    opened = [first, *(Store(database) for _ in range(RACERS - 1))]
    yield opened
    for store in opened:
        store.close()


def race(stores: list[Store], attempt: Callable[[Store, int], T], per_store: int = 1) -> list[T]:
    """Every store runs `attempt` `per_store` times, all threads released at once."""
    results: list[T] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores) * per_store)
    lock = threading.Lock()

    def run(store: Store, index: int) -> None:
        try:
            barrier.wait()
            outcome = attempt(store, index)
            with lock:
                results.append(outcome)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(store, i * per_store + j)) for i, store in enumerate(stores) for j in range(per_store)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [], errors[:3]
    return results


def test_a_budget_for_five_admits_exactly_five(stores: list[Store]) -> None:
    def refuse(current: Usage, _by_period: dict[float, Usage]) -> str | None:
        return "budget" if current.video_seconds + 4 > 20 else None

    def reserve(store: Store, index: int) -> Any:
        return store.reserve(
            f"res_{index}", key_name="alice", video_seconds=4, usd=0.4, now=NOW, expires_at=NOW + 600, periods=(), refuse=refuse
        )

    outcomes = Counter(race(stores, reserve, per_store=3))
    assert outcomes == {None: 5, "budget": 3 * RACERS - 5}
    assert stores[0].key_usage("alice", since=NOW, now=NOW).in_flight == 5


def test_a_session_is_pinned_to_one_account_whoever_claims_it(stores: list[Store]) -> None:
    pinned = race(stores, lambda store, index: store.claim_session("s1", f"acct-{index}", replacing=None, now=NOW, ttl=600))
    assert len(set(pinned)) == 1
    assert stores[0].session_account("s1", NOW) == pinned[0]


def test_an_idempotency_key_is_claimed_once(stores: list[Store]) -> None:
    def claim(store: Store, _index: int) -> str:
        state, _ = store.claim_idempotency("alice", "idem-1", "hash", now=NOW, ttl=600, stale_after=60)
        return state

    assert Counter(race(stores, claim, per_store=2)) == {"claimed": 1, "in_progress": 2 * RACERS - 1}


def test_a_requests_per_minute_window_admits_exactly_its_limit(stores: list[Store]) -> None:
    def take(store: Store, _index: int) -> bool:
        return store.take_request_slots("alice", now=NOW, limit=10, window=60) == (1, 0.0)

    assert Counter(race(stores, take, per_store=4)) == {True: 10, False: 4 * RACERS - 10}


def test_block_claims_grant_exactly_the_limit_between_them(stores: list[Store]) -> None:
    """Processes claiming slots in blocks (relay.limits.RequestSlots) never get more than the
    limit between them: the last claim gets what is left, later ones none."""

    def take(store: Store, _index: int) -> int:
        granted, wait = store.take_request_slots("alice", now=NOW, limit=1000, window=60, wanted=300)
        assert (granted == 0) == (wait > 0)
        return granted

    granted = sorted(race(stores, take, per_store=2), reverse=True)
    assert granted == [300, 300, 300, 100] + [0] * (2 * RACERS - 4)


def test_concurrent_429s_make_one_cooldown_and_evict_the_session_once(stores: list[Store]) -> None:
    first = stores[0]
    first.insert_account(
        name="a", type="openai-responses", credential_encrypted="sealed", base_api="http://127.0.0.1:9/v1", priority=100, now=NOW
    )
    first.claim_session("s", "a", replacing=None, now=NOW, ttl=600)

    def report(store: Store, index: int) -> int:
        return store.set_account_state(
            "a", "rate_limited", now=NOW + index * 0.001, until=NOW + 60 + index, reason="upstream 429", evict_sessions=True
        )

    evicted = race(stores, report)
    account = first.account("a")
    assert account.state == "rate_limited" and account.state_until == NOW + 60 + RACERS - 1
    assert sorted(evicted) == [0] * (RACERS - 1) + [1]
