"""The PostgreSQL test harness (tests/postgres_cluster.py) does what the store's tests will rely on.

Needs PostgreSQL's server programs (make test installs Debian's postgresql package). Under CI=true
their absence fails the run instead of skipping it.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import postgres_cluster as harness
import psycopg
import pytest
from postgres_cluster import Cluster, PostgresStartError, connect, process_alive, start_cluster
from psycopg import errors

# Bounds for the waits below: long enough for a busy 2-core machine, short enough to fail fast.
BLOCKED_FOR = 0.3
TIMEOUT = 5.0


def test_rows_written_are_read_back_in_a_database_of_its_own(postgres_database_url: str, postgres_url: str) -> None:
    with connect(postgres_database_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None and name[0] != psycopg.conninfo.conninfo_to_dict(postgres_url)["dbname"]
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        conn.cursor().executemany("INSERT INTO notes (body) VALUES (%s)", [("one",), ("two",), ("three",)])
        conn.commit()
        assert conn.execute("SELECT body FROM notes ORDER BY id").fetchall() == [("one",), ("two",), ("three",)]


def test_the_url_carries_a_password_that_is_required(postgres_cluster: Cluster) -> None:
    assert postgres_cluster.url().startswith(f"postgresql://relay:{postgres_cluster.password}@127.0.0.1:")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(postgres_cluster.url().replace(postgres_cluster.password, "wrong"))


def test_a_committed_write_is_seen_by_another_connection(postgres_database_url: str) -> None:
    with connect(postgres_database_url) as writer, connect(postgres_database_url, autocommit=True) as reader:
        writer.execute("CREATE TABLE counters (name text PRIMARY KEY, value int NOT NULL)")
        writer.commit()
        writer.execute("INSERT INTO counters VALUES ('a', 1)")
        assert reader.execute("SELECT value FROM counters").fetchall() == []
        writer.commit()
        assert reader.execute("SELECT value FROM counters").fetchall() == [(1,)]
        reader.execute("UPDATE counters SET value = 2")
        assert writer.execute("SELECT value FROM counters").fetchall() == [(2,)]


def test_select_for_update_blocks_a_second_transaction_until_the_first_commits(postgres_database_url: str) -> None:
    with connect(postgres_database_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE budgets (key text PRIMARY KEY, spent int NOT NULL)")
        setup.execute("INSERT INTO budgets VALUES ('alice', 0)")
    seen: dict[str, Any] = {}

    def second() -> None:
        with connect(postgres_database_url) as conn:
            conn.execute(f"SET lock_timeout = '{int(TIMEOUT * 1000)}ms'")
            row = conn.execute("SELECT spent FROM budgets WHERE key = 'alice' FOR UPDATE").fetchone()
            seen["spent"], seen["at"] = row, time.monotonic()
            conn.execute("UPDATE budgets SET spent = spent + 1 WHERE key = 'alice'")
            conn.commit()

    with connect(postgres_database_url) as first:
        assert first.execute("SELECT spent FROM budgets WHERE key = 'alice' FOR UPDATE").fetchone() == (0,)
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(BLOCKED_FOR)
        assert thread.is_alive() and "spent" not in seen, "the row lock did not hold the second transaction"
        first.execute("UPDATE budgets SET spent = spent + 1 WHERE key = 'alice'")
        committed_at = time.monotonic()
        first.commit()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    # It read the first transaction's committed value, after that commit: no lost update.
    assert seen["spent"] == (1,) and seen["at"] >= committed_at
    with connect(postgres_database_url) as check:
        assert check.execute("SELECT spent FROM budgets").fetchone() == (2,)


def test_a_held_row_lock_makes_nowait_fail_at_once(postgres_database_url: str) -> None:
    with connect(postgres_database_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE slots (id int PRIMARY KEY)")
        setup.execute("INSERT INTO slots VALUES (1)")
    with connect(postgres_database_url) as first, connect(postgres_database_url) as second:
        first.execute("SELECT id FROM slots FOR UPDATE")
        with pytest.raises(errors.LockNotAvailable):
            second.execute("SELECT id FROM slots FOR UPDATE NOWAIT")


def test_advisory_locks_exclude_other_sessions_until_released(postgres_database_url: str) -> None:
    with connect(postgres_database_url, autocommit=True) as first, connect(postgres_database_url, autocommit=True) as second:
        first.execute("SELECT pg_advisory_lock(13)")
        assert second.execute("SELECT pg_try_advisory_lock(13)").fetchone() == (False,)
        acquired = threading.Event()

        def wait_for_lock() -> None:
            with connect(postgres_database_url, autocommit=True) as third:
                third.execute(f"SET lock_timeout = '{int(TIMEOUT * 1000)}ms'")
                third.execute("SELECT pg_advisory_lock(13)")
                acquired.set()
                third.execute("SELECT pg_advisory_unlock(13)")

        thread = threading.Thread(target=wait_for_lock)
        thread.start()
        assert not acquired.wait(BLOCKED_FOR), "pg_advisory_lock did not wait for the holder"
        assert first.execute("SELECT pg_advisory_unlock(13)").fetchone() == (True,)
        assert acquired.wait(TIMEOUT)
        thread.join(TIMEOUT)
        assert second.execute("SELECT pg_try_advisory_lock(13)").fetchone() == (True,)


def port_is_free(port: int) -> bool:
    """Whether a new server could listen there: like PostgreSQL, with SO_REUSEADDR, since a closed
    connection's TIME_WAIT remnant may hold the port for a minute without holding it for a listener."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.usefixtures("postgres_cluster")  # for its skip, or failure under CI, without PostgreSQL
def test_a_cluster_is_gone_after_its_context_even_after_a_failure() -> None:
    seen: list[tuple[Path, int, int]] = []
    with pytest.raises(RuntimeError, match="a test failed"), start_cluster() as cluster:
        pid = cluster.server_pid()
        assert pid is not None and process_alive(pid)
        # PostgreSQL refuses to run as root; run as root, the harness hands it to another user.
        server_uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
        assert server_uid != 0
        assert not port_is_free(cluster.port)
        assert sorted(path.name for path in cluster.directory.iterdir() if path.is_socket()) == [f".s.PGSQL.{cluster.port}"]
        seen.append((cluster.directory, cluster.port, pid))
        raise RuntimeError("a test failed")
    [(directory, port, pid)] = seen
    assert not directory.exists()
    assert port_is_free(port)
    assert not process_alive(pid)


@pytest.mark.usefixtures("postgres_cluster")
def test_a_server_that_cannot_start_shows_its_log_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(harness.SPEED_OVER_DURABILITY, "shared_buffers", "not-a-size")
    made: list[str] = []
    real_mkdtemp = harness.tempfile.mkdtemp

    def recording_mkdtemp(**options: Any) -> str:
        made.append(real_mkdtemp(**options))
        return made[-1]

    monkeypatch.setattr(harness.tempfile, "mkdtemp", recording_mkdtemp)
    with pytest.raises(PostgresStartError, match=r"(?s)did not start.*server log tail:.*shared_buffers"), start_cluster():
        pass
    assert made and not Path(made[0]).exists()
