"""The job watcher's claims in the database: each account's due jobs up to the polls it has to
spare, the jobs of accounts no longer in the pool, and a claim's work bounded by what it claims
(as is the count of jobs in flight, by the jobs unfinished)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_sql
from hypothesis import HealthCheck, given, settings, strategies as st

from relay.store import Store, Video
from relay.store.sqlite import SQLiteBackend

T0 = 1_800_000_000.0
NOW = T0 + 1_000.0
BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


def job(video_id: str, account: str, due: float | None) -> Video:
    return Video(
        id=video_id, account=account, key_name="alice", kind="create", source_video_id=None, model="sora-2",
        seconds="4", billable_seconds=4.0, size="720x1280", status="in_progress", progress=0, created_at=T0,
        recorded_at=T0, finished_at=None, deleted_at=None, resource="{}", watch_next_at=due,
    )  # fmt: skip


def claim(store: Store, per_account: dict[str, int], limit: int = 16, owner: str = "worker-1") -> list[str]:
    """What `owner`, a live process, claims now."""
    live_holder(store, owner)
    claimed = store.claim_jobs_to_watch(owner, per_account=per_account, limit=limit, now=NOW, lease_seconds=60, holders_now=NOW)
    return [video.id for video in claimed]


def orphans(store: Store, accounts: list[str], limit: int = 16) -> list[str]:
    live_holder(store, "worker-1")
    claimed = store.claim_orphaned_jobs("worker-1", accounts=accounts, limit=limit, now=NOW, lease_seconds=60, holders_now=NOW)
    return [video.id for video in claimed]


def live_holder(store: Store, holder_id: str) -> None:
    run_sql(
        store,
        "INSERT INTO holders (id, host, hostname, pid, process_started, started_at, renewed_at, expires_at)"
        " VALUES (?, 'host', 'host', 1, 0, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (holder_id, T0, NOW, NOW + 60),
    )


@BOTH
def test_each_account_gives_up_to_its_spare_polls_and_the_claim_takes_the_oldest_due(store: Store) -> None:
    for n in range(5):
        store.insert_video(job(f"video_a{n}", "a", T0 + 10 + n))
        store.insert_video(job(f"video_b{n}", "b", T0 + 20 + n))
        store.insert_video(job(f"video_c{n}", "c", T0 + n))  # the oldest, but c has no poll to spare
    assert claim(store, {"a": 2, "b": 3, "c": 0}) == ["video_a0", "video_a1", "video_b0", "video_b1", "video_b2"]
    # Those are leased now; of the rest, the limit keeps the oldest due, whichever account.
    assert claim(store, {"a": 5, "b": 5}, limit=3, owner="worker-2") == ["video_a2", "video_a3", "video_a4"]
    # An account not named has no spare polls either.
    assert claim(store, {"b": 1}, owner="worker-3") == ["video_b3"]
    assert claim(store, {}) == [] and claim(store, {"a": 5}, limit=0) == []
    leased = {row["id"]: row["watch_owner"] for row in run_sql(store, "SELECT id, watch_owner FROM videos WHERE watch_owner IS NOT NULL")}
    assert leased == {
        **{f"video_a{n}": "worker-1" for n in (0, 1)},
        **{f"video_b{n}": "worker-1" for n in (0, 1, 2)},
        **{f"video_a{n}": "worker-2" for n in (2, 3, 4)},
        "video_b3": "worker-3",
    }


@BOTH
def test_only_jobs_due_unfinished_undeleted_and_not_leased_to_a_live_process_are_claimed(store: Store) -> None:
    store.insert_video(job("video_due", "a", NOW - 5))
    store.insert_video(job("video_later", "a", NOW + 5))
    store.insert_video(job("video_unwatched", "a", None))
    store.insert_video(job("video_deleted", "a", NOW - 4))
    store.mark_video_deleted("video_deleted", NOW)
    store.insert_video(job("video_done", "a", NOW - 3))
    store.update_video("video_done", status="completed", progress=100, expires_at=None, resource="{}", now=NOW)
    store.insert_video(job("video_leased", "a", NOW - 2))
    store.insert_video(job("video_lease_ran_out", "a", NOW - 1))
    store.insert_video(job("video_holder_gone", "a", NOW - 0.5))
    live_holder(store, "live")
    run_sql(store, "UPDATE videos SET watch_owner = 'live', watch_until = ? WHERE id = 'video_leased'", (NOW + 30,))
    run_sql(store, "UPDATE videos SET watch_owner = 'live', watch_until = ? WHERE id = 'video_lease_ran_out'", (NOW - 1,))
    run_sql(store, "UPDATE videos SET watch_owner = 'dead', watch_until = ? WHERE id = 'video_holder_gone'", (NOW + 30,))
    assert claim(store, {"a": 16}) == ["video_due", "video_lease_ran_out", "video_holder_gone"]


@BOTH
def test_orphans_are_the_watched_jobs_of_accounts_not_in_the_pool_due_or_not(store: Store) -> None:
    store.insert_video(job("video_kept", "a", NOW - 3))
    store.insert_video(job("video_gone_1", "gone", NOW - 2))
    store.insert_video(job("video_gone_2", "also-gone", NOW - 1))
    store.insert_video(job("video_gone_later", "gone", NOW + 5))  # no account will ever claim it when due
    store.insert_video(job("video_gone_unwatched", "gone", None))
    assert orphans(store, ["a", "b"], limit=1) == ["video_gone_1"]
    assert orphans(store, ["a", "b"]) == ["video_gone_2", "video_gone_later"]  # the first is leased now
    assert orphans(store, []) == ["video_kept"]  # no account left: every job watched is an orphan
    assert claim(store, {"a": 5, "gone": 5}) == []


@BOTH
def test_a_claim_of_many_accounts_takes_each_ones_share(store: Store) -> None:
    # 40 accounts: the statement is padded to 64 parts; 3 accounts to 4.
    for n in range(40):
        store.insert_video(job(f"video_{n:02d}_0", f"acct-{n:02d}", T0 + n))
        store.insert_video(job(f"video_{n:02d}_1", f"acct-{n:02d}", T0 + 100 + n))
    claimed = claim(store, {f"acct-{n:02d}": 1 for n in range(40)}, limit=64)
    assert claimed == [f"video_{n:02d}_0" for n in range(40)]
    assert claim(store, {f"acct-{n:02d}": 1 for n in range(3)}) == [f"video_{n:02d}_1" for n in range(3)]


def _counting_vm_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """SQLite's virtual-machine steps (in hundreds) on every connection the store opens from now:
    the work a statement does, the same on any machine, however busy."""
    steps = [0]
    connect = SQLiteBackend._connect

    def counting(self: SQLiteBackend, **options: Any) -> Any:
        conn = connect(self, **options)

        def step() -> int:
            steps[0] += 1
            return 0

        conn.set_progress_handler(step, 100)
        return conn

    monkeypatch.setattr(SQLiteBackend, "_connect", counting)
    return steps


def _steps_by_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fill: Callable[[Store, int], None], measured: Callable[[Store], None]
) -> dict[int, int]:
    """The VM steps `measured` takes on a SQLite database `fill` gave 20, and then 2,000, of something."""
    steps = _counting_vm_steps(monkeypatch)
    work = {}
    for size in (20, 2_000):
        store = Store(tmp_path / f"size-{size}.db")
        store.ensure_schema()
        try:
            fill(store, size)
            steps[0] = 0
            measured(store)
            work[size] = steps[0]
        finally:
            store.close()
    return work


def test_a_claims_work_does_not_grow_with_the_backlog_of_an_account_with_no_poll_to_spare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a backlog on one account, the claim used to read every one of its due jobs each
    round (a 10,000-job backlog: about 9 ms, most of it in the write transaction)."""

    def fill(store: Store, backlog: int) -> None:
        for n in range(backlog):
            store.insert_video(job(f"video_busy_{n}", "busy", T0 + n * 0.01))
        store.insert_video(job("video_quiet", "quiet", NOW - 1))
        store.insert_video(job("video_quiet_later", "quiet", NOW + 10))

    def claims(store: Store) -> None:
        assert claim(store, {"busy": 0, "quiet": 6}) == ["video_quiet"]
        assert claim(store, {"busy": 0, "quiet": 6}, owner="worker-2") == []

    work = _steps_by_size(tmp_path, monkeypatch, fill, claims)
    assert work[2_000] < 2 * work[20], work


