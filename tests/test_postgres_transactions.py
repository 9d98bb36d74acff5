"""A write transaction on PostgreSQL is pipelined: BEGIN, the writers' advisory lock and the
statements whose answers nobody reads share round trips with the next one read, and COMMIT with
what precedes it. Whatever ends it (a commit, a failed statement read or not, a lock that never
came) leaves its pooled connection idle, out of pipeline mode, and the lock free."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from postgres_cluster import connect

from relay.records import StoreBug, StoreUnavailable, Video
from relay.store import Store, postgres_statements
from relay.store.postgres import WRITE_LOCK, PoolSettings

# One connection, so the one traced is the one every call gets.
ONE_CONNECTION = PoolSettings(min_size=1, max_size=1, timeout_seconds=5.0)

_VIDEO = Video(
    id="video_1", account="acct", key_name="alice", kind="create", source_video_id=None, model="sora-2", seconds="4",
    billable_seconds=4.0, size="720x1280", status="queued", progress=0, created_at=0.0, recorded_at=0.0, finished_at=None,
    deleted_at=None, resource="{}", usd=0.4, charge_state="reserved", charged_at=0.0, watch_next_at=None,
)  # fmt: skip


def _store(url: str, **options: object) -> Store:
    store = Store(url, pool=ONE_CONNECTION, **options)  # type: ignore[arg-type]
    store.ensure_schema()
    return store


def _round_trips(store: Store, work: Callable[[], object]) -> list[str]:
    """What the client sent that waits for an answer (a simple query, or an extended query's
    Sync or Flush) while `work` ran, read from libpq's protocol trace."""
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
        # Lines read "<time>\tF\t<length>\tQuery\t \"ROLLBACK\"": F for what the client sent.
        lines = [line.split("\t") for line in trace.read_text().splitlines()]
    return [
        fields[4].strip() if fields[3] == "Query" else fields[3]
        for fields in lines
        if fields[1] == "F" and fields[3] in ("Query", "Sync", "Flush")
    ]


def _one_write(store: Store) -> None:
    with store.transaction() as statements:
        statements.execute("UPDATE meta SET value = value WHERE key = ?", ("schema_version",))


def _one_read(store: Store) -> None:
    with store.reading() as statements:
        statements.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",))


def test_a_write_transaction_that_reads_nothing_is_one_round_trip(postgres_database_url: str) -> None:
    store = _store(postgres_database_url)
    try:
        # BEGIN, the writers' lock, the statement and COMMIT go together (pipelined), and so does a read.
        assert _round_trips(store, lambda: _one_write(store)) == ["Sync"]
        assert _round_trips(store, lambda: _one_read(store)) == ["Sync"]
    finally:
        store.close()


def test_a_jobs_record_is_one_round_trip(postgres_database_url: str) -> None:
    """BEGIN, the writers' lock, the block's share, the charge's totals, the videos row and
    COMMIT, sent together, the row's count read with the commit's answer: five round trips
    before the transaction was pipelined, two while the count was read before the charge."""
    store = _store(postgres_database_url)
    try:
        now = time.time()
        store.claim_budget_block(
            "blk_1", key_name="alice", video_seconds=4.0, usd=0.4, now=now, expires_at=now + 600,
            periods=[], refuse=lambda *_: None, size=lambda _: 10, owner=None,
        )  # fmt: skip

        def record(video_id: str) -> None:
            store.insert_video(
                replace(_VIDEO, id=video_id, created_at=now, recorded_at=now, charged_at=now), block_share=("blk_1", 4.0, 0.4)
            )

        record("video_first")
        assert _round_trips(store, lambda: record("video_second")) == ["Sync"]
        # A replayed id: the charge is not counted again, and the first record is the answer.
        replayed = replace(_VIDEO, id="video_second", key_name="bob", created_at=now, recorded_at=now + 1, charged_at=now)
        assert store.insert_video(replayed, block_share=("blk_1", 4.0, 0.4)).key_name == "alice"
        with store.reading() as statements:
            totals = statements.execute("SELECT name, video_seconds FROM charge_totals WHERE period = 'day' ORDER BY name").fetchall()
        assert [(row["name"], row["video_seconds"]) for row in totals] == [("acct", 8.0), ("alice", 8.0)]

        # The job watcher's news of progress reads nothing; a final status reads what it moves.
        def news(status: str) -> bool:
            return store.update_video("video_second", status=status, progress=50, expires_at=None, resource="{}", now=now + 1)

        assert _round_trips(store, lambda: news("in_progress")) == ["Sync"]
        assert store.video("video_second").status == "in_progress"  # type: ignore[union-attr]
        assert len(_round_trips(store, lambda: news("completed"))) > 1
        assert store.video("video_second").charge_state == "settled"  # type: ignore[union-attr]
        assert store.video("video_second") is not None
        with store.reading() as statements:
            left = statements.execute("SELECT video_seconds FROM reservations WHERE id = ?", ("blk_1",)).fetchone()
        assert left["video_seconds"] == pytest.approx(28.0)  # the replay's share was taken too
    finally:
        store.close()


def _out_of_pipeline_mode(store: Store) -> None:
    pool = store._db._pool  # type: ignore[attr-defined]
    conn = pool.getconn()
    try:
        assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    finally:
        pool.putconn(conn)


