"""The seam between the store's queries and the two databases it runs on.

Every aggregate writes one set of SQL, in the dialect both SQLite (3.35+) and PostgreSQL speak:
`?` placeholders, `ON CONFLICT ... DO UPDATE/NOTHING`, `greatest()`, `CASE` instead of summing
booleans. A backend (relay.store.sqlite, relay.store.postgres) supplies what differs:

- `reading()`: a connection for statements outside a transaction (autocommit);
- `transaction()`: one write transaction. Its statements commit together or not at all, and it
  excludes every other writer for its whole span, on SQLite by its single write lock and on
  PostgreSQL by an advisory lock, so a check and the write that depends on it (reserve a budget,
  claim a session or an Idempotency-Key) never interleave with another process's, on any host;
- connection set-up, pooling, and turning driver errors into StoreUnavailable.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, TypeVar

from ..records import StoreUnavailable
from .location import DatabaseLocation, Dialect

T = TypeVar("T")


class NotNow(enum.Enum):
    """What `run_now` gives back when the call would have had to wait: it was not run."""

    NOT_NOW = "not now"


NOT_NOW: Literal[NotNow.NOT_NOW] = NotNow.NOT_NOW


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the aggregates call on a connection; rows index by position and by column name."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object: ...


class Backend(Protocol):
    dialect: Dialect
    location: DatabaseLocation
    read_only: bool
    # The failure of the last call, until one succeeds again: a create is refused before it
    # reaches an upstream while the database cannot record the job it would start.
    down: StoreUnavailable | None

    def reading(self) -> AbstractContextManager[Connection]: ...

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[Connection]: ...

    def run_now(self, call: Callable[[], T]) -> T | NotNow: ...

    def checkpoint_manually(self) -> None: ...

    def checkpoint(self) -> None: ...

    def integrity_check(self) -> str: ...

    def describe(self) -> dict[str, str]: ...

    def close(self) -> None: ...


class Aggregate:
    """What every aggregate of the store (keys, accounts, ...) stands on: the open backend."""

    _db: Backend

    def reading(self) -> AbstractContextManager[Connection]:
        return self._db.reading()

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[Connection]:
        """A write transaction. `durable=False` for writes whose loss in a database crash harms
        nothing (what they guard dies with the processes that wrote them, or they are kept
        conservatively): PostgreSQL then answers the commit without waiting for its WAL flush.
        Other transactions see it at once either way, and any later durable commit flushes it too."""
        return self._db.transaction(durable=durable)