def test_counting_the_jobs_in_flight_reads_the_unfinished_ones_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scrape counts them; it used to read every job the relay ever recorded."""

    def fill(store: Store, finished: int) -> None:
        for n in range(finished):
            store.insert_video(job(f"video_done_{n}", "a", None))
            store.update_video(f"video_done_{n}", status="completed", progress=100, expires_at=None, resource="{}", now=NOW)
        store.insert_video(job("video_running", "a", NOW + 5))

    def count(store: Store) -> None:
        assert store.jobs_in_flight() == {"in_progress": 1}

    work = _steps_by_size(tmp_path, monkeypatch, fill, count)
    assert work[2_000] < 2 * work[20] + 2, work


_JOB = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.one_of(st.none(), st.floats(NOW - 100, NOW + 100)),  # when due (None: not watched)
    st.sampled_from(["in_progress", "in_progress", "completed", "deleted", "leased"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    jobs=st.lists(_JOB, max_size=30),
    spare=st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 6)),
    limit=st.integers(0, 20),
)
def test_a_claim_is_each_accounts_oldest_claimable_up_to_its_spare_then_the_oldest_up_to_the_limit(
    tmp_path: Path, jobs: list[tuple[str, float | None, str]], spare: dict[str, int], limit: int
) -> None:
    store = Store(tmp_path / "claims.db")
    store.ensure_schema()
    try:
        run_sql(store, "DELETE FROM videos")
        live_holder(store, "live")
        claimable: dict[str, list[tuple[float, str]]] = {}
        for n, (account, due, shape) in enumerate(jobs):
            video_id = f"video_{n:02d}"
            due = None if due is None else due + n * 1e-6  # no two alike: the order is the model's
            store.insert_video(job(video_id, account, due))
            if shape == "completed":
                store.update_video(video_id, status="completed", progress=100, expires_at=None, resource="{}", now=NOW)
            elif shape == "deleted":
                store.mark_video_deleted(video_id, NOW)
            elif shape == "leased":
                run_sql(store, "UPDATE videos SET watch_owner = 'live', watch_until = ? WHERE id = ?", (NOW + 30, video_id))
            elif due is not None and due <= NOW:
                claimable.setdefault(account, []).append((due, video_id))
        shares = [entry for account, n in spare.items() for entry in sorted(claimable.get(account, []))[:n]]
        expected = [video_id for _, video_id in sorted(shares)[:limit]]
        assert claim(store, spare, limit=limit) == expected
    finally:
        store.close()
