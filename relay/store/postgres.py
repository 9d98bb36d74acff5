"""The PostgreSQL backend: a connection pool, the write lock shared by every replica, and driver errors.

Several relays (replicas, each with its workers) and relayctl share one database server:
- each process keeps a pool of connections (psycopg_pool): a store call borrows one for a read
  or a transaction; when all are busy it waits up to the pool timeout, then gives up with
  StoreUnavailable, which the relay answers with a 503;
- every write transaction first takes one transaction-scoped advisory lock, so writers take turns
  across all replicas exactly as SQLite's writers do on one host: a budget check and the
  reservation that depends on it cannot interleave with another replica's. Readers never wait
  for it. Its wait is bounded by the lock timeout (RELAY_DATABASE_BUSY_TIMEOUT_SECONDS);
- a connection the server dropped (a restart, a failover, an idle timeout) fails the one call that
  used it; the pool then checks the rest and reconnects by itself, so service resumes without a
  restart of the relay.

Driver errors stop here: those that say the database is unreachable, busy, full or refusing this
user become StoreUnavailable with fixed words (never the server's message, which can name hosts
and users); those that say the code is wrong (constraint, syntax, data) become StoreBug.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Self, TypeVar

import psycopg
import psycopg_pool

from ..records import StoreBug, StoreUnavailable
from .backend import NOT_NOW, Connection, NotNow
from .location import DatabaseLocation, Dialect
from .pool_settings import PoolSettings
from .postgres_statements import ConnectionStatements, Result

T = TypeVar("T")

# pg_advisory_xact_lock's key for the store's write turn ("relay" in ASCII, to be recognisable in pg_locks).
WRITE_LOCK = 0x72656C6179


# Reasons by SQLSTATE (exact code first, then its two-character class): fixed words only.
_REASONS = {
    "55P03": "it stayed locked by another connection past the lock timeout",
    "26000": "a connection lost its prepared statements",
    "0A000": "a table's columns changed under a prepared statement",
    "57014": "a statement ran past its timeout",
    "25006": "it is read-only",
    "42501": "the database user lacks a privilege the relay needs",
    "3D000": "the database does not exist",
    "53100": "the database server's disk is full",
    "53300": "the database server has no connection slots left",
    "08": "the database server cannot be reached",
    "28": "the database server refused the user name or password",
    "40": "a transaction conflicted with another and was rolled back",
    "53": "the database server is out of resources",
    "57": "the database server is shutting down or restarting",
    "58": "the database server had a system error",
}


def _reason(error: psycopg.Error) -> str | None:
    """Fixed words for an error that says the database is unavailable; None for a bug."""
    if isinstance(error, psycopg_pool.PoolTimeout):
        return "no database connection came free within the pool timeout"
    if isinstance(error, psycopg_pool.PoolClosed):
        return "the store was closed"
    state = error.sqlstate
    if state is None:
        # No SQLSTATE: the client side failed (connection lost or closed, no server answer).
        return None if isinstance(error, psycopg.ProgrammingError) else "the database server cannot be reached"
    return _REASONS.get(state) or _REASONS.get(state[:2])


# A failed connection attempt has no SQLSTATE (libpq reports it as text): the server's refusals,
# in its default English, tell a wrong password or database from a server out of reach.
_REFUSALS = (
    (re.compile(r"password authentication failed|no password supplied|role \".*\" does not exist"), _REASONS["28"]),
    (re.compile(r"database \".*\" does not exist"), _REASONS["3D000"]),
)


def _connect_reason(error: psycopg.Error) -> str:
    """Fixed words for why a new connection failed."""
    message = str(error)
    return next((reason for pattern, reason in _REFUSALS if pattern.search(message)), _REASONS["08"])


class _Connection(psycopg.Connection[Any]):
    """A pooled connection, with what its statements keep between runs (see postgres_statements)."""

    statements: ConnectionStatements


class _Statements:
    """A pooled connection, as the aggregates use it: portable SQL in, Rows out, errors translated."""

    __slots__ = ("_backend", "_conn")

    def __init__(self, conn: _Connection, backend: PostgresBackend) -> None:
        self._conn = conn
        self._backend = backend

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Result:
        try:
            return self._conn.statements.run(sql, tuple(parameters))
        except psycopg.Error as error:
            raise self._backend.translate(error) from None

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        """Many rows sent together, their statement prepared from the second row on (the server
        plans it once: unprepared, a batch of 65 outcome rows took twice as long, measured)."""
        try:
            self._conn.statements.run_many(sql, parameters)
        except psycopg.Error as error:
            raise self._backend.translate(error) from None


# The writers' turn, sent in the transaction's pipeline right after its BEGIN (see
# postgres_statements): it costs no round trip of its own.
_LOCK_DURABLE = f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"
# A write whose loss in a crash harms nothing lasting skips the commit's WAL flush; the setting
# ends with the transaction.
_LOCK_NOT_DURABLE = f"SELECT pg_advisory_xact_lock({WRITE_LOCK}), set_config('synchronous_commit', 'off', true)"


class PostgresBackend:
    """One per process: a pool of connections to one PostgreSQL database."""

    dialect: Dialect = "postgresql"

    def __init__(
        self,
        location: DatabaseLocation,
        *,
        read_only: bool = False,
        busy_timeout_seconds: float = 10.0,
        pool: PoolSettings | None = None,
    ) -> None:
        self.location = location
        self.read_only = read_only
        self.pool_settings = pool or PoolSettings()
        lock_timeout_ms = max(1, int(busy_timeout_seconds * 1000))
        self._checking = threading.Lock()
        # The last failure, until a call succeeds again (see Backend.down).
        self.down: StoreUnavailable | None = None
        # The pool connects in threads of its own and tells a caller only that no connection came
        # free: why its last attempt failed (out of reach, a wrong password), until one succeeds.
        self._connect_failure: str | None = None
        backend = self

        class NotingConnection(_Connection):
            @classmethod
            def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
                try:
                    conn = super().connect(conninfo, **kwargs)
                except psycopg.Error as error:
                    backend._connect_failure = _connect_reason(error)
                    raise
                backend._connect_failure = None
                return conn

        def configure(conn: _Connection) -> None:
            conn.prepare_threshold = None  # psycopg's own statements (set-up, the pool's checks) prepare nothing
            conn.statements = ConnectionStatements(conn, backend.translate)
            conn.execute(f"SET lock_timeout = {lock_timeout_ms}")
            if read_only:
                # relayctl's listings and doctor: the server itself refuses any write.
                conn.execute("SET default_transaction_read_only = on")

        self._pool: psycopg_pool.ConnectionPool[_Connection] = psycopg_pool.ConnectionPool(
            location.raw,
            connection_class=NotingConnection,
            kwargs=_connect_options(location.raw),
            min_size=min(self.pool_settings.min_size, self.pool_settings.max_size),
            max_size=self.pool_settings.max_size,
            timeout=self.pool_settings.timeout_seconds,
            configure=configure,
            # psycopg_pool retries a lost connection after 1, 2, 4, 8 ... s, without a ceiling,
            # until it gives up; then the next call that finds the pool short starts again at 1 s.
            # Giving up after 10 s keeps every wait short: connections come back within a few
            # seconds of the server's return, however long it was away.
            reconnect_timeout=10.0,
            name="relay",
            open=False,
        )
        try:
            self._pool.open(wait=False)
        except psycopg.Error as error:
            raise self.translate(error) from None

    def translate(self, error: psycopg.Error) -> Exception:
        reason = _reason(error)
        if reason is None:
            return StoreBug(f"{type(error).__name__} (SQLSTATE {error.sqlstate or 'none'})")
        unreachable = error.sqlstate is None or error.sqlstate[:2] in ("08", "57")
        if isinstance(error, psycopg_pool.PoolTimeout):
            # No connection came free: a busy pool, or one that cannot connect at all.
            unreachable = self._connect_failure is not None
            reason = self._connect_failure or reason
        unavailable = StoreUnavailable(reason)
        if unreachable:
            # Only an unreachable server stops creates before they leave (Backend.down); a lock
            # or pool timeout under load says nothing about the next call.
            self.down = unavailable
            if not isinstance(error, psycopg_pool.PoolTimeout):
                # The server dropped connections: find the other dead ones now, not one request each.
                self._check_soon()
        return unavailable

    def _check_soon(self) -> None:
        if not self._checking.acquire(blocking=False):
            return

        def check() -> None:
            try:
                with suppress(Exception):
                    self._pool.check()
            finally:
                self._checking.release()

        threading.Thread(target=check, name="relay-pool-check", daemon=True).start()

    @contextmanager
    def _borrowed(self) -> Iterator[_Connection]:
        try:
            conn = self._pool.getconn()
        except psycopg.Error as error:
            raise self.translate(error) from None
        try:
            yield conn
            self.down = None
        finally:
            self._pool.putconn(conn)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self._borrowed() as conn:
            yield _Statements(conn, self)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Connection]:
        """One write transaction, every replica's writers taking turns on the advisory lock."""
        if self.read_only:
            raise StoreUnavailable("it was opened read-only")
        with self._borrowed() as conn:
            statements = conn.statements
            try:
                statements.begin(_LOCK_DURABLE if durable else _LOCK_NOT_DURABLE)
                yield _Statements(conn, self)
                statements.commit()
            except BaseException as failure:
                statements.roll_back()
                if isinstance(failure, psycopg.Error):
                    raise self.translate(failure) from None
                raise

    def run_now(self, call: Callable[[], T]) -> T | NotNow:
        """Never here: every call waits for the server, so it belongs in a thread."""
        return NOT_NOW

    def checkpoint_manually(self) -> None:
        """SQLite's WAL checkpoints have no counterpart here: the server runs its own."""

    def checkpoint(self) -> None:
        """See checkpoint_manually."""

    def integrity_check(self) -> str:
        with self.reading() as conn:
            conn.execute("SELECT 1").fetchone()
        return "ok"

    def describe(self) -> dict[str, str]:
        with self.reading() as conn:
            row = conn.execute("SELECT current_setting('server_version') AS version").fetchone()
        return {"server_version": str(row["version"]), "pool_max_size": str(self.pool_settings.max_size)}

    def close(self) -> None:
        self._pool.close()


def _connect_options(raw: str) -> dict[str, Any]:
    """Options for every connection, unless the URL sets them itself."""
    given = psycopg.conninfo.conninfo_to_dict(raw)
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in given:
        # libpq waits forever by default: a blackholed server would hang start-up and the pool.
        options["connect_timeout"] = 5
    if "application_name" not in given:
        options["application_name"] = "video-relay"
    return options
