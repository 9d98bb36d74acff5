"""One statement on a pooled PostgreSQL connection, through libpq directly.

psycopg's cursors cost 60-90 us of Python per statement on the benchmark's machine, on the
request's path, where libpq's own blocking calls cost 5 (measured: an UPDATE by primary key took
179 us through `Connection.execute` and 90 us through `PGconn.exec_prepared`). A job's record is
five statements, a video's lookup one. So the store's statements go to libpq here, with
psycopg's adapters (its Transformer) dumping parameters and loading rows exactly as its cursors
would, and its error classes for what fails. libpq's blocking calls release the GIL while they
wait, as psycopg's own waits do.

A statement is prepared on its second run on a connection (psycopg's cursors wait for the fifth),
up to PREPARED_PER_CONNECTION distinct ones; the rest run unprepared. psycopg prepares the
statements of `executemany` (the recorder's batches) itself; after a ROLLBACK it sees it would
deallocate every prepared statement of the connection, this module's too. It sees none (the
store's transactions end here), but should it, the first statement to find its name gone
makes this connection forget them all.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
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

_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY)
_NO_SUCH_STATEMENT = b"26000"


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
    columns' names (None for a statement that returns no rows, as with sqlite3's cursors)."""

    __slots__ = ("_rows", "description", "rowcount")

    def __init__(self, rows: list[Row], rowcount: int, description: tuple[str, ...] | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.description = description

    def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class ConnectionStatements:
    """What one connection keeps between statements: its Transformer and its prepared statements."""

    __slots__ = ("_named", "_prepared", "_seen", "_transformer")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._transformer = Transformer(conn)
        # (statement, parameter types) -> the name it is prepared under
        self._prepared: dict[tuple[str, tuple[int, ...]], bytes] = {}
        self._seen: set[tuple[str, tuple[int, ...]]] = set()
        self._named = 0  # names are never reused, in case a forgotten one still exists

    def run(self, conn: psycopg.Connection[Any], sql: str, parameters: Sequence[Any]) -> Result:
        """Run `sql` (the store's portable SQL, `?` placeholders) with `parameters`; psycopg's errors."""
        transformer = self._transformer
        pgconn = conn.pgconn
        if parameters:
            values = transformer.dump_sequence(parameters, [PyFormat.AUTO] * len(parameters))
            types, formats = tuple(transformer.types or ()), list(transformer.formats or ())
        else:
            values, types, formats = [], (), []
        key = (sql, types)
        name = self._prepared.get(key)
        room = len(self._prepared) < PREPARED_PER_CONNECTION
        if name is None and room and key in self._seen:
            name = f"relay_{self._named}".encode()
            self._named += 1
            _checked(pgconn.prepare(name, numbered(sql), types), conn)
            self._prepared[key] = name
            self._seen.discard(key)
        if name is None:
            if room:
                if len(self._seen) >= SEEN_PER_CONNECTION:
                    self._seen.clear()  # statements run once, forgotten: those run often come back
                self._seen.add(key)
            result = _checked(pgconn.exec_params(numbered(sql), values, types, formats), conn)
        else:
            # NULLs go as None, as psycopg's own cursors send them (its stub says otherwise).
            prepared = pgconn.exec_prepared(name, cast(Sequence[bytes], values), formats)
            if prepared is not None and prepared.error_field(pq.DiagnosticField.SQLSTATE) == _NO_SUCH_STATEMENT:
                # The connection's prepared statements were dropped (psycopg runs DEALLOCATE ALL
                # after a ROLLBACK it sees): forget ours; outside a transaction, run it unprepared.
                self._prepared.clear()
                self._seen.clear()
                if pgconn.transaction_status == pq.TransactionStatus.IDLE:
                    prepared = pgconn.exec_params(numbered(sql), values, types, formats)
            result = _checked(prepared, conn)
        rowcount = -1 if result.command_tuples is None else result.command_tuples
        if result.status != pq.ExecStatus.TUPLES_OK:
            return Result([], rowcount, None)
        index = {(result.fname(i) or b"").decode(): i for i in range(result.nfields)}
        rows: list[Row] = []
        if result.ntuples:
            transformer.set_pgresult(result)
            rows = transformer.load_rows(0, result.ntuples, lambda values: Row(values, index))
            transformer.set_pgresult(None)
        return Result(rows, rowcount, tuple(index))


def command(conn: psycopg.Connection[Any], sql: bytes) -> None:
    """Statements without parameters or rows (BEGIN, COMMIT, ROLLBACK, ...) as one simple query."""
    _checked(conn.pgconn.exec_(sql), conn)


def _checked(result: pq.abc.PGresult | None, conn: psycopg.Connection[Any]) -> pq.abc.PGresult:
    if result is None or result.status not in _OK:
        if result is None or conn.pgconn.status == pq.ConnStatus.BAD:
            raise psycopg.OperationalError("the connection to the database server was lost")
        raise error_from_result(result, encoding=conn.info.encoding)
    return result


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> bytes:
    """The store's `?` placeholders as PostgreSQL's `$1, $2, ...`."""
    counter = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql).encode()
