"""Writes stay short: WAL checkpoints in the recorder's thread, writers taking turns on a lock file.
After a busy stretch the WAL file is cut back to its limit."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from relay import recorder as recorder_module
from relay.recorder import Recorder
from relay.store import Outcome, Store, sqlite as sqlite_backend

# Over SQLite's automatic threshold (1,000 pages): a commit on the request path would checkpoint.
WRITES = 1_500


FRAME_BYTES = 4096 + 24  # a page and its frame header


def wal_bytes(path: Path) -> int:
    return (path.parent / (path.name + "-wal")).stat().st_size


def wal_frames(path: Path) -> int:
    """Frames in the WAL right now (a fresh connection's PASSIVE checkpoint reports them)."""
    with sqlite3.connect(path) as probe:
        busy, frames, copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


def request_path_writes(store: Store, count: int) -> None:
    """Commits from a thread of their own, as the relay's worker threads make them."""

    def write() -> None:
        for index in range(count):
            store.set_meta_if_absent(f"bench-{time.perf_counter_ns()}-{index}", "x")

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()


def outcome() -> Outcome:
    return Outcome(time.time(), "req_1", "k", "a", "openai-responses", "videos.create", 200, "none", 1.0)


@contextmanager
def busy_wal(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """A store whose recorder holds its checkpoints back while WRITES commits fill the WAL; yields
    what lets it checkpoint at last and then makes one more commit."""
    store = Store(path)
    store.ensure_schema()
    monkeypatch.setattr(recorder_module, "_CHECKPOINT_INTERVAL_SECONDS", 3600.0)
    recorder = Recorder(store)
    recorder.start()

    def checkpoint_then_commit() -> None:
        monkeypatch.setattr(recorder_module, "_CHECKPOINT_INTERVAL_SECONDS", 0.0)
        recorder.put(outcome())
        assert recorder.flush()
        request_path_writes(store, 1)

    try:
        recorder.put(outcome())
        assert recorder.flush()
        request_path_writes(store, WRITES)
        yield checkpoint_then_commit
    finally:
        recorder.close()
        store.close()


def test_commits_leave_checkpoints_to_the_recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "relay.db"
    with busy_wal(path, monkeypatch) as checkpoint_then_commit:
        # No commit checkpointed, so the WAL kept every write (an automatic checkpoint would have
        # let it start over at about 1,000 pages). Its size tells without checkpointing it.
        assert wal_bytes(path) > WRITES * FRAME_BYTES
        # The recorder copies the WAL into the database, so the next commit starts the WAL afresh.
        checkpoint_then_commit()
        assert wal_frames(path) < 10


def test_the_wal_file_shrinks_back_once_a_checkpoint_lets_it_start_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy stretch grows the WAL past the limit; once the recorder's checkpoint has caught up,
    the next commit starts it over and cuts its file back to the limit."""
    limit = 256 * 1024
    monkeypatch.setattr(sqlite_backend, "WAL_SIZE_LIMIT_BYTES", limit)
    path = tmp_path / "relay.db"
    with busy_wal(path, monkeypatch) as checkpoint_then_commit:
        assert wal_bytes(path) > 4 * limit
        checkpoint_then_commit()
        assert wal_bytes(path) <= limit


def test_without_a_recorder_commits_checkpoint_as_usual(tmp_path: Path) -> None:
    """relayctl and other users of the store keep SQLite's automatic checkpoints."""
    path = tmp_path / "relay.db"
    store = Store(path)
    store.ensure_schema()
    try:
        request_path_writes(store, WRITES)
        assert wal_bytes(path) < 1_100 * FRAME_BYTES
    finally:
        store.close()


def test_writers_in_other_processes_wait_on_the_lock_file(tmp_path: Path) -> None:
    """A writer holds the lock file for its transaction, so another process's writer is woken
    the moment it ends rather than sleeping in SQLite's busy handler."""
    store = Store(tmp_path / "relay.db")
    store.ensure_schema()
    other_process = os.open(tmp_path / "relay.db-lock", os.O_RDWR)
    try:
        with store.transaction(), pytest.raises(BlockingIOError):
            fcntl.flock(other_process, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other_process, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other_process, fcntl.LOCK_UN)
    finally:
        os.close(other_process)
        store.close()
