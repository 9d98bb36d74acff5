"""Budgets booked in blocks (relay.budget_blocks): far from a limit, a process admits creates
from a share claimed ahead; near it, one create at a time; never more than the limit, on either
database, however many processes race for it."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
from conftest import ManualClock, Relay, Sandbox, run_sql
from hypothesis import given, strategies as st
from test_quotas import NOON, limited_key, post
from test_relay import assert_envelope

from relay.budget_blocks import BLOCK_MAX_JOBS, BLOCK_TAKE_SECONDS, DUST, Block, BudgetBlocks, Share
from relay.keys import set_limits
from relay.limits import JobTerms, Limits, block_size_for, period_bounds
from relay.quota import Booking, _block_share
from relay.records import Usage
from relay.state import write_off_idle_blocks
from relay.store import NOT_NOW, Store
from relay.store.reservations import shrink_block

BACKENDS = ("sqlite", "postgresql")
# sora-2 at 720x1280, 4 s: $0.40 a create.
PRICE = 0.4


@pytest.fixture
def clock(relay: Relay) -> ManualClock:
    clock = ManualClock(NOON)
    relay.state.clock = clock
    return clock


def rows(relay: Relay) -> list[Any]:
    return run_sql(relay.state.store, "SELECT id, video_seconds, usd FROM reservations ORDER BY created_at")


def charged(relay: Relay) -> float:
    return sum(row[0] for row in run_sql(relay.state.store, "SELECT usd FROM videos WHERE charge_state IN ('reserved', 'settled')"))


def claims_counted(relay: Relay) -> list[int]:
    """Counts the store's block claims (a write transaction each) from now on."""
    store = relay.state.store
    claims: list[int] = []
    real = store.claim_budget_block

    def counting(*args: Any, **kwargs: Any) -> Any:
        outcome = real(*args, **kwargs)
        claims.append(outcome[1])
        return outcome

    store.claim_budget_block = counting  # type: ignore[method-assign]
    return claims


# -- the block's size ---------------------------------------------------------------------------


def terms(seconds: float = 4, usd: float | None = PRICE) -> JobTerms:
    return JobTerms(model="sora-2", size="720x1280", video_seconds=seconds, usd=usd, models=("sora-2",))


def sized(limits: Limits, used_usd: float = 0.0, used_seconds: float = 0.0, job: JobTerms | None = None) -> int:
    usage = Usage(in_flight=0, video_seconds=used_seconds, usd=used_usd)
    starts = [period_bounds(period, NOON)[0] for period in ("day", "month")]
    return block_size_for(limits, job or terms(), NOON)({start: usage for start in starts})


def test_a_block_holds_a_sixteenth_of_what_is_left_and_at_most_its_cap() -> None:
    assert sized(Limits(usd_per_month=1e9)) == BLOCK_MAX_JOBS
    # $0.40 + 16 × $0.40 left after this create: one more create's worth.
    assert sized(Limits(usd_per_month=0.4 + 16 * 0.4)) == 2
    assert sized(Limits(usd_per_month=0.4 + 16 * 0.4 - 0.01)) == 1
    assert sized(Limits(usd_per_day=100, usd_per_month=3)) == 1  # the tightest limit decides
    assert sized(Limits(usd_per_month=100), used_usd=99.6) == 1
    assert sized(Limits(usd_per_month=100), used_usd=120) == 1  # over (a refusal comes first): never below one
    # Seconds limits count seconds; a key with only a seconds limit needs no price.
    assert sized(Limits(video_seconds_per_day=4 + 16 * 4 * 3), job=terms(usd=None)) == 4
    assert sized(Limits(video_seconds_per_month=10_000, usd_per_month=1e9), used_seconds=10_000 - 4) == 1


@given(
    budget=st.floats(min_value=0.4, max_value=1e6),
    used=st.floats(min_value=0, max_value=1e6),
    price=st.floats(min_value=0.01, max_value=50),
)
def test_what_a_block_holds_beyond_its_create_is_at_most_a_sixteenth_of_what_is_left(budget: float, used: float, price: float) -> None:
    jobs = sized(Limits(usd_per_month=budget), used_usd=used, job=terms(usd=price))
    assert 1 <= jobs <= BLOCK_MAX_JOBS
    left_after = budget - used - price
    assert (jobs - 1) * price <= max(0.0, left_after) / 16 + 1e-9


# -- one process's blocks in memory ------------------------------------------------------------


def claimed(blocks: BudgetBlocks, claimed_at: float = NOON, jobs: int = 4) -> Share:
    """A block of `jobs` creates' worth, installed as a claim leaves it; the claiming create's share."""
    blocks.install(
        Block("blk_1", "alice", LIMITS_JSON, claimed_at=claimed_at, seconds_left=0.0, usd_left=0.0),
        seconds_left=4.0 * jobs,
        usd_left=PRICE * jobs,
    )
    share = blocks.take("alice", LIMITS_JSON, 4, PRICE, claimed_at)
    assert share is not None
    return share


LIMITS_JSON = '{"usd_per_month": 100}'


