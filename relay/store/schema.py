"""The schema in one place, as numbered migrations, and how a database is brought up to date.

Step 1 is the schema as releases before versioned migrations made it. Those releases recorded
schema_version 1 whatever columns they had, and each start added what was missing: so step 1 is
idempotent, and a database at version 1 whose tables, columns or indexes fall short of it runs
it again. Every later change appends a step; a step runs once, in order, and records its number.

The relay upgrades at start-up and `relayctl db upgrade` does the same: inside one write
transaction, so processes starting together take turns and each finds the work done or does it.
A database recorded at a version newer than this code knows is refused: its schema is unknown.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import sqlite_utils

from ..records import SchemaTooNew
from .connection import Database


def _add_missing_columns(db: sqlite_utils.Database, table: str, columns: dict[str, type]) -> None:
    """Columns added after a table first shipped: databases made by older versions get them here."""
    existing = set(db.table(table).columns_dict)
    for name, kind in columns.items():
        if name not in existing:
            db.table(table).add_column(name, kind)


def _step_1_base_schema(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn)
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("keys").create(
        {
            "id": str,
            "name": str,
            "salt": str,
            "hash": str,
            "permissions": str,
            "created_at": float,
            "expires_at": float,
            "revoked_at": float,
            "last_used_at": float,
            "note": str,
            # After `keys rotate --grace`, the old secret keeps working until this time.
            "previous_salt": str,
            "previous_hash": str,
            "previous_valid_until": float,
            "rotated_at": float,
        },
        pk="id",
        not_null=["name", "salt", "hash", "permissions", "created_at"],
        if_not_exists=True,
    )
    db.table("keys").create_index(["name"], unique=True, if_not_exists=True)
    db.table("accounts").create(
        {
            "id": int,
            "name": str,
            "type": str,
            "credential": str,
            "base_api": str,
            "priority": int,
            "enabled": int,
            "state": str,
            "state_reason": str,
            "state_since": float,
            "state_until": float,
            "last_error": str,
            "last_used_at": float,
            "created_at": float,
            "credential_rotated_at": float,
            # Outbound proxy URL, encrypted like the credential (it may carry a password).
            "proxy": str,
        },
        pk="id",
        not_null=["name", "type", "credential", "base_api", "priority", "enabled", "state", "created_at"],
        defaults={"priority": 100, "enabled": 1, "state": "active"},
        if_not_exists=True,
    )
    db.table("accounts").create_index(["name"], unique=True, if_not_exists=True)
    db.table("sessions").create(
        {"session_hash": str, "account": str, "created_at": float, "last_used_at": float, "expires_at": float},
        pk="session_hash",
        not_null=["account", "created_at", "last_used_at", "expires_at"],
        if_not_exists=True,
    )
    db.table("sessions").create_index(["account"], if_not_exists=True)
    db.table("outcomes").create(
        {
            "id": int,
            "ts": float,
            "request_id": str,
            "key_name": str,
            "account": str,
            "account_type": str,
            "route": str,
            "upstream_status": int,
            "error_class": str,
            "latency_ms": float,
            "job_status": str,
        },
        pk="id",
        not_null=["ts", "request_id", "route", "error_class"],
        if_not_exists=True,
    )
    db.table("outcomes").create_index(["ts"], if_not_exists=True)
    db.table("outcomes").create_index(["account", "ts"], if_not_exists=True)
    db.table("videos").create(
        {
            "id": str,
            "account": str,
            "key_name": str,
            "kind": str,
            "source_video_id": str,
            "model": str,
            "seconds": str,
            "billable_seconds": float,
            "size": str,
            "status": str,
            "progress": int,
            "created_at": float,
            "recorded_at": float,
            "updated_at": float,
            "finished_at": float,
            "expires_at": float,
            "deleted_at": float,
            "resource": str,
        },
        pk="id",
        not_null=["account", "key_name", "kind", "status", "created_at", "recorded_at", "resource"],
        if_not_exists=True,
    )
    db.table("videos").create_index(["key_name", "created_at"], if_not_exists=True)
    db.table("videos").create_index(["account"], if_not_exists=True)
    db.table("idempotency").create(
        {
            "key_name": str,
            "idempotency_key": str,
            "request_hash": str,
            "state": str,
            "status": int,
            "content_type": str,
            "body": bytes,
            "created_at": float,
            "expires_at": float,
        },
        pk=("key_name", "idempotency_key"),
        not_null=["request_hash", "state", "created_at", "expires_at"],
        if_not_exists=True,
    )
    _add_missing_columns(db, "keys", {"limits": str})
    _add_missing_columns(db, "accounts", {"max_video_seconds_per_day": float})
    _add_missing_columns(db, "videos", {"usd": float, "charge_state": str, "charged_at": float})
    db.table("videos").create_index(["key_name", "charged_at"], if_not_exists=True)
    db.table("videos").create_index(["account", "charged_at"], if_not_exists=True)
    # Creates on their way upstream: they count against concurrency, budgets and account
    # caps until their job is recorded (or they fail). Rows of a dead worker expire.
    db.table("reservations").create(
        {
            "id": str,
            "key_name": str,
            "account": str,
            "video_seconds": float,
            "usd": float,
            "created_at": float,
            "expires_at": float,
        },
        pk="id",
        not_null=["key_name", "video_seconds", "usd", "created_at", "expires_at"],
        if_not_exists=True,
    )
    db.table("reservations").create_index(["key_name"], if_not_exists=True)
    # The relay process that wrote a reservation (relay.holders): it counts only while
    # that process keeps its lease here. Rows without an owner (older versions) expire.
    _add_missing_columns(db, "reservations", {"owner": str})
    db.table("holders").create(
        {
            "id": str,
            "host": str,
            "hostname": str,
            "pid": int,
            "process_started": str,
            "started_at": float,
            "renewed_at": float,
            "expires_at": float,
        },
        pk="id",
        not_null=["hostname", "pid", "started_at", "renewed_at", "expires_at"],
        if_not_exists=True,
    )
    # Admitted requests of keys with a requests-per-minute limit (a sliding window).
    db.table("request_log").create({"key_name": str, "ts": float}, not_null=["key_name", "ts"], if_not_exists=True)
    db.table("request_log").create_index(["key_name", "ts"], if_not_exists=True)
    db.table("prices").create(
        {"model": str, "size": str, "usd_per_second": float, "updated_at": float},
        pk=("model", "size"),
        not_null=["usd_per_second", "updated_at"],
        if_not_exists=True,
    )
    db.table("account_quota").create(
        {
            "account": str,
            "observed_at": float,
            "limit_requests": int,
            "remaining_requests": int,
            "resets_at": float,
        },
        pk="account",
        not_null=["observed_at"],
        if_not_exists=True,
    )
    db.table("characters").create(
        {"id": str, "account": str, "key_name": str, "created_at": float},
        pk="id",
        not_null=["account", "key_name", "created_at"],
        if_not_exists=True,
    )
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('config_version', '0')")


# Append only: a released step never changes (databases out there ran it as it was).
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_step_1_base_schema,)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class SchemaStatus:
    path: str
    # None: no version recorded (a new, empty file, or not a relay database).
    version: int | None
    code_version: int
    journal_mode: str
    pending: tuple[int, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "database": self.path,
            "version": self.version,
            "code_version": self.code_version,
            "journal_mode": self.journal_mode,
            "pending": list(self.pending),
        }


def recorded_version(conn: sqlite3.Connection) -> int | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def pending_steps(conn: sqlite3.Connection) -> tuple[int, ...]:
    """The steps an upgrade would run, in order; raises SchemaTooNew for a newer database."""
    version = recorded_version(conn) or 0
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database has schema version {version}, newer than this release knows ({SCHEMA_VERSION}):"
            " run the release that upgraded it, or a newer one"
        )
    steps = tuple(range(version + 1, SCHEMA_VERSION + 1))
    if version >= 1 and _falls_short_of_step_1(conn):
        steps = (1, *steps)
    return steps


def upgrade(conn: sqlite3.Connection) -> tuple[int, ...]:
    """Run the pending steps on a connection inside a write transaction; return their numbers."""
    steps = pending_steps(conn)
    for number in steps:
        MIGRATIONS[number - 1](conn)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE CAST(value AS INTEGER) < ?",
            (str(number), number),
        )
    return steps


def _shape(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """Every (table, column) and (index, name) the database has."""
    shape = set()
    for table, kind in conn.execute("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'index')"):
        if kind == "index":
            shape.add(("index", table))
        else:
            shape.update((table, column[1]) for column in conn.execute(f"PRAGMA table_info({_quoted(table)})"))
    return shape


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@cache
def _step_1_shape() -> frozenset[tuple[str, str]]:
    conn = sqlite3.connect(":memory:")
    try:
        _step_1_base_schema(conn)
        return frozenset(_shape(conn))
    finally:
        conn.close()


def _falls_short_of_step_1(conn: sqlite3.Connection) -> bool:
    return not _step_1_shape() <= _shape(conn)


class Schema(Database):
    def ensure_schema(self) -> tuple[int, ...]:
        """Bring the database up to this code's schema (start-up and `relayctl db upgrade`); return the steps run."""
        with self.transaction() as conn:
            return upgrade(conn)

    def schema_status(self) -> SchemaStatus:
        """The database's schema against this code's, without changing it."""
        conn = self._conn()
        version = recorded_version(conn)
        newer = version is not None and version > SCHEMA_VERSION
        return SchemaStatus(
            path=str(self.path),
            version=version,
            code_version=SCHEMA_VERSION,
            journal_mode=self.journal_mode(),
            pending=() if newer else pending_steps(conn),
        )
