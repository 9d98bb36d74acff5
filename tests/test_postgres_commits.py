"""Which write transactions wait for PostgreSQL's WAL flush: a create's reservation and the other
admission writes do not, nor the job watcher's leases and next-poll times, a job's progress news
or the recorder's batches (they are safe to lose in a server crash); the job's record and what
settles it do."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from postgres_cluster import connect
from psycopg import sql

from relay.records import Video
from relay.store import Store


def _store(url: str) -> Store:
    # The test cluster turns synchronous_commit off for speed: this database turns it back on,
    # so that only the transactions that ask for it run without.
    with connect(url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        admin.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit TO on").format(sql.Identifier(name)))
    store = Store(url)
    store.ensure_schema()
    return store


def _setting(conn: Any) -> str:
    return str(conn.execute("SELECT current_setting('synchronous_commit') AS value").fetchone()["value"])


def test_a_transaction_that_need_not_be_durable_commits_without_waiting_for_the_flush(postgres_database_url: str) -> None:
    store = _store(postgres_database_url)
    try:
        with store.transaction() as conn:
            assert _setting(conn) == "on"
        with store.transaction(durable=False) as conn:
            assert _setting(conn) == "off"
        # The setting ends with its transaction: the pooled connection is back to the default.
        for _ in range(3):
            with store.transaction() as conn:
                assert _setting(conn) == "on"
            with store.reading() as conn:
                assert _setting(conn) == "on"
    finally:
        store.close()


def _noting_durability(store: Store) -> list[tuple[str, bool]]:
    """Each write transaction's synchronous_commit and what it asked for, as they happen."""
    asked: list[tuple[str, bool]] = []
    real_transaction = store._db.transaction

    @contextlib.contextmanager
    def noting(*, durable: bool = True) -> Iterator[Any]:
        with real_transaction(durable=durable) as conn:
            asked.append((_setting(conn), durable))
            yield conn

    store._db.transaction = noting  # type: ignore[method-assign]
    return asked


def _job(now: float) -> Video:
    return Video(
        id="video_1", account="a", key_name="alice", kind="create", source_video_id=None, model="sora-2", seconds="4",
        billable_seconds=4.0, size="720x1280", status="queued", progress=0, created_at=now, recorded_at=now,
        finished_at=None, deleted_at=None, resource="{}", usd=0.4, charge_state="reserved", charged_at=now,
        watch_next_at=now + 10,
    )  # fmt: skip


def test_admission_writes_skip_the_flush_and_the_job_record_does_not(postgres_database_url: str) -> None:
    store = _store(postgres_database_url)
    asked = _noting_durability(store)
    now = time.time()
    try:
        store.take_request_slots("alice", now=now, limit=10, window=60, wanted=1)
        store.reserve("res_1", key_name="alice", video_seconds=4, usd=0.4, now=now, expires_at=now + 60, periods=[], refuse=lambda *_: None)
        store.release_reservation("res_1")
        store.reserve("res_2", key_name="alice", video_seconds=4, usd=0.4, now=now, expires_at=now + 60, periods=[], refuse=lambda *_: None)
        assert asked == [("off", False)] * 4
        asked.clear()
        store.insert_video(_job(now), reservation_id="res_2")
        assert asked == [("on", True)]
        assert store.key_usage("alice", since=now - 60, now=now).in_flight == 0
    finally:
        store.close()


def test_the_watchers_leases_and_next_polls_skip_the_flush_and_a_settled_job_does_not(postgres_database_url: str) -> None:
    """The job watcher claims up to 16 jobs a round and gives back those its pace defers: on a
    disk that takes milliseconds to flush, each durable commit held every replica's writers'
    turn that long, and a create's record queued behind a round's worth (measured: creates of
    70-125 ms once a second with the database 0.5 ms away). A lost lease or next-poll time
    only has a job polled again sooner; what settles a job's charge stays durable."""
    store = _store(postgres_database_url)
    asked = _noting_durability(store)
    now = time.time()
    try:
        store.insert_video(_job(now - 20))
        asked.clear()
        (claimed,) = store.claim_jobs_to_watch("holder_1", per_account={"a": 6}, limit=16, now=now, lease_seconds=60, holders_now=now)
        store.watch_later(claimed.id, "holder_1", next_poll_at=now + 5, polled=True)
        store.update_video(claimed.id, status="in_progress", progress=50, expires_at=None, resource="{}", now=now)
        assert asked == [("off", False)] * 3
        asked.clear()
        store.update_video(claimed.id, status="completed", progress=100, expires_at=None, resource="{}", now=now)
        assert asked == [("on", True)]
        assert store.video(claimed.id).charge_state == "settled"  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_failed_job_is_recorded_durably(postgres_database_url: str) -> None:
    """A failure releases the job's reservation and writes its webhook event: not to be lost."""
    store = _store(postgres_database_url)
    asked = _noting_durability(store)
    now = time.time()
    try:
        store.insert_video(_job(now))
        asked.clear()
        assert store.update_video("video_1", status="failed", progress=0, expires_at=None, resource="{}", now=now)
        assert asked == [("on", True)]
        assert store.video("video_1").charge_state == "released"  # type: ignore[union-attr]
    finally:
        store.close()


def test_the_recorders_batches_skip_the_flush(postgres_database_url: str) -> None:
    """Outcomes, last-used times, session touches and quota readings move no charge: a server
    crash may take the last moments' batches, as a relay crash takes those still queued. Every
    replica's writers waited out each batch's flush, 20 times a second per process."""
    store = _store(postgres_database_url)
    asked = _noting_durability(store)
    now = time.time()
    try:
        store.write_batch([], {"key_1": now}, {"a": now}, {})
        assert asked == [("off", False)]
    finally:
        store.close()