def test_shares_are_taken_while_the_block_admits_and_given_back_in_memory() -> None:
    blocks = BudgetBlocks()
    first = claimed(blocks)
    shares = [blocks.take("alice", LIMITS_JSON, 4, PRICE, NOON + 1) for _ in range(4)]
    assert all(share is not None for share in shares[:3]) and shares[3] is None  # 4 creates' worth in all
    assert first.block.outstanding == 4
    assert BudgetBlocks.give_back(shares[0])  # type: ignore[arg-type]
    assert blocks.take("alice", LIMITS_JSON, 4, PRICE, NOON + 2) is not None
    assert blocks.take("alice", LIMITS_JSON, 4, PRICE, NOON + 2) is None
    BudgetBlocks.recorded(first)
    assert first.block.outstanding == 3


def test_a_block_stops_admitting_after_its_window_on_a_new_day_and_under_new_limits() -> None:
    blocks = BudgetBlocks()
    claimed(blocks, claimed_at=NOON)
    assert blocks.take("alice", '{"usd_per_month": 50}', 4, PRICE, NOON + 1) is None
    assert blocks.take("alice", LIMITS_JSON, 4, PRICE, NOON + BLOCK_TAKE_SECONDS) is None
    day_end = period_bounds("day", NOON)[1]
    claimed(blocks, claimed_at=day_end - 1)
    assert blocks.take("alice", LIMITS_JSON, 4, PRICE, day_end) is None
    assert blocks.take("alice", LIMITS_JSON, 4, PRICE, day_end - 0.5) is not None


def test_retiring_an_idle_block_writes_off_what_no_create_took() -> None:
    blocks = BudgetBlocks()
    share = claimed(blocks, jobs=4)
    assert blocks.retire_idle(NOON + 1) == []
    (leftover,) = blocks.retire_idle(NOON + BLOCK_TAKE_SECONDS)
    assert leftover == ("blk_1", pytest.approx(12.0), pytest.approx(3 * PRICE))
    # A share of a retired block goes back to its row, not to memory.
    assert not BudgetBlocks.give_back(share)
    assert blocks.take("alice", LIMITS_JSON, 4, PRICE, NOON + 1) is None


# -- through the relay, on both databases ----------------------------------------------------


class _Noting:
    """A connection that notes which of its statements' answers were read."""

    def __init__(self, conn: Any, read: list[str]) -> None:
        self.conn, self.read = conn, read

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        return _Answer(self.conn.execute(sql, parameters), sql, self.read)


class _Answer:
    def __init__(self, cursor: Any, sql: str, read: list[str]) -> None:
        self._cursor, self._sql, self._read = cursor, sql, read

    def __getattr__(self, name: str) -> Any:
        self._read.append(self._sql)
        return getattr(self._cursor, name)


@pytest.mark.parametrize(
    ("taken", "left"),
    [
        ((4.0, 0.4), (8.0, 0.8)),  # something left on both counts: shrunk
        ((12.0, 0.8), (0.0, 0.4)),  # seconds used up, dollars not: kept
        ((8.0, 1.2), (4.0, 0.0)),  # dollars used up, seconds not: kept
        ((12.0, 1.2), None),  # nothing left: gone
        ((12.0 - DUST / 2, 1.2 - DUST / 2), None),  # only rounding dust left: gone
    ],
)
def test_a_take_shrinks_the_block_and_the_last_one_removes_it(
    database: str, taken: tuple[float, float], left: tuple[float, float] | None
) -> None:
    store = Store(database)
    try:
        store.ensure_schema()
        store.claim_budget_block(
            "blk_1",
            key_name="alice",
            video_seconds=4.0,
            usd=0.4,
            now=NOON,
            expires_at=NOON + 60,
            periods=[],
            refuse=lambda *_: None,
            size=lambda _: 3,
            owner=None,
        )
        read: list[str] = []
        with store.transaction() as conn:
            shrink_block(_Noting(conn, read), "blk_1", *taken)
        # No answer is waited for: on PostgreSQL the take costs no round trip of its own.
        assert read == []
        held = run_sql(store, "SELECT video_seconds, usd FROM reservations WHERE id = 'blk_1'")
        assert [tuple(row) for row in held] == ([] if left is None else [(pytest.approx(left[0]), pytest.approx(left[1]))])
        # A take from a block that is gone changes nothing.
        with store.transaction() as conn:
            shrink_block(conn, "blk_2", 4.0, 0.4)
        assert len(run_sql(store, "SELECT id FROM reservations")) == len(held)
    finally:
        store.close()


