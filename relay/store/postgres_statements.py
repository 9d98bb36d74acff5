"""The store's statements on a pooled PostgreSQL connection, through libpq directly.

psycopg's cursors cost 60-90 us of Python per statement on the benchmark's machine, on the
request's path, where libpq's own calls cost 5 (measured: an UPDATE by primary key took 179 us
through `Connection.execute` and 90 us through `PGconn.exec_prepared`). So the store's statements
go to libpq here, with psycopg's adapters (its Transformer) dumping parameters and loading rows
exactly as its cursors would, and its error classes for what fails.

Outside a transaction a statement is one blocking call (libpq's, which releases the GIL while it
waits). A write transaction is pipelined (libpq's pipeline mode): each statement is sent at once
and its Result read only when the code asks for it (its rows or rowcount), so the statements a
transaction never reads (BEGIN, the writers' lock, most UPDATEs) share round trips with the next
one it does, and COMMIT with whatever precedes it. A job's record took 5 round trips; it takes 1.
After a failed statement the server skips the rest until the end of the pipeline: reading any
later Result, or committing, raises that first failure.

A statement is prepared on its second run on a connection (psycopg's cursors wait for the fifth),
up to PREPARED_PER_CONNECTION distinct ones; the rest run unprepared. Should the connection's
prepared statements be dropped under it (psycopg runs DEALLOCATE ALL after a ROLLBACK it sees
itself, once it has prepared something), the first statement to find its name gone makes this
connection forget them all. Should a table gain a column (a newer release's migration, while
this one still runs), the server refuses every prepared `SELECT *` of it, whose plan may not
change its columns: the connection forgets and deallocates them all, and they are prepared
again from their next runs.
"""

from __future__ import annotations

import contextlib
import functools
import re
import select
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import error_from_result

# The store has a few hundred distinct statements; a statement built with a varying number of
# placeholders would add one per shape.
PREPARED_PER_CONNECTION = 512
# Statements run once so far, waiting for a second run to be prepared.
SEEN_PER_CONNECTION = 4096
# Statements sent ahead of their answers at most: past it (a long executemany) the answers are
# read before more is sent, so that neither side's socket fills while both wait to write.
PIPELINE_DEPTH = 256

_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY)
_NO_SUCH_STATEMENT = b"26000"
# "cached plan must not change result type": a prepared statement's table changed its columns.
# (Its SQLSTATE, feature_not_supported, is shared, but no statement of the store's uses a
# feature PostgreSQL lacks, so from a prepared statement it means this.)
_STALE_PLAN = b"0A000"
_PIPELINE_OFF = pq.PipelineStatus.OFF


class Row:
    """A row that indexes by position and by column name, and converts with dict(), like sqlite3.Row."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._index[key]] if isinstance(key, str) else self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


class Result:
    """What a statement gave back: its rows (loaded at once), how many rows it touched, and its
    columns' names (None for a statement that returns no rows, as with sqlite3's cursors).

    A statement sent in a pipeline is read when one of these is first asked for; what failed
    raises then, translated by the store's backend."""

    __slots__ = ("_description", "_error", "_pending", "_rowcount", "_rows", "_source")

    def __init__(self, source: ConnectionStatements, *, pending: bool) -> None:
        self._source = source
        self._pending = pending
        self._rows: list[Row] = []
        self._rowcount = -1
        self._description: tuple[str, ...] | None = None
        self._error: psycopg.Error | None = None

    def _settled(self) -> None:
        if self._pending:
            self._source.settle(self)
        if self._error is not None:
            raise self._source.translate(self._error) from None

    @property
    def rowcount(self) -> int:
        self._settled()
        return self._rowcount

    @property
    def description(self) -> tuple[str, ...] | None:
        self._settled()
        return self._description

    def fetchone(self) -> Row | None:
        self._settled()
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Row]:
        self._settled()
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


def _as_is(error: psycopg.Error) -> Exception:
    return error


