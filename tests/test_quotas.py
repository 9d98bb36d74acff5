"""Per-key limits, budgets and account caps through an in-process relay, on a clock the test moves."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from conftest import ManualClock, Relay, Sandbox, run_sql
from hypothesis import given, strategies as st
from test_lifecycle import V, wait_completed
from test_relay import assert_envelope, auth, metric_value, tokens_seen

from relay.keys import set_limits
from relay.limits import PERIODS, Limits, period_bounds, validate_limits

# Noon UTC on a mid-month day: far from day and month boundaries unless a test moves there.
NOON = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC).timestamp()

# Admission, budgets and records must hold on either database.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def clock(relay: Relay) -> ManualClock:
    clock = ManualClock(NOON)
    relay.state.clock = clock
    return clock


def limited_key(relay: Relay, name: str = "alice", **limits: Any) -> str:
    key = relay.issue_key(name)
    set_limits(relay.state.store, name, limits)
    relay.state.reload()
    return key


def post(relay: Relay, key: str, **fields: Any) -> Any:
    return relay.client.post(V, json={"prompt": "a cat", "seconds": "4", "size": "720x1280", **fields}, headers=auth(key))


def quota_hits(relay: Relay, key: str, limit: str) -> float:
    return metric_value(relay, f'relay_quota_hits_total{{key="{key}",limit="{limit}"}}')


def test_requests_per_minute_window_slides(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, requests_per_minute=2)
    assert relay.client.get(V, headers=auth(key)).status_code == 200
    clock.now += 30
    assert post(relay, key).status_code == 200
    refused = relay.client.get(V, headers=auth(key))
    assert_envelope(refused, 429, "relay_rate_limited")
    assert refused.headers["retry-after"] == "30"  # the first request leaves the window 60 s after it came
    assert "x-should-retry" not in refused.headers  # it resets soon: worth retrying
    assert quota_hits(relay, "alice", "requests_per_minute") == 1
    clock.now += 30.5
    assert relay.client.get(V, headers=auth(key)).status_code == 200
    assert_envelope(relay.client.get(V, headers=auth(key)), 429, "relay_rate_limited")
    assert len(sandbox.requests()) == 1  # nothing refused went upstream


def test_a_high_requests_per_minute_limit_is_claimed_in_blocks_and_still_holds(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, requests_per_minute=1800)  # blocks of 3 slots
    for _ in range(4):
        assert relay.client.get(V, headers=auth(key)).status_code == 200
    # Two claims of three (the second partly unspent), not a row per request.
    assert [tuple(row) for row in run_sql(relay.state.store, "SELECT slots FROM request_log WHERE key_name = 'alice'")] == [(3,), (3,)]
    # Another process took all but one slot of the window: this one gets that slot and no more,
    # once its own block's time has passed.
    clock.now += 2
    relay.state.store.take_request_slots("alice", now=clock.now, limit=1800, window=60, wanted=1800)
    run_sql(relay.state.store, "UPDATE request_log SET slots = slots - 1 WHERE slots > 3")
    assert relay.client.get(V, headers=auth(key)).status_code == 200
    assert_envelope(relay.client.get(V, headers=auth(key)), 429, "relay_rate_limited")
    assert quota_hits(relay, "alice", "requests_per_minute") == 1


def test_requests_in_flight_when_a_block_runs_out_wait_for_one_claim(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, requests_per_minute=6000)  # blocks of 10 slots
    statuses: list[int] = []

    def client() -> None:
        for _ in range(5):
            statuses.append(relay.client.get(V, headers=auth(key)).status_code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 40
    # Forty requests, four blocks of ten: no request claimed a block of its own while another's
    # claim was on its way.
    assert [tuple(row) for row in run_sql(relay.state.store, "SELECT slots FROM request_log WHERE key_name = 'alice'")] == [(10,)] * 4


def test_video_seconds_per_day_resets_at_midnight_utc(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, video_seconds_per_day=12)
    assert post(relay, key, seconds="8").status_code == 200
    assert post(relay, key, seconds="4").status_code == 200
    refused = post(relay, key, seconds="4")
    body = assert_envelope(refused, 429, "relay_video_seconds_exceeded")
    assert "12 s per day" in body["message"]
    assert refused.headers["retry-after"] == str(12 * 3600)  # noon to midnight
    assert refused.headers["x-should-retry"] == "false"
    assert quota_hits(relay, "alice", "video_seconds_per_day") == 1
    clock.now = period_bounds("day", NOON)[1] + 1
    assert post(relay, key, seconds="12").status_code == 200


def test_usd_budget_day_and_month(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    # sora-2 at 720x1280 is $0.10 a second: 8 s = $0.80, 4 s = $0.40.
    key = limited_key(relay, usd_per_day=1.2, usd_per_month=2.0)
    assert post(relay, key, seconds="8").status_code == 200
    assert post(relay, key, seconds="4").status_code == 200  # exactly $1.20
    assert_envelope(post(relay, key, seconds="4"), 429, "relay_budget_exceeded")
    assert metric_value(relay, 'relay_key_budget_remaining_usd{key="alice",period="day"}') == 0
    assert metric_value(relay, 'relay_key_budget_remaining_usd{key="alice",period="month"}') == pytest.approx(0.8)
    clock.now += 86400  # the next day: the day budget is fresh, the month has $0.80 left
    assert post(relay, key, seconds="8").status_code == 200
    refused = post(relay, key, seconds="4")
    assert_envelope(refused, 429, "relay_budget_exceeded")
    assert "per month" in refused.json()["error"]["message"]
    month_end = period_bounds("month", clock.now)[1]
    assert refused.headers["retry-after"] == str(int(month_end - clock.now))
    assert quota_hits(relay, "alice", "usd_per_day") == 1
    assert quota_hits(relay, "alice", "usd_per_month") == 1
    assert len(sandbox.requests()) == 3


def test_failed_jobs_release_and_completed_jobs_settle_once(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_day=1.6)
    failing = post(relay, key, prompt="a cat [fail]", seconds="8").json()
    ok = post(relay, key, seconds="8").json()
    assert_envelope(post(relay, key, seconds="4"), 429, "relay_budget_exceeded")  # $1.60 reserved
    wait_completed(relay, key, failing["id"])
    wait_completed(relay, key, ok["id"])
    for _ in range(3):  # more polls must not settle or count again
        relay.client.get(f"{V}/{ok['id']}", headers=auth(key))
    store = relay.state.store
    assert (store.video(failing["id"]).charge_state, store.video(ok["id"]).charge_state) == ("released", "settled")  # type: ignore[union-attr]
    assert metric_value(relay, 'relay_cost_usd_total{account="a",key="alice",model="sora-2"}') == pytest.approx(0.8)
    assert store.key_usage("alice", since=NOON - 3600, now=clock.now).usd == pytest.approx(0.8)
    assert post(relay, key, seconds="8").status_code == 200  # the failed job's $0.80 is free again


def test_upstream_refusal_releases_the_reservation(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_day=0.4, max_concurrent_creates=1)
    sandbox.fault(status=500, times=1)
    assert post(relay, key).status_code == 500
    assert relay.state.store.live_reservations(clock.now) == []
    assert post(relay, key).status_code == 200  # neither the budget nor the concurrency slot was kept


def test_concurrent_creates_limit(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, max_concurrent_creates=1)
    # Another create of this key is on its way upstream (in another worker, say).
    store = relay.state.store
    store.reserve(
        "res_other",
        key_name="alice",
        video_seconds=4,
        usd=0.4,
        now=clock.now,
        expires_at=clock.now + 60,
        periods=[],
        refuse=lambda *_: None,
    )
    refused = post(relay, key)
    assert_envelope(refused, 429, "relay_concurrency_limited")
    assert "x-should-retry" not in refused.headers
    assert quota_hits(relay, "alice", "concurrent_creates") == 1
    assert relay.client.get(V, headers=auth(key)).status_code == 200  # reads are not creates
    store.release_reservation("res_other")
    assert post(relay, key).status_code == 200
    clock.now += 1
    store.reserve(
        "res_dead", key_name="alice", video_seconds=4, usd=0.4, now=clock.now, expires_at=clock.now + 60, periods=[], refuse=lambda *_: None
    )
    clock.now += 61  # a dead worker's reservation lapses
    assert post(relay, key).status_code == 200


def test_allowed_models_and_sizes(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, models=("sora-2",), sizes=("720x1280", "1280x720"))
    body = assert_envelope(post(relay, key, model="sora-2-pro"), 403, "relay_model_not_allowed")
    assert body["param"] == "model"
    assert_envelope(post(relay, key, size="1792x1024"), 403, "relay_size_not_allowed")
    assert post(relay, key, size="1280x720").status_code == 200
    assert post(relay, key).status_code == 200  # the contract's defaults (sora-2, 720x1280) are checked too
    multipart = relay.client.post(V, files={"prompt": (None, "x"), "model": (None, "sora-2-pro")}, headers=auth(key))
    assert_envelope(multipart, 403, "relay_model_not_allowed")
    assert quota_hits(relay, "alice", "model") == 2 and quota_hits(relay, "alice", "size") == 1


def test_budget_needs_a_price(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_month=10)
    assert_envelope(post(relay, key, size="1792x1024"), 400, "relay_price_unknown")  # sora-2 has no price there
    relay.state.store.set_prices([("sora-2", "*", 0.2)], now=clock.now)
    relay.state.reload()
    assert post(relay, key, size="1792x1024").status_code == 200
    video = relay.state.store.list_videos("alice", after=None, limit=1, order="desc")[0][0]
    assert video.usd == pytest.approx(0.8)


def test_remix_is_priced_like_its_source(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_day=6.0)
    source = post(relay, key, model="sora-2-pro", seconds="12", size="1792x1024").json()  # 12 s x $0.50 = $6
    remix = relay.client.post(f"{V}/{source['id']}/remix", json={"prompt": "at night"}, headers=auth(key))
    assert_envelope(remix, 429, "relay_budget_exceeded")


def test_a_remix_cannot_claim_to_be_cheaper_than_its_source(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    # The relay cannot know whether an upstream honours a remix's own seconds, model or size, or
    # the source's: it books the dearer reading, and every model and size must be allowed.
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, usd_per_day=1.0, models=("sora-2",), sizes=("720x1280",))
    source = post(relay, key, seconds="8").json()  # $0.80 of the $1.00
    for claimed in ({"seconds": "0"}, {"seconds": "1"}, {}):
        remix = relay.client.post(f"{V}/{source['id']}/remix", json={"prompt": "again", **claimed}, headers=auth(key))
        assert_envelope(remix, 429, "relay_budget_exceeded")
    pro = relay.client.post(f"{V}/{source['id']}/remix", json={"prompt": "again", "model": "sora-2-pro"}, headers=auth(key))
    assert_envelope(pro, 403, "relay_model_not_allowed")
    assert post(relay, key, seconds="0").status_code == 429  # a zero-length create books the default 4 s ($0.40)


def test_unlimited_keys_touch_no_limit_tables(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key("bob")
    for _ in range(3):
        assert post(relay, key, seconds="8").status_code == 200
    store = relay.state.store
    assert run_sql(store, "SELECT count(*) FROM request_log")[0][0] == 0
    assert run_sql(store, "SELECT count(*) FROM reservations")[0][0] == 0
    usage = store.key_usage("bob", since=NOON - 60, now=clock.now)
    assert (usage.video_seconds, usage.usd) == (24, pytest.approx(2.4))  # charges are recorded all the same


def test_account_daily_cap(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api(), priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    relay.state.store.set_account_cap("a", 12)
    relay.state.reload()
    key = relay.issue_key("alice")
    first = post(relay, key, seconds="8").json()
    post(relay, key, seconds="4")
    post(relay, key, seconds="4")  # a has 12 s today: this goes to b
    assert tokens_seen(sandbox) == ["tok-a", "tok-a", "tok-b"]
    remix = relay.client.post(f"{V}/{first['id']}/remix", json={"prompt": "again"}, headers=auth(key))
    assert_envelope(remix, 429, "relay_account_capped")
    assert remix.headers["x-should-retry"] == "false"
    assert quota_hits(relay, "alice", "account_video_seconds_per_day") == 1
    assert relay.client.get(f"{V}/{first['id']}", headers=auth(key)).status_code == 200  # reads still work
    clock.now = period_bounds("day", NOON)[1] + 10
    post(relay, key, seconds="4")
    assert tokens_seen(sandbox)[-1] == "tok-a"  # a new UTC day: a is back


def test_all_accounts_capped_is_503(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    relay.state.store.set_account_cap("a", 4)
    relay.state.reload()
    key = relay.issue_key("alice")
    assert post(relay, key).status_code == 200
    refused = post(relay, key)
    assert_envelope(refused, 503, "no_upstream_account")
    assert int(refused.headers["retry-after"]) == 12 * 3600


def test_upstream_quota_headers_reach_metrics_and_the_scheduler(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(scheduler="most-remaining")
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    key = relay.issue_key("alice")
    sandbox.fault(
        token="tok-a",
        status=None,
        headers={"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1m0s"},
    )
    sandbox.fault(
        token="tok-b",
        status=None,
        headers={"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "90", "x-ratelimit-reset-requests": "1m0s"},
    )
    for _ in range(5):
        assert post(relay, key).status_code == 200
    # Least recently used would alternate; most-remaining sticks with b once it has seen both.
    assert tokens_seen(sandbox) == ["tok-a", "tok-b", "tok-b", "tok-b", "tok-b"]
    relay.flush()
    assert metric_value(relay, 'relay_account_ratelimit_remaining{account="a"}') == 3
    assert metric_value(relay, 'relay_account_ratelimit_remaining{account="b"}') == 90
    assert metric_value(relay, 'relay_account_ratelimit_limit{account="b"}') == 100
    quota = {q.account: q for q in relay.state.store.account_quotas()}
    assert quota["a"].resets_at is not None and quota["a"].resets_at == pytest.approx(time.time() + 60, abs=10)


def test_video_seconds_per_month_resets_with_the_month(relay: Relay, sandbox: Sandbox, clock: ManualClock) -> None:
    relay.add_account("a", sandbox.base_api())
    key = limited_key(relay, video_seconds_per_month=16)
    clock.now = dt.datetime(2026, 12, 31, 23, 0, tzinfo=dt.UTC).timestamp()
    assert post(relay, key, seconds="12").status_code == 200
    refused = post(relay, key, seconds="8")
    assert_envelope(refused, 429, "relay_video_seconds_exceeded")
    assert refused.headers["retry-after"] == "3600"  # an hour to the new year
    assert quota_hits(relay, "alice", "video_seconds_per_month") == 1
    clock.now += 3600
    assert post(relay, key, seconds="12").status_code == 200


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_period_bounds_contain_now_and_tile_the_calendar(now: float) -> None:
    for period in PERIODS:
        start, end = period_bounds(period, now)
        assert start <= now < end
        assert period_bounds(period, end)[0] == end  # the next period starts where this one ends
        begins = dt.datetime.fromtimestamp(start, tz=dt.UTC)
        assert (begins.hour, begins.minute, begins.second) == (0, 0, 0)
        assert period == "day" or begins.day == 1


@given(
    st.builds(
        Limits,
        requests_per_minute=st.none() | st.integers(1, 10**6),
        max_concurrent_creates=st.none() | st.integers(1, 1000),
        usd_per_day=st.none() | st.floats(0, 1e6),
        video_seconds_per_month=st.none() | st.floats(0, 1e7),
        models=st.none() | st.lists(st.sampled_from(["sora-2", "sora-2-pro", "x"]), min_size=1, unique=True).map(tuple),
    )
)
def test_limits_survive_storage(limits: Limits) -> None:
    assert Limits.from_json(limits.to_json()) == validate_limits(limits)


def test_request_slots_of_a_block_are_spent_once_and_only_while_fresh() -> None:
    from relay.limits import BLOCK_SPEND_SECONDS, RequestSlots, slots_per_claim

    assert slots_per_claim(60) == 1 and slots_per_claim(599) == 1
    assert slots_per_claim(600) == 1 and slots_per_claim(60_000) == 100
    slots = RequestSlots()
    assert not slots.take("alice", 100.0)
    slots.claimed("alice", 3, 100.0)  # one of the three is the claiming request's own
    assert slots.take("alice", 100.1) and slots.take("alice", 100.2)
    assert not slots.take("alice", 100.3)
    assert not slots.take("bob", 100.3)
    slots.claimed("alice", 5, 200.0)
    assert not slots.take("alice", 200.0 + BLOCK_SPEND_SECONDS)
    assert not slots.take("alice", 199.0)  # a clock that went back does not spend old slots
