"""The relay's database: the schema and every query the relay and the CLI run.

`Store` is assembled from one class per aggregate (keys, accounts, sessions, videos,
reservations, outcomes, idempotency, prices, meta, webhooks, retention), each holding that aggregate's statements in
SQL both databases run, over a backend (`backend`: `reading()`, `transaction()`) chosen by the
database's location: SQLite (`sqlite`) or PostgreSQL (`postgres`), and the versioned schema
(`schema`). Call sites keep one object: `store.reserve(...)`.

The records it reads and writes live in relay.records; they are re-exported here for ops/ and tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..records import (
    ACCOUNT_STATES,
    ACCOUNT_TYPES,
    CHARGE_STATES,
    STORED_STATES,
    TERMINAL_STATUSES,
    WEBHOOK_DELIVERY_STATES,
    WEBHOOK_DISABLED_REASONS,
    WEBHOOK_EVENT_TYPES,
    Account,
    AccountQuota,
    AlreadyExists,
    KeyRecord,
    NotFound,
    Outcome,
    SchemaTooNew,
    StoreBug,
    StoreUnavailable,
    Usage,
    Video,
    WebhookDelivery,
    WebhookEndpoint,
)
from .accounts import Accounts
from .backend import NOT_NOW, Backend, NotNow
from .idempotency import Idempotency
from .keys import Keys
from .location import DatabaseLocation, LocationError, parse_location
from .meta import Meta
from .outcomes import Outcomes
from .pool_settings import PoolSettings
from .prices import Prices
from .reservations import Reservations
from .retention import Retention
from .schema import SCHEMA_VERSION, Schema, SchemaStatus
from .sessions import Sessions
from .sqlite import BUSY_TIMEOUT_SECONDS, SQLiteBackend
from .videos import Videos
from .webhooks import EndpointLimitReached, Webhooks, enqueue_video_event

T = TypeVar("T")

__all__ = [
    "NOT_NOW",
    "NotNow",
    "ACCOUNT_STATES",
    "ACCOUNT_TYPES",
    "BUSY_TIMEOUT_SECONDS",
    "CHARGE_STATES",
    "DatabaseLocation",
    "LocationError",
    "PoolSettings",
    "SCHEMA_VERSION",
    "STORED_STATES",
    "TERMINAL_STATUSES",
    "WEBHOOK_DELIVERY_STATES",
    "WEBHOOK_DISABLED_REASONS",
    "WEBHOOK_EVENT_TYPES",
    "Account",
    "AccountQuota",
    "AlreadyExists",
    "EndpointLimitReached",
    "KeyRecord",
    "NotFound",
    "Outcome",
    "SchemaStatus",
    "SchemaTooNew",
    "Store",
    "StoreBug",
    "StoreUnavailable",
    "Usage",
    "Video",
    "WebhookDelivery",
    "WebhookEndpoint",
    "enqueue_video_event",
    "parse_location",
]


class Store(Schema, Meta, Keys, Accounts, Sessions, Videos, Reservations, Outcomes, Idempotency, Prices, Webhooks, Retention):
    """One per process, safe to share between threads."""

    def __init__(
        self,
        location: DatabaseLocation | Path | str,
        *,
        read_only: bool = False,
        busy_timeout_seconds: float = BUSY_TIMEOUT_SECONDS,
        pool: PoolSettings | None = None,
    ) -> None:
        self.location = parse_location(location)
        self.read_only = read_only
        backend: Backend
        if self.location.is_sqlite:
            backend = SQLiteBackend(self.location, read_only=read_only, busy_timeout_seconds=busy_timeout_seconds)
        else:
            from .postgres import PostgresBackend  # only PostgreSQL users pay for importing the driver

            backend = PostgresBackend(self.location, read_only=read_only, busy_timeout_seconds=busy_timeout_seconds, pool=pool)
        self._db = backend

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def refuse_while_down(self) -> None:
        """Raise the database's last failure while no call has succeeded since.

        For work that starts something upstream that only the database can keep track of (a
        create): better a 503 before than a job nobody can follow. The relay's background
        refresh reads the database twice a second, so this clears soon after it returns.
        """
        if self._db.down is not None:
            raise self._db.down

    def run_now(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | NotNow:
        """`function(*args, **kwargs)` in this thread if the database can take it without waiting
        for a lock (see the backends' run_now), else NOT_NOW, and nothing was run."""
        return self._db.run_now(functools.partial(function, *args, **kwargs))

    def checkpoint_manually(self) -> None:
        self._db.checkpoint_manually()

    def checkpoint(self) -> None:
        self._db.checkpoint()

    def integrity_check(self) -> str:
        return self._db.integrity_check()

    def close(self) -> None:
        self._db.close()