def test_far_from_the_budget_one_claim_books_many_creates(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_month=1000)
    claims = claims_counted(relay)
    for _ in range(5):
        assert post(relay, key).status_code == 200
    assert claims == [BLOCK_MAX_JOBS]
    ((block_id, seconds, usd),) = rows(relay)
    assert block_id.startswith("blk_")
    # The row holds what no create has taken yet; the five recorded jobs hold their charges.
    assert (seconds, usd) == (pytest.approx(4 * (BLOCK_MAX_JOBS - 5)), pytest.approx(PRICE * (BLOCK_MAX_JOBS - 5)))
    assert charged(relay) == pytest.approx(5 * PRICE)
    usage = relay.state.store.key_usage("alice", since=period_bounds("month", clock.now)[0], now=clock.now)
    assert usage.in_flight == 0  # a block is not a create in flight
    assert usage.usd == pytest.approx(PRICE * BLOCK_MAX_JOBS)  # but what it holds counts against the budget
    # Its window over, what it holds is written off.
    clock.now += BLOCK_TAKE_SECONDS
    anyio.run(write_off_idle_blocks, relay.state)
    assert rows(relay) == []
    assert relay.state.store.key_usage("alice", since=period_bounds("month", clock.now)[0], now=clock.now).usd == pytest.approx(5 * PRICE)


def test_near_the_budget_each_create_is_booked_alone_and_the_last_cent_is_usable(
    relay: Relay, sandbox: Sandbox, clock: ManualClock
) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_day=2.0)  # five creates, under sixteen: blocks of one
    claims = claims_counted(relay)
    for _ in range(5):
        assert post(relay, key).status_code == 200
        assert rows(relay) == []  # recorded: nothing held ahead
    assert_envelope(post(relay, key), 429, "relay_budget_exceeded")
    assert claims == [1, 1, 1, 1, 1, 0]
    assert charged(relay) == pytest.approx(2.0)


def test_a_failed_create_gives_its_share_back_to_the_block(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_month=1000)
    claims = claims_counted(relay)
    assert post(relay, key).status_code == 200
    sandbox.fault(status=500, times=1)
    assert post(relay, key).status_code == 500
    assert post(relay, key).status_code == 200
    assert claims == [BLOCK_MAX_JOBS]
    ((_, _, usd),) = rows(relay)
    assert usd == pytest.approx(PRICE * (BLOCK_MAX_JOBS - 2))
    assert charged(relay) == pytest.approx(2 * PRICE)


def test_new_limits_end_the_block_and_write_off_its_rest(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_month=1000)
    assert post(relay, key).status_code == 200
    set_limits(relay.state.store, "alice", {"usd_per_month": 2.0})
    relay.state.reload()
    # Under the new limit, $0.40 charged and nothing held ahead from the old block: four more fit.
    for _ in range(4):
        assert post(relay, key).status_code == 200
    assert_envelope(post(relay, key), 429, "relay_budget_exceeded")
    assert rows(relay) == []
    assert charged(relay) == pytest.approx(2.0)


def test_processes_racing_for_a_budget_never_overspend_it(make_relay: Any, sandbox: Sandbox) -> None:
    # Two relays on one database, as two workers or replicas: each claims its own blocks.
    first: Relay = make_relay()
    relays = [first, make_relay(secret_key=first.settings.secret_key)]
    relays[0].add_account("a", sandbox.base_api())
    budget = 40.0  # a hundred creates
    key = limited_key(relays[0], usd_per_month=budget)
    relays[1].state.reload()
    claims = [claims_counted(relay) for relay in relays]
    statuses: list[int] = []
    lock = threading.Lock()

    def client(relay: Relay) -> None:
        for _ in range(30):
            status = post(relay, key).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client, args=(relay,)) for relay in relays for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert charged(relays[0]) == pytest.approx(admitted * PRICE)
    assert admitted * PRICE <= budget + 1e-9
    # Near the end blocks are single creates; what another process still held ahead is at most
    # one block of a sixteenth of what was left when it was claimed.
    assert admitted >= 100 - 2
    assert all(max(made) > 1 for made in claims)  # both booked in blocks of several creates
    for relay in relays:
        relay.state.clock = lambda: NOON + 10**9  # past every block's window, as the refresh would find it
        anyio.run(write_off_idle_blocks, relay.state)
    assert rows(relays[0]) == []


def test_a_create_cancelled_while_its_block_is_claimed_leaves_the_block_to_the_process(
    relay: Relay, sandbox: Sandbox, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_month=1000)
    store, state = relay.state.store, relay.state
    real = store.claim_budget_block

    def slow_claim(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # the client hangs up meanwhile
        return real(*args, **kwargs)

    store.claim_budget_block = slow_claim  # type: ignore[method-assign]
    # As when another writer holds the write turn: the claim goes to a store thread, and only
    # there can the create be cancelled while it runs.
    monkeypatch.setattr(store, "run_now", lambda *args, **kwargs: NOT_NOW)

    async def cancelled_create() -> None:
        booking = Booking(state, store.key_by_name("alice"), terms(), clock.now)
        with anyio.move_on_after(0.05) as scope:
            await _block_share(state, booking.key, Limits(usd_per_month=1000), booking)
        assert scope.cancelled_caught

    anyio.run(cancelled_create)
    ((block_id, _, usd),) = rows(relay)
    assert usd == pytest.approx(PRICE * BLOCK_MAX_JOBS)  # written whole, no create took from it
    store.claim_budget_block = real  # type: ignore[method-assign]
    claims = claims_counted(relay)
    assert post(relay, key).status_code == 200
    assert claims == []  # the next create took from it
    assert [row[0] for row in rows(relay)] == [block_id]
