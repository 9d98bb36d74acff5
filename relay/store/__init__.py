"""The relay's database: the schema and every query the relay and the CLI run.

`Store` is assembled from one class per aggregate (keys, accounts, sessions, videos,
reservations, outcomes, idempotency, prices, meta), each holding that aggregate's statements,
over the connection seam (`connection.Database`: connections, `transaction()`, the write turn)
and the versioned schema (`schema`). Call sites keep one object: `store.reserve(...)`.

The records it reads and writes live in relay.records; they are re-exported here for ops/ and tests.
"""

from __future__ import annotations

from ..records import (
    ACCOUNT_STATES,
    ACCOUNT_TYPES,
    CHARGE_STATES,
    STORED_STATES,
    TERMINAL_STATUSES,
    Account,
    AccountQuota,
    AlreadyExists,
    KeyRecord,
    NotFound,
    Outcome,
    SchemaTooNew,
    StoreUnavailable,
    Usage,
    Video,
)
from .accounts import Accounts
from .connection import BUSY_TIMEOUT_SECONDS
from .idempotency import Idempotency
from .keys import Keys
from .meta import Meta
from .outcomes import Outcomes
from .prices import Prices
from .reservations import Reservations
from .schema import SCHEMA_VERSION, Schema, SchemaStatus
from .sessions import Sessions
from .videos import Videos

__all__ = [
    "ACCOUNT_STATES",
    "ACCOUNT_TYPES",
    "BUSY_TIMEOUT_SECONDS",
    "CHARGE_STATES",
    "SCHEMA_VERSION",
    "STORED_STATES",
    "TERMINAL_STATUSES",
    "Account",
    "AccountQuota",
    "AlreadyExists",
    "KeyRecord",
    "NotFound",
    "Outcome",
    "SchemaStatus",
    "SchemaTooNew",
    "Store",
    "StoreUnavailable",
    "Usage",
    "Video",
]


class Store(Schema, Meta, Keys, Accounts, Sessions, Videos, Reservations, Outcomes, Idempotency, Prices):
    """One per process. Each thread gets its own connection to the same file."""
