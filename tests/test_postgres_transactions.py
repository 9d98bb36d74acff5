"""A write transaction on PostgreSQL: BEGIN and the writers' advisory lock go in one round trip,
and whatever ends it (a commit, a failed statement, a lock that never came) leaves its pooled
connection idle and the lock free."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from postgres_cluster import connect

from relay.records import StoreBug, StoreUnavailable
from relay.store import Store
from relay.store.postgres import WRITE_LOCK, PoolSettings

# One connection, so the one traced is the one every call gets.
ONE_CONNECTION = PoolSettings(min_size=1, max_size=1, timeout_seconds=5.0)


def _store(url: str, **options: object) -> Store:
    store = Store(url, pool=ONE_CONNECTION, **options)  # type: ignore[arg-type]
    store.ensure_schema()
    return store


def _round_trips(store: Store, write: bool) -> list[str]:
    """What the client sent that waits for an answer (a simple query, or an extended one's Sync),
    read from libpq's protocol trace of the transaction."""
    pool = store._db._pool  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as scratch:
        trace = Path(scratch) / "trace"
        with open(trace, "w") as sink:
            conn = pool.getconn()
            conn.pgconn.trace(sink.fileno())
            pool.putconn(conn)
            try:
                if write:
                    with store.transaction() as statements:
                        statements.execute("UPDATE meta SET value = value WHERE key = ?", ("schema_version",))
                else:
                    with store.reading() as statements:
                        statements.execute("SELECT value FROM meta WHERE key = ?", ("schema_version",))
            finally:
                conn = pool.getconn()
                conn.pgconn.untrace()
                pool.putconn(conn)
        # Lines read "<time>\tF\t<length>\tQuery\t \"BEGIN; ...\"": F for what the client sent.
        lines = [line.split("\t") for line in trace.read_text().splitlines()]
    return [
        fields[4].strip() if fields[3] == "Query" else "Sync" for fields in lines if fields[1] == "F" and fields[3] in ("Query", "Sync")
    ]


def test_a_write_transaction_costs_its_statements_and_two_round_trips(postgres_database_url: str) -> None:
    store = _store(postgres_database_url)
    try:
        sent = _round_trips(store, write=True)
        assert len(sent) == 3, sent
        assert sent[0].startswith('"BEGIN; SELECT pg_advisory_xact_lock(') and sent[2] == '"COMMIT"'
        # A read is its statement alone.
        assert len(_round_trips(store, write=False)) == 1
    finally:
        store.close()


def _idle_and_unlocked(url: str, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The pooled connection took no transaction back with it, and nobody holds the writers' lock."""
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
