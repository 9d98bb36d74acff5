"""The SQLite backend: connections, their tuning, transactions and the cross-process write turn.

Several uvicorn workers and the CLI share one database file, so:
- WAL mode and a busy timeout let readers and one writer proceed together;
- every read-modify-write runs in `transaction()` (`BEGIN IMMEDIATE`), so two writers never
  interleave;
- writers queue on a lock (threads) and a lock file (`<database>-lock`, processes: relay.store.
  lock_file) before that, so a waiting writer wakes when its turn comes instead of sleeping in
  SQLite's busy handler, and gives up at the busy timeout as it would there; WAL checkpoints
  run in the recorder's thread, not in commits on the request path;
- a short write on the request path runs in the event loop's thread when the turn is free, or
  another thread of this process hands it back within a millisecond (`run_now`), and in a
  store thread otherwise.

Driver errors stop here: a connection made by `SQLiteBackend` turns the operational ones (locked past
the busy timeout, I/O error, disk full, file gone or damaged) into `StoreUnavailable`, in its
`execute` and its cursors' fetches, so every read and write of every aggregate is covered by this
one module, for the relay and relayctl alike. A connection that failed so is closed and replaced
on its thread's next use: when the database comes back, service resumes without a restart.
Constraint and programming errors (IntegrityError, ProgrammingError) are bugs: StoreBug, naming the driver's class.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from ..records import StoreBug, StoreUnavailable
from .backend import NOT_NOW, Connection, NotNow
from .location import DatabaseLocation, Dialect
from .lock_file import LockFile

T = TypeVar("T")

# How long a statement waits for another connection's lock before the store gives up
# (StoreUnavailable); RELAY_DATABASE_BUSY_TIMEOUT_SECONDS sets it for the relay.
BUSY_TIMEOUT_SECONDS = 10.0

# The size the WAL file is cut back to when it starts over after a checkpoint. Under writes that
# never pause (hundreds of creates a second) a checkpoint cannot catch up, the WAL grows as long as
# they last, and without a limit its file would keep that size for good: 335 MiB beside a 32 MiB
# database after 40,000 creates at concurrency 1 (measured). Below the limit it is left alone, so
# a busy relay does not shrink and regrow it at every checkpoint. The cut is the first commit's
# after the WAL starts over, under the write lock: 13 ms for 270 MiB here, once per busy stretch.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

# How long `run_now` waits for another thread of this process to hand back the write turn. The
# holder (the recorder's batch, a store thread's write) keeps it a few hundred microseconds when
# it can run, and it can while the event loop waits here without the GIL. Sent to a store thread
# instead, a create's record came about 0.8 ms later at concurrency 1 (1.6 % of creates, most
# of the slowest 2 %), and under load the hand-offs fed on each other. Measured against handing
# off at once (A/B, both orders): create p99 at c=1 0.79-0.91x, peak creates 1.24-1.25x at
# c=16 and 1.33-1.48x at c=64, retrieves 0.91-1.06x.
RUN_NOW_TURN_WAIT_SECONDS = 0.001

# Errors that say the code is wrong, not that the database is unavailable: they pass unchanged.
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.NotSupportedError)

# What a failure is called, by SQLite's primary result code: fixed words, never the driver's
# message (a future driver's may name a path or a host). Other codes show as their SQLite name.
_REASONS = {
    sqlite3.SQLITE_BUSY: "it stayed locked by another connection past the busy timeout",
    sqlite3.SQLITE_LOCKED: "a table stayed locked",
    sqlite3.SQLITE_READONLY: "it is read-only",
    sqlite3.SQLITE_IOERR: "disk I/O error",
    sqlite3.SQLITE_CORRUPT: "the database file is damaged",
    sqlite3.SQLITE_FULL: "the database or disk is full",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
    sqlite3.SQLITE_NOTADB: "the file is not a database",
}


def unavailable(error: sqlite3.DatabaseError) -> StoreUnavailable:
    code = getattr(error, "sqlite_errorcode", None)
    reason = _REASONS.get(code & 0xFF) if isinstance(code, int) else None
    return StoreUnavailable(reason or getattr(error, "sqlite_errorname", None) or type(error).__name__)


def _translate(error: sqlite3.DatabaseError, conn: sqlite3.Connection | None) -> Exception:
    """What a driver error raised through a store connection becomes: StoreUnavailable (and the
    connection marked for replacement), unless it is a bug."""
    if isinstance(error, _BUGS):
        return StoreBug(f"{type(error).__name__} ({getattr(error, 'sqlite_errorname', 'no error code')})")
    if isinstance(conn, _Connection):
        conn.failed = True
    return unavailable(error)


class _Cursor(sqlite3.Cursor):
    """A cursor whose statements and fetches raise StoreUnavailable instead of driver errors.

    Plain try/except in each method rather than a shared context manager: a `try` costs nothing
    until it catches, and rows are fetched one `__next__` at a time (a context manager there
    tripled the cost of iterating a listing).
    """

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            super().execute(sql, parameters)
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.connection) from None
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> _Cursor:
        try:
            super().executemany(sql, seq_of_parameters)
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.connection) from None
        return self

    def executescript(self, sql_script: str, /) -> _Cursor:
        try:
            super().executescript(sql_script)
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.connection) from None
        return self

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.connection) from None

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        try:
            return super().fetchmany(size)
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.connection) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.connection) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as error:
            raise _translate(error, self.connection) from None


class _Connection(sqlite3.Connection):
    """A connection whose statements run on `_Cursor`s; `failed` once one raised StoreUnavailable."""

    failed = False

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor(_Cursor).execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        return self.cursor(_Cursor).executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> sqlite3.Cursor:
        return self.cursor(_Cursor).executescript(sql_script)


def _greatest(*values: Any) -> Any:
    """PostgreSQL's greatest(), which SQLite lacks: the largest argument, NULLs ignored."""
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _refuse_another_applications_file(path: Path) -> None:
    """A file with tables but without the relay's `meta` (every relay database has it) belongs to
    another application, behind a mistyped --db: the relay must not switch it to WAL or add its
    tables. Read through SQLite (which keeps this process's locks on the file), read-only; a file
    SQLite cannot read that way is left to the opening that follows, which reports it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    except sqlite3.Error:
        return
    if names and "meta" not in names:
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise StoreUnavailable(f"it holds another application's tables ({shown}) and no relay schema")


def _create_private(path: Path) -> None:
    """Create the database file 0600, before SQLite would create it 0644: it holds encrypted
    credentials and key hashes. SQLite gives the -wal and -shm files the database file's mode.

    Only a file this call creates is opened and closed here: closing any descriptor of a file
    drops every POSIX lock this process holds on it, SQLite's included.
    """
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class _Reading:
    """`with backend.reading() as conn`: a class, not a generator, since every read goes through
    it (a @contextmanager costs about 2 µs a call, this a fraction). Holds no per-call state, so
    one instance serves every thread."""

    __slots__ = ("_backend",)

    def __init__(self, backend: SQLiteBackend) -> None:
        self._backend = backend

    def __enter__(self) -> Connection:
        return self._backend._conn()

    def __exit__(self, *_exception: object) -> None:
        return None


class _Immediate:
    """A call `run_now` runs in the calling thread, holding the write turn: its connection (a
    busy timeout of 0, so a lock held outside the turn is found at once rather than waited for)
    and whether one of its transactions has committed yet."""

    __slots__ = ("conn", "committed")

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.committed = False


class _LockedOutsideTurn(Exception):
    """A call run now found SQLite's write lock held by a connection that does not take turns
    (another program on the file), before it had written anything: it goes to a thread instead."""


class SQLiteBackend:
    """One per process. Each thread gets its own connection to the same file."""

    dialect: Dialect = "sqlite"

    def __init__(self, location: DatabaseLocation, *, read_only: bool = False, busy_timeout_seconds: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.location = location
        self.path = location.sqlite_path()
        if not read_only:
            _refuse_another_applications_file(self.path)
        self.busy_timeout_seconds = busy_timeout_seconds
        # Read-only (relayctl's listings, doctor, db status): SQLite's mode=ro, so nothing is
        # created, no journal mode is switched and no WAL is checkpointed into the file on close.
        self.read_only = read_only
        self._local = threading.local()
        self._connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._write_turn = threading.Lock()
        self._manual_checkpoints = False
        self._lock_path = f"{self.path}-lock"
        self._lock_file = LockFile(self._lock_path)
        # Never set: a SQLite file is local, so it is never out of reach the way a server is; its
        # failures (a lock held past the busy timeout, the disk) are found by each call itself.
        self.down: StoreUnavailable | None = None
        self._reading = _Reading(self)
        if not read_only:
            _create_private(self.path)

    def _conn(self) -> _Connection:
        """This thread's connection, for reads outside a transaction: a new one if the last one failed."""
        immediate: _Immediate | None = getattr(self._local, "immediate", None)
        if immediate is not None:
            return immediate.conn
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.failed:
            self._drop(conn)
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _immediate_conn(self) -> _Connection:
        """This thread's connection for calls run now: apart from its other one, since its busy
        timeout is 0."""
        conn: _Connection | None = getattr(self._local, "immediate_conn", None)
        if conn is not None and conn.failed:
            self._local.immediate_conn = None
            self._forget(conn)
            conn = None
        if conn is None:
            conn = self._connect(busy_timeout_seconds=0.0)
            self._local.immediate_conn = conn
        return conn

    def _connect(self, *, busy_timeout_seconds: float | None = None) -> _Connection:
        busy_timeout = self.busy_timeout_seconds if busy_timeout_seconds is None else busy_timeout_seconds
        try:
            conn = sqlite3.connect(
                f"file:{quote(str(self.path))}?mode=ro" if self.read_only else self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=self.read_only,
                factory=_Connection,
            )
        except sqlite3.DatabaseError as error:
            raise _translate(error, None) from None
        try:
            conn.row_factory = sqlite3.Row
            conn.create_function("greatest", -1, _greatest, deterministic=True)
            if self.read_only:
                conn.execute("PRAGMA query_only=ON")
            else:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            with self._lock:
                if self._manual_checkpoints:
                    conn.execute("PRAGMA wal_autocheckpoint=0")
                self._connections.append(conn)
        except StoreUnavailable:
            conn.close()
            raise
        return conn

    def _drop(self, conn: _Connection) -> None:
        """Forget and close a connection that failed (closing rolls back what it had begun)."""
        self._local.conn = None
        self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with suppress(sqlite3.Error):
            conn.close()

    def checkpoint_manually(self) -> None:
        """From now on, commits never checkpoint the WAL; `checkpoint()` does, off the request path.

        SQLite checkpoints in whichever commit finds the WAL over 1,000 pages, and a checkpoint
        writes and syncs the database file: on the request path that made about one create in
        a hundred wait 3-4 ms longer (relay overhead p99 4.2 ms; 1.05 ms without checkpoints,
        measured). The recorder thread calls `checkpoint()` instead.
        """
        with self._lock:
            self._manual_checkpoints = True
            for conn in self._connections:
                conn.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, without waiting for readers or writers."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def reading(self) -> _Reading:
        """This thread's connection, for statements outside a transaction."""
        return self._reading

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Connection]:
        """One write transaction (`BEGIN IMMEDIATE`): the statements run in it commit together or not at all.

        It holds the database's one write lock from the start, so a check and the write that
        depends on it (reserve, claim_session ...) see no other writer in between. Not reentrant.
        `durable` changes nothing here: in WAL mode with synchronous=NORMAL no commit waits for
        an fsync (a power cut may undo the last ones, never corrupt the file).
        """
        # Writers take turns here rather than in SQLite: a connection that finds the database
        # locked sleeps in SQLite's busy handler for up to tens of milliseconds at a time.
        if self.read_only:
            raise sqlite3.OperationalError(f"{self.path} was opened read-only")
        immediate: _Immediate | None = getattr(self._local, "immediate", None)
        if immediate is not None:
            # run_now holds the turn for the whole call.
            with self._begun(immediate.conn, immediate) as conn:
                yield conn
            immediate.committed = True
            return
        # This process's turn, then the processes' turn, are waited for up to the busy timeout
        # in all, as SQLite's own lock is: one write stuck behind a stopped relayctl must not
        # stop them all, nor itself wait without a limit.
        deadline = time.monotonic() + self.busy_timeout_seconds
        if not self._write_turn.acquire(timeout=self.busy_timeout_seconds):
            raise StoreUnavailable(_REASONS[sqlite3.SQLITE_BUSY])
        try:
            if not self._lock_file.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise StoreUnavailable(_REASONS[sqlite3.SQLITE_BUSY])
            try:
                with self._begun(self._conn(), None) as conn:
                    yield conn
            finally:
                self._lock_file.release()
        finally:
            self._write_turn.release()

    @contextmanager
    def _begun(self, conn: _Connection, immediate: _Immediate | None) -> Iterator[Connection]:
        if immediate is None:
            conn.execute("BEGIN IMMEDIATE")
        else:
            self._begin_immediately(conn, immediate)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # After a failed COMMIT the transaction may still be open: a connection left so
            # would refuse every later BEGIN. Closing it (on next use) rolls back instead.
            # A failed ROLLBACK marks the connection failed too; the first error is the one to tell.
            if conn.in_transaction:
                with suppress(StoreUnavailable):
                    conn.execute("ROLLBACK")
            raise

    def _begin_immediately(self, conn: _Connection, immediate: _Immediate) -> None:
        """BEGIN IMMEDIATE for a call run now. With the turn held only a program that does not take
        turns can hold SQLite's lock: before anything was written the call moves to a thread;
        after, it waits for the lock like any writer (it cannot be undone and started over)."""
        try:
            super(_Connection, conn).execute("BEGIN IMMEDIATE")
            return
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                raise _translate(error, conn) from None
        if not immediate.committed:
            raise _LockedOutsideTurn
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_seconds * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            with suppress(StoreUnavailable):
                conn.execute("PRAGMA busy_timeout=0")

    def run_now(self, call: Callable[[], T]) -> T | NotNow:
        """`call()` in this thread if the write turn is free now, or comes back from another thread
        of this process within RUN_NOW_TURN_WAIT_SECONDS; else NOT_NOW, and nothing was run.

        For short writes on the request path: a store thread's hand-off costs more than most of
        them (a create's record: about 140 µs here, 230-300 µs through a thread, measured at
        concurrency 1). Never waits for another process (workers, relayctl) holding the turn, nor
        for a program that does not take turns holding SQLite's lock: those send the call to a
        thread at once. What it can still wait for is the disk, as any write: WAL mode with
        synchronous=NORMAL writes to the page cache, and checkpoints, which write the database
        file, run in the recorder's thread.
        """
        if self.read_only or getattr(self._local, "immediate", None) is not None:
            return NOT_NOW
        if not self._write_turn.acquire(timeout=RUN_NOW_TURN_WAIT_SECONDS):
            return NOT_NOW
        try:
            if not self._lock_file.try_acquire():
                return NOT_NOW
            try:
                self._local.immediate = _Immediate(self._immediate_conn())
                try:
                    return call()
                except _LockedOutsideTurn:
                    return NOT_NOW
                finally:
                    self._local.immediate = None
            finally:
                self._lock_file.release()
        finally:
            self._write_turn.release()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
        with self._write_turn:
            self._lock_file.close()
            self._lock_file = LockFile(self._lock_path)

    def integrity_check(self) -> str:
        """'ok', or what SQLite's quick_check found wrong."""
        return str(self._conn().execute("PRAGMA quick_check").fetchone()[0])

    def describe(self) -> dict[str, str]:
        return {"journal_mode": str(self._conn().execute("PRAGMA journal_mode").fetchone()[0])}
