"""The store's statements on PostgreSQL go to libpq directly (relay/store/postgres_statements.py):
values come back as psycopg's cursors give them, outside a transaction and pipelined in one; a
statement is prepared on its second run and stays prepared through rollbacks, and a connection
holds a bounded number of them. (How a pipelined transaction ends: test_postgres_transactions.py.)"""

from __future__ import annotations

import math
from collections.abc import Iterator

import psycopg
import pytest
from postgres_cluster import connect

from relay.records import StoreBug, StoreUnavailable
from relay.store import Store, postgres_statements
from relay.store.postgres import PoolSettings

ONE_CONNECTION = PoolSettings(min_size=1, max_size=1, timeout_seconds=5.0)


@pytest.fixture
def store(postgres_database_url: str) -> Iterator[Store]:
    made = Store(postgres_database_url, pool=ONE_CONNECTION)
    made.ensure_schema()
    with made.transaction() as conn:
        conn.execute("CREATE TABLE scratch (id bigint PRIMARY KEY, t text, f double precision, b bytea, flag boolean, n bigint)")
    try:
        yield made
    finally:
        made.close()


def _prepared(store: Store) -> dict[str, str]:
    """The connection's prepared statements but this query: name -> statement."""
    with store.reading() as conn:
        rows = conn.execute("SELECT name, statement FROM pg_prepared_statements WHERE statement NOT LIKE ?", ("%pg_prepared_statements%",))
        return {row["name"]: row["statement"] for row in rows}


VALUES = [
    (1, "plain", 1.5, b"\x00\x01\xff", True, 2**62),
    (2, "ünïcödé ☃ and 'quotes' and \\ backslash", -0.0, b"", False, -(2**62)),
    (3, "", math.inf, None, None, None),
    (4, None, None, b"x" * 70_000, None, 0),
]


def test_values_come_back_as_psycopg_gives_them(store: Store, postgres_database_url: str) -> None:
    with store.transaction() as conn:
        for row in VALUES:
            assert conn.execute("INSERT INTO scratch (id, t, f, b, flag, n) VALUES (?, ?, ?, ?, ?, ?)", row).rowcount == 1
    with store.reading() as conn:
        assert conn.execute("UPDATE scratch SET n = n + ? WHERE id > ?", (1, 2)).rowcount == 2  # NULL + 1 stays NULL
        ours = [tuple(row) for row in conn.execute("SELECT id, t, f, b, flag, n FROM scratch ORDER BY id")]
        assert conn.execute("SELECT id FROM scratch WHERE f = ? AND t = ?", (1.5, "plain")).fetchone()["id"] == 1
        nothing = conn.execute("SELECT id FROM scratch WHERE id = ?", (99,))
        assert nothing.fetchone() is None and nothing.description == ("id",)
    with store.transaction() as conn:  # pipelined
        in_a_transaction = [tuple(row) for row in conn.execute("SELECT id, t, f, b, flag, n FROM scratch ORDER BY id")]
        nothing = conn.execute("SELECT id FROM scratch WHERE id = ?", (99,))
        assert nothing.fetchone() is None and nothing.description == ("id",)
    with connect(postgres_database_url) as other:
        theirs = other.execute("SELECT id, t, f, b, flag, n FROM scratch ORDER BY id").fetchall()
    assert ours == theirs == in_a_transaction
    assert [row[:3] for row in ours[:3]] == [row[:3] for row in VALUES[:3]]
    assert ours[3][5] == 1 and ours[2][5] is None


def test_a_statement_is_prepared_on_its_second_run_and_stays_prepared_through_rollbacks(store: Store) -> None:
    lookup = "SELECT t FROM scratch WHERE id = ?"

    def prepared_lookups() -> list[str]:
        return [name for name, statement in _prepared(store).items() if statement == "SELECT t FROM scratch WHERE id = $1"]

    with store.reading() as conn:
        conn.execute(lookup, (1,))
    assert prepared_lookups() == []
    with store.reading() as conn:
        conn.execute(lookup, (1,))
    (name,) = prepared_lookups()
    assert name.startswith("relay_")
    # executemany (the recorder's batches) prepares its statement from its second row: the
    # server plans it once, not once per row.
    for n in range(3):
        with store.transaction() as conn:
            conn.executemany("INSERT INTO scratch (id, t) VALUES (?, ?)", [(100 + 2 * n, "a"), (101 + 2 * n, "b")])
    assert [statement for statement in _prepared(store).values() if statement.startswith("INSERT INTO scratch")]
    with pytest.raises(StoreBug), store.transaction() as conn:
        conn.execute(lookup, (100,))
        conn.execute("SELECT no_such_column FROM scratch")
    with store.reading() as conn:
        assert conn.execute(lookup, (101,)).fetchone()["t"] == "b"
    assert prepared_lookups() == [name]


