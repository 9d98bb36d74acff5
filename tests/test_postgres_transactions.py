"""A write transaction on PostgreSQL: BEGIN and the writers' advisory lock go in one round trip,
and whatever ends it (a commit, a failed statement, a lock that never came) leaves its pooled
connection idle and the lock free."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from postgres_cluster import connect

from relay.records import StoreBug, StoreUnavailable, Video
from relay.store import Store
from relay.store.postgres import WRITE_LOCK, PoolSettings

# One connection, so the one traced is the one every call gets.
ONE_CONNECTION = PoolSettings(min_size=1, max_size=1, timeout_seconds=5.0)
NOW = 1_790_000_000.0


def _video(video_id: str) -> Video:
    return Video(
        id=video_id, account="acct", key_name="alice", kind="create", source_video_id=None, model="sora-2", seconds="4",
        billable_seconds=4.0, size="720x1280", status="queued", progress=0, created_at=NOW, recorded_at=NOW,
        finished_at=None, deleted_at=None, resource="{}", usd=0.4, charge_state="reserved", charged_at=NOW, watch_next_at=NOW + 5,
    )


def _store(url: str, **options: object) -> Store:
    store = Store(url, pool=ONE_CONNECTION, **options)  # type: ignore[arg-type]
    store.ensure_schema()
    return store


def _round_trips(store: Store, work: Callable[[], object]) -> list[str]:
    """What the client sent that waits for an answer while `work` ran (a simple query, or the Sync
    that ends extended queries, pipelined or not), read from libpq's protocol trace. (psycopg may
    follow a pipeline's Sync with a Flush while the answers are on their way: no wait of its own.)"""
    pool = store._db._pool  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as scratch:
        trace = Path(scratch) / "trace"
        with open(trace, "w") as sink:
            conn = pool.getconn()
            conn.pgconn.trace(sink.fileno())
            pool.putconn(conn)
            try:
                work()
            finally:
                conn = pool.getconn()
                conn.pgconn.untrace()
                pool.putconn(conn)
        # Lines read "<time>\tF\t<length>\tQuery\t \"BEGIN; ...\"": F for what the client sent.
        lines = [line.split("\t") for line in trace.read_text().splitlines()]
    return [fields[4].strip() if fields[3] == "Query" else "Sync" for fields in lines if fields[1] == "F" and fields[3] in ("Query", "Sync")]


def test_a_write_transaction_that_reads_nothing_is_one_round_trip(postgres_database_url: str) -> None:
    store = _store(postgres_database_url)

    def write() -> None:
        with store.transaction() as statements:
            statements.execute("UPDATE meta SET value = value WHERE key = ?", ("schema_version",))

    def read() -> None:
        with store.reading() as statements:
            statements.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",))

    try:
        # BEGIN, the writers' turn, the UPDATE and COMMIT, pipelined: one Sync at the end.
        for _ in range(7):  # past psycopg's threshold for preparing a statement: prepared ones too
            assert _round_trips(store, write) == ["Sync"]
        assert _round_trips(store, read) == ["Sync"]
    finally:
        store.close()


def test_a_jobs_record_waits_only_for_the_insert_and_the_commit(postgres_database_url: str) -> None:
    store = _store(postgres_database_url)
    try:
        for n in range(7):
            store.claim_budget_block(
                f"blk_{n}", key_name="alice", video_seconds=40.0, usd=4.0, now=NOW, expires_at=NOW + 60, periods=[],
                refuse=lambda *_: None, size=lambda _: 3, owner=None,
            )
            video = _video(f"video_{n}")
            sent = _round_trips(store, lambda: store.insert_video(video, block_share=(f"blk_{n}", 4.0, 0.4)))
            # The block's share, the row and whether it went in; then the charge totals and COMMIT.
            assert sent == ["Sync", "Sync"], sent
            recorded = store.video(video.id)
            assert recorded is not None and (recorded.account, recorded.key_name, recorded.usd) == ("acct", "alice", 0.4)
        # An id already held: the holder is read back, which costs its own round trip.
        assert store.insert_video(dataclasses.replace(_video("video_0"), account="other")).account == "acct"
    finally:
        store.close()


def _idle_and_unlocked(url: str, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The pooled connection took no transaction back with it, and nobody holds the writers' lock."""
    # The pool would roll back what a connection brought back, with a warning naming the server.
    assert not [record for record in caplog.records if record.name.startswith("psycopg")]
    with store.reading() as statements:
        assert statements.execute("SELECT now() = statement_timestamp() AS outside").fetchone()["outside"]
    with connect(url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (WRITE_LOCK,)).fetchone()[0] is True  # type: ignore[index]


def test_a_failed_statement_rolls_the_transaction_back(postgres_database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(postgres_database_url)
    try:
        with pytest.raises(StoreBug), store.transaction() as statements:
            statements.execute("UPDATE meta SET value = 'changed' WHERE key = ?", ("schema_version",))
            statements.execute("SELECT no_such_column FROM meta")
        with store.reading() as statements:
            assert statements.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",)).fetchone()["value"] != "changed"
        _idle_and_unlocked(postgres_database_url, store, caplog)
    finally:
        store.close()


def test_an_error_in_the_callers_code_rolls_back(postgres_database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(postgres_database_url)
    try:
        with pytest.raises(KeyError), store.transaction(durable=False) as statements:
            statements.execute("UPDATE meta SET value = 'changed' WHERE key = ?", ("schema_version",))
            raise KeyError("the caller's own failure")
        with store.reading() as statements:
            assert statements.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",)).fetchone()["value"] != "changed"
        _idle_and_unlocked(postgres_database_url, store, caplog)
    finally:
        store.close()


def test_a_writers_turn_that_never_comes_is_unavailable_and_leaves_nothing_open(
    postgres_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(postgres_database_url, busy_timeout_seconds=0.2)
    try:
        with connect(postgres_database_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
            with pytest.raises(StoreUnavailable, match="locked"), store.transaction() as statements:
                statements.execute("UPDATE meta SET value = 'changed' WHERE key = ?", ("schema_version",))
        # The holder is gone: the next write gets its turn on the same pooled connection.
        with store.transaction() as statements:
            statements.execute("UPDATE meta SET value = value WHERE key = ?", ("schema_version",))
        _idle_and_unlocked(postgres_database_url, store, caplog)
    finally:
        store.close()
