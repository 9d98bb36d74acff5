"""Budgets read running totals of charges (relay.store.charges), which must always equal the sum
of the jobs' charges they replace, whatever happens to the jobs: recorded, completed, failed,
given up by the watcher, completed after being given up; across day and month boundaries."""

from __future__ import annotations

import datetime as dt

from conftest import run_sql
from hypothesis import HealthCheck, given, settings, strategies as st

from relay.limits import period_bounds
from relay.records import Video
from relay.store import Store

BACKENDS = ("sqlite", "postgresql")
# Just before midnight at the end of a month: jobs land on both sides of a day and month boundary.
EDGE = dt.datetime(2026, 11, 30, 23, 59, 0, tzinfo=dt.UTC).timestamp()
OWNER = "watcher-1"


def job(number: int, *, key: str, account: str, charged_at: float, seconds: float, usd: float) -> Video:
    return Video(
        id=f"video_{number}",
        account=account,
        key_name=key,
        kind="create",
        source_video_id=None,
        model="sora-2",
        seconds=str(seconds),
        billable_seconds=seconds,
        size="720x1280",
        status="queued",
        progress=None,
        created_at=charged_at,
        recorded_at=charged_at,
        finished_at=None,
        deleted_at=None,
        resource="{}",
        usd=usd,
        charge_state="reserved",
        charged_at=charged_at,
        watch_next_at=charged_at,
    )


def scanned(store: Store, column: str, name: str, since: float, until: float) -> tuple[float, float]:
    """The charges as budgets counted them before the totals: a sum over the jobs."""
    (row,) = run_sql(
        store,
        f"SELECT coalesce(sum(billable_seconds), 0), coalesce(sum(usd), 0) FROM videos"
        f" WHERE {column} = ? AND charged_at >= ? AND charged_at < ? AND charge_state IN ('reserved', 'settled')",
        (name, since, until),
    )
    return round(float(row[0]), 6), round(float(row[1]), 6)


def total(store: Store, subject: str, name: str, period: str, since: float) -> tuple[float, float]:
    rows = run_sql(
        store,
        "SELECT video_seconds, usd FROM charge_totals WHERE subject = ? AND name = ? AND period = ? AND starts_at = ?",
        (subject, name, period, since),
    )
    return (round(float(rows[0][0]), 6), round(float(rows[0][1]), 6)) if rows else (0.0, 0.0)


def assert_totals_match(store: Store, now: float) -> None:
    for period in ("day", "month"):
        # The period before the boundary, and the one now.
        for moment in (EDGE, now):
            since, until = period_bounds(period, moment)
            for subject, column, names in (("key", "key_name", ("alice", "bob")), ("account", "account", ("a", "b"))):
                for name in names:
                    assert total(store, subject, name, period, since) == scanned(store, column, name, since, until)
        # What a budget check reads in the current period: the same, through the store's usage.
        since, until = period_bounds(period, now)
        for key in ("alice", "bob"):
            usage = store.key_usage(key, since=since, now=now)
            assert (round(usage.video_seconds, 6), round(usage.usd, 6)) == scanned(store, "key_name", key, since, until)
        for account in ("a", "b"):
            usage = store.account_usage(account, since=since, now=now)
            assert (round(usage.video_seconds, 6), round(usage.usd, 6)) == scanned(store, "account", account, since, until)


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["record", "complete", "fail", "give_up", "progress"]),
        st.integers(0, 7),  # which job
        st.sampled_from(["alice", "bob"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 240),  # seconds after EDGE: across midnight, into a new month
        st.sampled_from([4.0, 8.0, 12.0]),
    ),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_totals_equal_the_sum_of_the_jobs_charges(store: Store, steps: list[tuple[str, int, str, str, int, float]]) -> None:
    run_sql(store, "DELETE FROM videos")
    run_sql(store, "DELETE FROM charge_totals")
    now = EDGE
    for action, number, key, account, offset, seconds in steps:
        now = EDGE + offset
        video_id = f"video_{number}"
        if action == "record":
            store.insert_video(job(number, key=key, account=account, charged_at=now, seconds=seconds, usd=seconds * 0.1))
        elif action == "give_up":
            claimed = store.claim_jobs_to_watch(
                OWNER, per_account={"a": 100, "b": 100}, limit=100, now=now + 10_000, lease_seconds=60, holders_now=now
            )
            if any(video.id == video_id for video in claimed):
                store.stop_watching(video_id, OWNER, reason="max_age")
            for video in claimed:
                if video.id != video_id:
                    store.watch_later(video.id, OWNER, next_poll_at=now, polled=False)
        else:
            status = {"complete": "completed", "fail": "failed", "progress": "in_progress"}[action]
            store.update_video(video_id, status=status, progress=None, expires_at=None, resource="{}", now=now)
    assert_totals_match(store, now)


def test_a_replayed_id_keeps_its_first_record_and_is_charged_once(store: Store) -> None:
    """The charge goes in before the job's row, on the condition that no job holds the id yet."""
    run_sql(store, "DELETE FROM videos")
    run_sql(store, "DELETE FROM charge_totals")
    now = EDGE + 120
    first = store.insert_video(job(1, key="alice", account="a", charged_at=now, seconds=4.0, usd=0.4))
    again = store.insert_video(job(1, key="bob", account="a", charged_at=now, seconds=8.0, usd=0.8))
    assert (first.key_name, again.key_name, again.billable_seconds) == ("alice", "alice", 4.0)
    since = period_bounds("day", now)[0]
    assert total(store, "key", "alice", "day", since) == (4.0, 0.4)
    assert total(store, "key", "bob", "day", since) == (0.0, 0.0)
    assert total(store, "account", "a", "day", since) == (4.0, 0.4)
    assert_totals_match(store, now)