def test_a_connection_whose_prepared_statements_were_dropped_forgets_them(store: Store) -> None:
    """psycopg runs DEALLOCATE ALL after a ROLLBACK it sees itself, once it has prepared something."""
    lookup = "SELECT t FROM scratch WHERE id = ?"
    with store.transaction() as conn:
        conn.execute("INSERT INTO scratch (id, t) VALUES (?, ?)", (1, "one"))
    pool = store._db._pool  # type: ignore[attr-defined]

    def dropped(by_psycopg: bool) -> None:
        conn = pool.getconn()
        if by_psycopg:
            with conn.transaction():  # psycopg prepares executemany's statement, then rolls back
                conn.prepare_threshold = 0
                conn.cursor().executemany("UPDATE scratch SET t = t WHERE id = %s", [(1,)])
                conn.prepare_threshold = None
                raise psycopg.Rollback()
        else:
            conn.pgconn.exec_(b"DEALLOCATE ALL")
        pool.putconn(conn)
        assert not _prepared(store)

    for _ in range(2):
        with store.reading() as statements:
            statements.execute(lookup, (1,))
    dropped(by_psycopg=True)
    with store.reading() as statements:  # outside a transaction: run unprepared, and right
        assert statements.execute(lookup, (1,)).fetchone()["t"] == "one"
    for _ in range(2):  # and prepared again on its second run
        with store.reading() as statements:
            assert statements.execute(lookup, (1,)).fetchone()["t"] == "one"
    assert "SELECT t FROM scratch WHERE id = $1" in _prepared(store).values()
    dropped(by_psycopg=False)
    # Inside a transaction the lost statement cannot be run again: the caller gets a 503's error.
    with pytest.raises(StoreUnavailable, match="prepared statements"), store.transaction() as statements:
        statements.execute(lookup, (1,))
    with store.reading() as statements:
        assert statements.execute(lookup, (1,)).fetchone()["t"] == "one"


def test_a_prepared_select_of_a_table_that_gained_a_column_is_prepared_again(store: Store, postgres_database_url: str) -> None:
    """A newer release's migration adds a column while this one runs: the server refuses a
    prepared `SELECT *` of that table ("cached plan must not change result type")."""
    lookup = "SELECT * FROM scratch WHERE id = ?"
    with store.transaction() as conn:
        conn.execute("INSERT INTO scratch (id, t) VALUES (?, ?)", (1, "one"))

    def add_column(name: str) -> None:
        with connect(postgres_database_url, autocommit=True) as other:
            other.execute(f"ALTER TABLE scratch ADD COLUMN {name} text DEFAULT 'new'")

    for _ in range(2):
        with store.reading() as statements:
            statements.execute(lookup, (1,))
    assert "SELECT * FROM scratch WHERE id = $1" in _prepared(store).values()
    add_column("added")
    with store.reading() as statements:  # outside a transaction: run unprepared, with the new column
        assert dict(statements.execute(lookup, (1,)).fetchone())["added"] == "new"
    assert not _prepared(store)  # the stale statements deallocated
    for _ in range(2):  # and prepared again on its second run
        with store.reading() as statements:
            assert statements.execute(lookup, (1,)).fetchone()["added"] == "new"
    assert "SELECT * FROM scratch WHERE id = $1" in _prepared(store).values()
    add_column("added_again")
    # Inside a transaction it cannot be run again: the caller gets a 503's error, once.
    with pytest.raises(StoreUnavailable, match="columns changed"), store.transaction() as statements:
        statements.execute(lookup, (1,)).fetchone()
    assert not _prepared(store)
    with store.transaction() as statements:
        assert statements.execute(lookup, (1,)).fetchone()["added_again"] == "new"


def test_a_connection_prepares_a_bounded_number_of_statements(postgres_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_statements, "PREPARED_PER_CONNECTION", 3)
    store = Store(postgres_database_url, pool=ONE_CONNECTION)
    try:
        store.ensure_schema()
        with store.transaction() as conn:
            conn.execute("CREATE TABLE scratch (id bigint PRIMARY KEY, n bigint)")
            conn.execute("INSERT INTO scratch (id, n) VALUES (?, ?)", (1, 7))
        for _ in range(3):
            for columns in range(1, 7):  # six shapes of one lookup
                with store.reading() as conn:
                    sql = "SELECT n FROM scratch WHERE id IN (" + ", ".join("?" * columns) + ")"
                    assert conn.execute(sql, tuple(range(1, columns + 1))).fetchone()["n"] == 7
        # The first three to run twice are prepared; the rest ran unprepared, and right.
        assert len(_prepared(store)) == 3
    finally:
        store.close()
