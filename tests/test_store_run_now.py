"""Store.run_now: a short write runs in the calling thread when the write turn is free, or comes
back from another thread within a bounded wait, and is handed back untouched (NOT_NOW) whenever
it would have had to wait longer, or for another process."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.records import StoreUnavailable
from relay.state import RelayState
from relay.store import NOT_NOW, Store, sqlite as sqlite_backend
from relay.store_threads import StoreThreads


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "relay.db")
    store.ensure_schema()
    with store.transaction() as conn:
        conn.execute("CREATE TABLE scratch (value TEXT)")
    yield store
    store.close()


def insert(store: Store, *values: str) -> int:
    """One transaction per value; the calling thread's id."""
    for value in values:
        with store.transaction() as conn:
            conn.execute("INSERT INTO scratch (value) VALUES (?)", (value,))
    return threading.get_ident()


def values(store: Store) -> list[str]:
    with store.reading() as conn:
        return [row[0] for row in conn.execute("SELECT value FROM scratch ORDER BY rowid")]


def test_a_free_turn_runs_the_call_in_this_thread_and_commits_it(store: Store) -> None:
    assert store.run_now(insert, store, "a") == threading.get_ident()
    assert values(store) == ["a"]
    # Seen by another connection too: committed, not merely written in this one.
    other = sqlite3.connect(store.location.sqlite_path())
    assert other.execute("SELECT value FROM scratch").fetchall() == [("a",)]
    other.close()


def test_a_turn_another_thread_keeps_past_the_wait_sends_the_call_back(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "RUN_NOW_TURN_WAIT_SECONDS", 0.05)
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction():
            inside.set()
            leave.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(5)
    started = time.monotonic()
    assert store.run_now(insert, store, "a") is NOT_NOW
    assert 0.04 <= time.monotonic() - started < 1.0  # waited (about 0.05 s), then gave up
    leave.set()
    holder.join()
    assert values(store) == []
    assert store.run_now(insert, store, "b") == threading.get_ident()
    assert values(store) == ["b"]