def _unchanged(store: Store) -> None:
    """What the test's failed transaction wrote did not stay."""
    with store.reading() as statements:
        assert statements.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",)).fetchone()["value"] != "changed"


def _idle_and_unlocked(url: str, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The pooled connection took no transaction back with it (nor pipeline mode), and nobody holds
    the writers' lock."""
    _out_of_pipeline_mode(store)
    # The pool would roll back what a connection brought back, with a warning naming the server.
    assert not [record for record in caplog.records if record.name.startswith("psycopg")]
    with connect(url, autocommit=True) as other:
        # The server's own view of the store's connections: none is left inside a transaction.
        states = other.execute("SELECT state FROM pg_stat_activity WHERE application_name = 'video-relay'").fetchall()
        assert states and {state for (state,) in states} == {"idle"}, states
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (WRITE_LOCK,)).fetchone()[0] is True  # type: ignore[index]


def test_a_failed_statement_rolls_the_transaction_back(postgres_database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(postgres_database_url)
    try:
        # Its answer read by nobody: the COMMIT reports it, and nothing of the transaction stays.
        with pytest.raises(StoreBug), store.transaction() as statements:
            statements.execute("UPDATE meta SET value = 'changed' WHERE key = ?", ("schema_version",))
            statements.execute("SELECT no_such_column FROM meta")
        _unchanged(store)
        _idle_and_unlocked(postgres_database_url, store, caplog)
    finally:
        store.close()


def test_an_error_in_the_callers_code_rolls_back(postgres_database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(postgres_database_url)
    try:
        with pytest.raises(KeyError), store.transaction(durable=False) as statements:
            statements.execute("UPDATE meta SET value = 'changed' WHERE key = ?", ("schema_version",))
            raise KeyError("the caller's own failure")
        _unchanged(store)
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


def test_a_failure_fails_every_later_read_while_earlier_answers_stand(postgres_database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(postgres_database_url)
    try:
        with pytest.raises(StoreBug), store.transaction() as statements:
            before = statements.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",))
            statements.execute("SELECT no_such_column FROM meta")
            after = statements.execute("UPDATE meta SET value = 'changed' WHERE key = ?", ("schema_version",))
            assert before.fetchone()["value"] != "changed"
            after.rowcount  # noqa: B018 (reading it raises)
        _unchanged(store)
        _idle_and_unlocked(postgres_database_url, store, caplog)
    finally:
        store.close()


@pytest.mark.parametrize("in_a_transaction", [True, False])
def test_a_batch_longer_than_the_pipeline_is_written_whole_or_not_at_all(postgres_database_url: str, in_a_transaction: bool) -> None:
    store = _store(postgres_database_url)
    rows = 3 * postgres_statements.PIPELINE_DEPTH + 7
    try:
        with store.transaction() as statements:
            statements.execute("CREATE TABLE scratch (id bigint PRIMARY KEY)")

        def write(ids: list[tuple[int]]) -> None:
            if in_a_transaction:
                with store.transaction() as statements:
                    statements.executemany("INSERT INTO scratch (id) VALUES (?)", ids)
            else:
                with store.reading() as statements:
                    statements.executemany("INSERT INTO scratch (id) VALUES (?)", ids)

        def count() -> int:
            with store.reading() as statements:
                return int(statements.execute("SELECT count(*) AS n FROM scratch").fetchone()["n"])

        write([(n,) for n in range(rows)])
        assert count() == rows
        # A duplicate past the first pipeline's worth: none of the batch stays.
        with pytest.raises(StoreBug):
            write([(rows + n,) for n in range(rows)] + [(0,)] + [(2 * rows + n,) for n in range(rows)])
        assert count() == rows
        _out_of_pipeline_mode(store)
    finally:
        store.close()


def test_a_connection_lost_mid_transaction_is_unavailable_and_replaced(postgres_database_url: str) -> None:
    store = _store(postgres_database_url)
    try:
        with pytest.raises(StoreUnavailable), store.transaction() as statements:
            pid = statements.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
            with connect(postgres_database_url, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (pid,))
            statements.execute("UPDATE meta SET value = value WHERE key = ?", ("schema_version",)).rowcount  # noqa: B018
        # The pool discards the dead connection and opens another.
        deadline = time.monotonic() + 10
        while True:
            try:
                _one_write(store)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        _out_of_pipeline_mode(store)
    finally:
        store.close()


def test_waiting_for_the_server_lets_other_threads_run(postgres_database_url: str) -> None:
    """libpq's own wait for a pipeline's answer holds the GIL: the event loop would stop while a
    transaction waits for the writers' turn. The store waits in poll(2) instead."""
    store = _store(postgres_database_url, busy_timeout_seconds=5.0)
    try:
        with connect(postgres_database_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
            written: list[bool] = []
            writer = threading.Thread(target=lambda: (_one_write(store), written.append(True)))
            writer.start()
            for _ in range(50):
                time.sleep(0.01)
            # This thread ran while the writer waited: held by its wait, it would only get here
            # once the lock timeout had failed the writer.
            assert writer.is_alive() and not written
            holder.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))
        writer.join(10)
        assert written == [True]
    finally:
        store.close()