class ConnectionStatements:
    """One connection's statements: its Transformer, its prepared statements, and the pipeline
    of the write transaction under way (what was sent and not read yet)."""

    __slots__ = (
        "_conn",
        "_failure",
        "_named",
        "_poll",
        "_prepared",
        "_seen",
        "_sent",
        "_stale",
        "_transformer",
        "_unflushed",
        "translate",
    )

    def __init__(self, conn: psycopg.Connection[Any], translate: Callable[[psycopg.Error], Exception] = _as_is) -> None:
        self._conn = conn
        self.translate = translate
        self._transformer = Transformer(conn)
        # (statement, parameter types) -> the name it is prepared under
        self._prepared: dict[tuple[str, tuple[int, ...]], bytes] = {}
        self._seen: set[tuple[str, tuple[int, ...]]] = set()
        self._named = 0  # names are never reused, in case a forgotten one still exists
        # Sent, in order, not read yet: the Result to fill (None for a statement nobody reads),
        # and for a PREPARE the statement's key (to forget it, should the PREPARE fail).
        self._sent: deque[tuple[Result | None, tuple[str, tuple[int, ...]] | None]] = deque()
        self._failure: psycopg.Error | None = None  # the pipeline's first failure
        self._stale = False  # prepared statements to deallocate once no transaction is under way
        self._unflushed = False
        self._poll = select.poll()
        self._poll.register(conn.pgconn.socket, select.POLLIN)

    # -- statements ------------------------------------------------------------------------

    def run(self, sql: str, parameters: Sequence[Any]) -> Result:
        """Run `sql` (the store's portable SQL, `?` placeholders) with `parameters`: at once
        outside a transaction (psycopg's errors raised), sent in the transaction's pipeline in one."""
        transformer = self._transformer
        pgconn = self._conn.pgconn
        if parameters:
            values = transformer.dump_sequence(parameters, [PyFormat.AUTO] * len(parameters))
            types, formats = tuple(transformer.types or ()), list(transformer.formats or ())
        else:
            values, types, formats = [], (), []
        key = (sql, types)
        name, new = self._name(key)
        if pgconn.pipeline_status != _PIPELINE_OFF:
            return self._send(key, name, new, values, formats)
        if new:
            try:
                self._checked(pgconn.prepare(cast(bytes, name), numbered(sql), types))
            except psycopg.Error:
                del self._prepared[key]
                raise
        if name is None:
            result = self._checked(pgconn.exec_params(numbered(sql), values, types, formats))
        else:
            # NULLs go as None, as psycopg's own cursors send them (its stub says otherwise).
            prepared = pgconn.exec_prepared(name, cast(Sequence[bytes], values), formats)
            state = None if prepared is None else prepared.error_field(pq.DiagnosticField.SQLSTATE)
            if state in (_NO_SUCH_STATEMENT, _STALE_PLAN):
                # The connection's prepared statements were dropped under it, or one's table
                # changed: forget ours; outside a transaction, run this one unprepared.
                self._forget_prepared(stale=state == _STALE_PLAN)
                if pgconn.transaction_status == pq.TransactionStatus.IDLE:
                    self._deallocate_stale()
                    prepared = pgconn.exec_params(numbered(sql), values, types, formats)
            result = self._checked(prepared)
        done = Result(self, pending=False)
        self._fill(done, result)
        return done

    def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """`sql` once per row, sent together (psycopg's errors raised); in a pipeline of its own
        (one implicit transaction) when no transaction is under way."""
        pgconn = self._conn.pgconn
        alone = pgconn.pipeline_status == _PIPELINE_OFF
        if alone:
            pgconn.enter_pipeline_mode()
        try:
            for row in rows:
                self.run(sql, tuple(row))
                if self._failure is not None:
                    raise self._failure
            failure = self._end() if alone else None
        except BaseException:
            if alone:
                self.abandon()
            raise
        if failure is not None:
            raise failure

    def _name(self, key: tuple[str, tuple[int, ...]]) -> tuple[bytes | None, bool]:
        """The name `key` is prepared under (None: run it unprepared), and whether to prepare it now."""
        name = self._prepared.get(key)
        if name is not None:
            return name, False
        if len(self._prepared) >= PREPARED_PER_CONNECTION:
            return None, False
        if key in self._seen:
            name = f"relay_{self._named}".encode()
            self._named += 1
            self._prepared[key] = name
            self._seen.discard(key)
            return name, True
        if len(self._seen) >= SEEN_PER_CONNECTION:
            self._seen.clear()  # statements run once, forgotten: those run often come back
        self._seen.add(key)
        return None, False

    def _forget_prepared(self, *, stale: bool = False) -> None:
        """Forget every prepared statement; `stale`: they still exist on the server, and are
        deallocated once no transaction is under way (`_deallocate_stale`)."""
        self._prepared.clear()
        self._seen.clear()
        self._stale = self._stale or stale

    def _deallocate_stale(self) -> None:
        if self._stale:
            self._stale = False
            with contextlib.suppress(psycopg.Error):
                self._checked(self._conn.pgconn.exec_(b"DEALLOCATE ALL"))

    def _checked(self, result: pq.abc.PGresult | None) -> pq.abc.PGresult:
        if result is None or result.status not in _OK:
            raise self._failure_of(result)
        return result

    def _failure_of(self, result: pq.abc.PGresult | None) -> psycopg.Error:
        if result is None or self._conn.pgconn.status == pq.ConnStatus.BAD:
            return psycopg.OperationalError("the connection to the database server was lost")
        return error_from_result(result, encoding=self._conn.info.encoding)

    def _fill(self, into: Result, result: pq.abc.PGresult) -> None:
        into._pending = False
        into._rowcount = -1 if result.command_tuples is None else result.command_tuples
        if result.status != pq.ExecStatus.TUPLES_OK:
            return
        index = {(result.fname(i) or b"").decode(): i for i in range(result.nfields)}
        into._description = tuple(index)
        if result.ntuples:
            transformer = self._transformer
            transformer.set_pgresult(result)
            into._rows = transformer.load_rows(0, result.ntuples, lambda values: Row(values, index))
            transformer.set_pgresult(None)

    # -- a write transaction's pipeline ------------------------------------------------------

    def begin(self, lock: str) -> None:
        """Start a pipelined transaction: BEGIN and `lock` (the writers' turn), sent, not read."""
        pgconn = self._conn.pgconn
        pgconn.enter_pipeline_mode()
        pgconn.send_query_params(b"BEGIN", None)
        self._sent.append((None, None))
        self.run(lock, ())

    def commit(self) -> None:
        """COMMIT, sent with whatever is still unread; raises the pipeline's first failure."""
        self._conn.pgconn.send_query_params(b"COMMIT", None)
        self._sent.append((None, None))
        failure = self._end()
        if failure is not None:
            raise failure

    def abandon(self) -> None:
        """End the pipeline (a failure or the caller's exception): what was sent runs to the end
        or is skipped; an explicit transaction is left for `roll_back`. A connection that cannot
        leave pipeline mode is closed, so its pool discards it."""
        if self._conn.pgconn.pipeline_status == _PIPELINE_OFF:
            return
        try:
            self._end()
        except psycopg.Error:
            self._conn.close()
        finally:
            self._sent.clear()
            self._failure = None
            self._unflushed = False

    def roll_back(self) -> None:
        """End a failed or abandoned transaction: its pipeline, then a ROLLBACK. On a broken
        connection (closed by `abandon`, or failing here) the pool discards it anyway."""
        self.abandon()
        with contextlib.suppress(psycopg.Error):
            self._checked(self._conn.pgconn.exec_(b"ROLLBACK"))
            self._deallocate_stale()

    def settle(self, result: Result) -> None:
        """Read what was sent up to `result` (translated errors raised)."""
        try:
            self._read(until=result)
        except psycopg.Error as error:
            raise self.translate(error) from None
        if result._pending:  # its transaction ended (abandoned) before it was read
            result._pending = False
            result._error = psycopg.OperationalError("the transaction ended before the statement's answer was read")

    def _send(self, key: tuple[str, tuple[int, ...]], name: bytes | None, new: bool, values: Sequence[Any], formats: list[Any]) -> Result:
        pgconn = self._conn.pgconn
        sql, types = key
        if new:
            pgconn.send_prepare(cast(bytes, name), numbered(sql), types)
            self._sent.append((None, key))
        if name is None:
            pgconn.send_query_params(numbered(sql), values, types, formats)
        else:
            pgconn.send_query_prepared(name, cast(Sequence[bytes], values), formats)
        result = Result(self, pending=True)
        self._sent.append((result, None))
        self._unflushed = True
        if len(self._sent) >= PIPELINE_DEPTH:
            self._read(until=None)
        return result

    def _end(self) -> psycopg.Error | None:
        """Sync the pipeline, read everything up to the sync, leave pipeline mode; the first
        failure of a statement (raised: the connection's own)."""
        pgconn = self._conn.pgconn
        pgconn.pipeline_sync()
        self._unflushed = False
        self._read(until=None)
        synced = self._next_result()
        if synced is None or synced.status != pq.ExecStatus.PIPELINE_SYNC:
            raise self._failure_of(None)
        pgconn.exit_pipeline_mode()
        failure, self._failure = self._failure, None
        return failure

    def _read(self, *, until: Result | None) -> None:
        """Read the answers to what was sent, in order, up to `until` (None: all of them)."""
        if self._unflushed:
            pgconn = self._conn.pgconn
            pgconn.send_flush_request()
            pgconn.flush()
            self._unflushed = False
        while self._sent:
            result, prepared = self._sent.popleft()
            answer = self._next_result()
            if answer is None or self._next_result() is not None:  # each answer ends with a None
                raise self._failure_of(None)
            if answer.status in _OK:
                if result is not None:
                    self._fill(result, answer)
            else:
                if self._failure is None:
                    self._failure = self._failure_of(answer)
                    state = answer.error_field(pq.DiagnosticField.SQLSTATE)
                    if state in (_NO_SUCH_STATEMENT, _STALE_PLAN):
                        self._forget_prepared(stale=state == _STALE_PLAN)
                if prepared is not None:
                    self._prepared.pop(prepared, None)
                if result is not None:
                    result._pending = False
                    result._error = self._failure
            if until is not None and result is until:
                return

    def _next_result(self) -> pq.abc.PGresult | None:
        # libpq's PQgetResult blocks holding the GIL: wait for the socket here instead (poll
        # releases it), so the event loop runs while the server works.
        pgconn = self._conn.pgconn
        while pgconn.is_busy():
            self._poll.poll()
            pgconn.consume_input()
        return pgconn.get_result()


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> bytes:
    """The store's `?` placeholders as PostgreSQL's `$1, $2, ...`."""
    counter = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql).encode()