def test_a_turn_another_thread_hands_back_within_the_wait_runs_the_call_here(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder (the recorder's batch, a store thread's write) finishes while this thread
    waits: the call runs on the spot, after the holder's write, rather than in a store thread."""
    monkeypatch.setattr(sqlite_backend, "RUN_NOW_TURN_WAIT_SECONDS", 5.0)
    inside = threading.Event()

    def hold() -> None:
        with store.transaction() as conn:
            inside.set()
            time.sleep(0.1)
            conn.execute("INSERT INTO scratch (value) VALUES (?)", ("held",))

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(5)
    assert store.run_now(insert, store, "a") == threading.get_ident()
    holder.join()
    assert values(store) == ["held", "a"]


@contextlib.contextmanager
def held_by_another_process(store: Store) -> Iterator[int]:
    """The lock file's lock, held as another process holds it (a descriptor of its own is a lock
    of its own); let go on leaving, if still held."""
    other_process = os.open(f"{store.location.sqlite_path()}-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other_process, fcntl.LOCK_EX)
    try:
        yield other_process
    finally:
        fcntl.flock(other_process, fcntl.LOCK_UN)
        os.close(other_process)


def timed_write(store: Store) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        insert_nothing(store)
    except BaseException as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, None


def write_in_thread(store: Store) -> tuple[threading.Thread, list[tuple[float, BaseException | None]]]:
    """`timed_write` started in a thread of its own; its outcome lands in the list."""
    outcome: list[tuple[float, BaseException | None]] = []
    writer = threading.Thread(target=lambda: outcome.append(timed_write(store)), daemon=True)
    writer.start()
    return writer, outcome


def bounded_write(store: Store) -> BaseException | None:
    """`timed_write` in a thread of its own, which must end within 5 s: a write that waits
    without a limit fails the test instead of hanging it."""
    writer, outcome = write_in_thread(store)
    writer.join(5)
    assert not writer.is_alive(), "a write waited without a limit"
    return outcome[0][1]


def free_for_another_process(store: Store) -> bool:
    other = os.open(f"{store.location.sqlite_path()}-lock", os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(other)  # lets go of it, if taken
    return True


def test_a_turn_held_by_another_process_sends_the_call_back(store: Store) -> None:
    with held_by_another_process(store):
        assert store.run_now(insert, store, "a") is NOT_NOW
    assert values(store) == []
    assert store.run_now(insert, store, "b") == threading.get_ident()


def test_a_program_outside_the_turns_holding_the_lock_sends_the_call_back_unwritten(store: Store) -> None:
    outsider = sqlite3.connect(store.location.sqlite_path(), isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        assert store.run_now(insert, store, "a") is NOT_NOW
    finally:
        outsider.execute("ROLLBACK")
        outsider.close()
    assert time.monotonic() - started < 1.0  # the busy timeout (10 s) was not waited out
    assert values(store) == []
    # The connection it used is still good, and again waits for no one.
    assert store.run_now(insert, store, "b") == threading.get_ident()
    assert values(store) == ["b"]


def test_a_lock_taken_outside_the_turns_after_a_commit_is_waited_for(store: Store) -> None:
    """Once a transaction of the call committed, it cannot be started over in a thread: the rest
    waits for the lock like any writer, then the connection goes back to not waiting."""
    outsider = sqlite3.connect(store.location.sqlite_path(), isolation_level=None, check_same_thread=False)

    def first_then_locked_out() -> None:
        insert(store, "first")
        outsider.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, outsider.execute, ("COMMIT",)).start()
        insert(store, "second")

    started = time.monotonic()
    assert store.run_now(first_then_locked_out) is None
    assert time.monotonic() - started >= 0.25
    assert values(store) == ["first", "second"]
    outsider.close()
    # Back to a busy timeout of 0 for the next call run now.
    outsider = sqlite3.connect(store.location.sqlite_path(), isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")
    assert store.run_now(insert, store, "third") is NOT_NOW
    outsider.execute("ROLLBACK")
    outsider.close()


def test_a_failing_call_rolls_back_and_leaves_the_turn_free(store: Store) -> None:
    def fails() -> None:
        with store.transaction() as conn:
            conn.execute("INSERT INTO scratch (value) VALUES ('lost')")
            raise ValueError("the call's own failure")

    with pytest.raises(ValueError):
        store.run_now(fails)
    assert values(store) == []
    assert store.run_now(insert, store, "a") == threading.get_ident()
    # A thread's transaction (which blocks on the turn) finds it free as well.
    insert(store, "b")
    assert values(store) == ["a", "b"]


def test_run_now_is_not_reentrant_and_not_for_read_only_stores(store: Store, tmp_path: Path) -> None:
    assert store.run_now(store.run_now, insert, store, "a") is NOT_NOW
    assert values(store) == []
    reader = Store(tmp_path / "relay.db", read_only=True)
    try:
        assert reader.run_now(values, reader) is NOT_NOW
    finally:
        reader.close()


def test_db_now_runs_on_the_loop_thread_when_it_can_and_in_a_store_thread_when_it_cannot(store: Store) -> None:
    state = RelayState.__new__(RelayState)
    state.store = store
    state.store_threads = StoreThreads(2, "test-store")
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction():
            inside.set()
            leave.wait(5)

    async def both() -> tuple[int, int, int]:
        loop_thread = threading.get_ident()
        free = await state.db_now(insert, store, "free")
        holder = threading.Thread(target=hold)
        holder.start()
        assert inside.wait(5)
        asyncio.get_running_loop().call_later(0.2, leave.set)
        held = await state.db_now(insert, store, "held")
        holder.join()
        return loop_thread, free, held

    try:
        loop_thread, free, held = asyncio.run(both())
    finally:
        state.store_threads.shutdown()
    assert free == loop_thread
    assert held != loop_thread
    assert values(store) == ["free", "held"]


def test_writes_behind_another_process_that_keeps_the_turn_give_up_at_the_busy_timeout(tmp_path: Path) -> None:
    # Another process holds the lock file's lock and does not let go (a relayctl stopped with
    # Ctrl-Z): no write waits for it past the busy timeout, the first no more than the others.
    store = Store(tmp_path / "relay.db", busy_timeout_seconds=0.3)
    store.ensure_schema()
    outcomes: list[tuple[float, BaseException | None]] = []
    try:
        with held_by_another_process(store):
            writers = [threading.Thread(target=lambda: outcomes.append(timed_write(store)), daemon=True) for _ in range(3)]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(5)
            assert not any(writer.is_alive() for writer in writers), "a write waited past the busy timeout"
            for waited, error in outcomes:
                assert waited >= 0.3
                assert isinstance(error, StoreUnavailable) and "busy timeout" in str(error)
        # Once the other process lets go, writes go ahead, and this process does not keep the lock.
        assert bounded_write(store) is None
        deadline = time.monotonic() + 5
        while not free_for_another_process(store):
            assert time.monotonic() < deadline, "the lock stayed held by a write that gave up"
            time.sleep(0.01)
    finally:
        store.close()


def test_a_write_gets_the_turn_the_moment_another_process_lets_go(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db", busy_timeout_seconds=5)
    store.ensure_schema()
    try:
        with held_by_another_process(store) as other_process:
            writer, outcome = write_in_thread(store)
            time.sleep(0.2)
            assert writer.is_alive()
            fcntl.flock(other_process, fcntl.LOCK_UN)
            writer.join(5)
        ((waited, error),) = outcome
        assert error is None and 0.2 <= waited < 2
    finally:
        store.close()


def test_the_turn_a_write_gave_up_on_is_taken_by_the_next_and_never_held_twice(tmp_path: Path) -> None:
    # A write that gave up leaves its wait for the lock pending: the next write takes it over,
    # and while a write holds the lock no other process gets it.
    store = Store(tmp_path / "relay.db", busy_timeout_seconds=0.3)
    store.ensure_schema()
    with store.transaction() as conn:
        conn.execute("CREATE TABLE scratch (value TEXT)")
    inside = threading.Event()
    leave = threading.Event()

    def long_write() -> None:
        with store.transaction() as conn:
            conn.execute("INSERT INTO scratch (value) VALUES ('long')")
            inside.set()
            leave.wait(5)

    try:
        with held_by_another_process(store) as other_process:
            assert isinstance(bounded_write(store), StoreUnavailable)
            store._db.busy_timeout_seconds = 5  # type: ignore[attr-defined]
            writer = threading.Thread(target=long_write, daemon=True)
            writer.start()
            time.sleep(0.1)
            assert not inside.is_set()
            fcntl.flock(other_process, fcntl.LOCK_UN)
            assert inside.wait(5)
            assert not free_for_another_process(store)
            leave.set()
            writer.join(5)
        assert free_for_another_process(store)
        assert values(store) == ["long"]
    finally:
        leave.set()
        store.close()


def test_closing_with_a_wait_for_the_lock_pending_does_not_hang(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db", busy_timeout_seconds=0.2)
    store.ensure_schema()
    with held_by_another_process(store):
        assert isinstance(bounded_write(store), StoreUnavailable)
        closer = threading.Thread(target=store.close, daemon=True)
        closer.start()
        closer.join(5)
        assert not closer.is_alive()
    deadline = time.monotonic() + 5
    while not free_for_another_process(store):  # the helper let go of what it got for nobody
        assert time.monotonic() < deadline
        time.sleep(0.01)


def insert_nothing(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute("SELECT 1")
