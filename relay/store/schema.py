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
from dataclasses import dataclass, field
from functools import cache
from typing import cast

from ..records import SchemaTooNew
from .backend import Aggregate, Connection
from .charges import add_job_charge
from .location import Dialect


@dataclass(frozen=True)
class Table:
    """A table as both dialects create it. Columns are Python types: str, float, int, bytes."""

    name: str
    columns: dict[str, type]
    pk: tuple[str, ...]
    not_null: tuple[str, ...] = ()
    defaults: dict[str, object] = field(default_factory=dict)
    # (columns, unique)
    indexes: tuple[tuple[tuple[str, ...], bool], ...] = ()


_PG_TYPES = {str: "text", float: "double precision", int: "bigint", bytes: "bytea"}

_STEP_1_TABLES = (
    Table("meta", {"key": str, "value": str}, pk=("key",)),
    Table(
        "keys",
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
            "limits": str,
        },
        pk=("id",),
        not_null=("name", "salt", "hash", "permissions", "created_at"),
        indexes=((("name",), True),),
    ),
    Table(
        "accounts",
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
            "max_video_seconds_per_day": float,
        },
        pk=("id",),
        not_null=("name", "type", "credential", "base_api", "priority", "enabled", "state", "created_at"),
        defaults={"priority": 100, "enabled": 1, "state": "active"},
        indexes=((("name",), True),),
    ),
    Table(
        "sessions",
        {"session_hash": str, "account": str, "created_at": float, "last_used_at": float, "expires_at": float},
        pk=("session_hash",),
        not_null=("account", "created_at", "last_used_at", "expires_at"),
        indexes=((("account",), False),),
    ),
    Table(
        "outcomes",
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
        pk=("id",),
        not_null=("ts", "request_id", "route", "error_class"),
        indexes=((("ts",), False), (("account", "ts"), False)),
    ),
    Table(
        "videos",
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
            "usd": float,
            "charge_state": str,
            "charged_at": float,
        },
        pk=("id",),
        not_null=("account", "key_name", "kind", "status", "created_at", "recorded_at", "resource"),
        indexes=(
            (("key_name", "created_at"), False),
            (("account",), False),
            (("key_name", "charged_at"), False),
            (("account", "charged_at"), False),
        ),
    ),
    Table(
        "idempotency",
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
        not_null=("request_hash", "state", "created_at", "expires_at"),
    ),
    # Creates on their way upstream: they count against concurrency, budgets and account caps
    # until their job is recorded (or they fail). `owner` is the relay process that wrote one
    # (relay.holders): it counts only while that process keeps its lease. Rows without an owner
    # (older versions) expire.
    Table(
        "reservations",
        {
            "id": str,
            "key_name": str,
            "account": str,
            "video_seconds": float,
            "usd": float,
            "created_at": float,
            "expires_at": float,
            "owner": str,
        },
        pk=("id",),
        not_null=("key_name", "video_seconds", "usd", "created_at", "expires_at"),
        indexes=((("key_name",), False),),
    ),
    Table(
        "holders",
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
        pk=("id",),
        not_null=("hostname", "pid", "started_at", "renewed_at", "expires_at"),
    ),
    # Admitted requests of keys with a requests-per-minute limit (a sliding window). SQLite gives
    # it a rowid; PostgreSQL an id of its own, since every table there gets a primary key.
    Table(
        "request_log",
        {"key_name": str, "ts": float},
        pk=(),
        not_null=("key_name", "ts"),
        indexes=((("key_name", "ts"), False),),
    ),
    Table(
        "prices",
        {"model": str, "size": str, "usd_per_second": float, "updated_at": float},
        pk=("model", "size"),
        not_null=("usd_per_second", "updated_at"),
    ),
    Table(
        "account_quota",
        {"account": str, "observed_at": float, "limit_requests": int, "remaining_requests": int, "resets_at": float},
        pk=("account",),
        not_null=("observed_at",),
    ),
    Table(
        "characters",
        {"id": str, "account": str, "key_name": str, "created_at": float},
        pk=("id",),
        not_null=("account", "key_name", "created_at"),
    ),
)

# Webhooks (relay.webhooks): a key's endpoints, each event on its way to one of them (the exact
# bytes sent, a lease so one worker of one replica attempts it at a time), and every attempt.
_STEP_3_TABLES = (
    Table(
        "webhook_endpoints",
        {
            "id": str,
            "key_name": str,
            "name": str,
            "url": str,
            # A JSON list.
            "event_types": str,
            # Encrypted like account credentials; the hint is what anyone is ever shown.
            "secret": str,
            "secret_hint": str,
            "previous_secret": str,
            "previous_secret_until": float,
            "created_at": float,
            "updated_at": float,
            "disabled_at": float,
            "disabled_reason": str,
            "failing_since": float,
        },
        pk=("id",),
        not_null=("key_name", "name", "url", "event_types", "secret", "secret_hint", "created_at", "updated_at"),
        indexes=((("key_name", "created_at"), False),),
    ),
    Table(
        "webhook_deliveries",
        {
            "id": str,
            "endpoint_id": str,
            "event_id": str,
            "event_type": str,
            "video_id": str,
            "body": bytes,
            "state": str,
            "attempts": int,
            "created_at": float,
            "next_attempt_at": float,
            "last_attempt_at": float,
            "last_status": int,
            "last_error": str,
            "delivered_at": float,
            "lease_owner": str,
            "lease_until": float,
        },
        pk=("id",),
        not_null=("endpoint_id", "event_id", "event_type", "body", "state", "attempts", "created_at"),
        defaults={"attempts": 0},
        indexes=(
            (("state", "next_attempt_at"), False),
            (("endpoint_id", "created_at"), False),
            (("created_at",), False),
        ),
    ),
    # No id of its own: PostgreSQL gives it a row_id that `db copy` leaves to the target to number.
    Table(
        "webhook_attempts",
        {"delivery_id": str, "ts": float, "status": int, "error": str, "latency_seconds": float},
        pk=(),
        not_null=("delivery_id", "ts"),
        indexes=((("delivery_id", "ts"), False),),
    ),
)

# Every table the relay keeps, in an order that copies and deletes can follow.
# What each key and each account has been charged, per UTC day and month (relay.store.charges):
# budgets read one row instead of summing every job of the month.
_STEP_4_TABLES = (
    Table(
        "charge_totals",
        {"subject": str, "name": str, "period": str, "starts_at": float, "video_seconds": float, "usd": float},
        pk=("subject", "name", "period", "starts_at"),
        not_null=("video_seconds", "usd"),
    ),
)

TABLE_NAMES = tuple(table.name for table in (*_STEP_1_TABLES, *_STEP_3_TABLES, *_STEP_4_TABLES))


def _create_sqlite(conn: sqlite3.Connection, table: Table) -> None:
    # Loaded here, when tables are made or migrated: relays and relayctl starting on an
    # up-to-date database (nearly every start) skip it.
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    db.table(table.name).create(
        table.columns,
        pk=(table.pk[0] if len(table.pk) == 1 else table.pk) if table.pk else None,
        not_null=set(table.not_null),
        defaults=table.defaults,
        if_not_exists=True,
    )
    # Columns added after a table first shipped: databases made by older versions get them here.
    existing = set(db.table(table.name).columns_dict)
    for name, kind in table.columns.items():
        if name not in existing:
            db.table(table.name).add_column(name, kind)
    for columns, unique in table.indexes:
        db.table(table.name).create_index(list(columns), unique=unique, if_not_exists=True)


def _create_postgres(conn: Connection, table: Table) -> None:
    definitions = []
    for name, kind in table.columns.items():
        if table.pk == (name,) and kind is int:
            definitions.append(f"{name} bigint GENERATED BY DEFAULT AS IDENTITY")
            continue
        definition = f"{name} {_PG_TYPES[kind]}"
        if name in table.not_null or name in table.pk:
            definition += " NOT NULL"
        if name in table.defaults:
            definition += f" DEFAULT {_literal(table.defaults[name])}"
        definitions.append(definition)
    if table.pk:
        definitions.append(f"PRIMARY KEY ({', '.join(table.pk)})")
    else:
        definitions.insert(0, "row_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(definitions)})")
    for columns, unique in table.indexes:
        conn.execute(
            f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS {_index_name(table.name, columns)}"
            f" ON {table.name} ({', '.join(columns)})"
        )


def _literal(value: object) -> str:
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _step_1_base_schema(conn: Connection, dialect: Dialect) -> None:
    for table in _STEP_1_TABLES:
        if dialect == "sqlite":
            _create_sqlite(cast(sqlite3.Connection, conn), table)
        else:
            _create_postgres(conn, table)
    conn.execute("INSERT INTO meta (key, value) VALUES ('config_version', '0') ON CONFLICT (key) DO NOTHING")


def _step_2_account_models(conn: Connection, dialect: Dialect) -> None:
    """The models an account serves (a JSON list; NULL: every model its type can carry)."""
    conn.execute("ALTER TABLE accounts ADD COLUMN models text")


def _step_3_webhooks_and_job_watch(conn: Connection, dialect: Dialect) -> None:
    """Webhook endpoints, deliveries and attempts; and the job watcher's columns on videos.

    Jobs still unfinished when the relay is upgraded are watched from the start: due at once.
    """
    for table in _STEP_3_TABLES:
        if dialect == "sqlite":
            _create_sqlite(cast(sqlite3.Connection, conn), table)
        else:
            _create_postgres(conn, table)
    # (relay.watcher) when the relay next polls the job, which process holds it and until when,
    # why the watcher stopped following it, and how often it polled.
    conn.execute("ALTER TABLE videos ADD COLUMN watch_next_at double precision")
    conn.execute("ALTER TABLE videos ADD COLUMN watch_owner text")
    conn.execute("ALTER TABLE videos ADD COLUMN watch_until double precision")
    conn.execute("ALTER TABLE videos ADD COLUMN watch_stopped text")
    conn.execute("ALTER TABLE videos ADD COLUMN watch_polls bigint NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_videos_watch_next_at ON videos (watch_next_at)")
    conn.execute("UPDATE videos SET watch_next_at = recorded_at WHERE status NOT IN ('completed', 'failed') AND deleted_at IS NULL")


def _step_4_request_slots_and_charge_totals(conn: Connection, dialect: Dialect) -> None:
    """A request_log row may admit several requests: a relay process claims a key's slots in
    blocks when its requests-per-minute limit is high (relay.limits.RequestSlots). And running
    totals of every charge, per key and account and UTC day and month, summed from the jobs
    recorded so far."""
    conn.execute("ALTER TABLE request_log ADD COLUMN slots bigint NOT NULL DEFAULT 1")
    for table in _STEP_4_TABLES:
        if dialect == "sqlite":
            _create_sqlite(cast(sqlite3.Connection, conn), table)
        else:
            _create_postgres(conn, table)
    rows = conn.execute(
        "SELECT key_name, account, charged_at, billable_seconds, usd FROM videos"
        " WHERE charged_at IS NOT NULL AND charge_state IN ('reserved', 'settled')"
    )
    for row in rows.fetchall():
        add_job_charge(conn, row)


def _step_5_drop_the_videos_account_index(conn: Connection, dialect: Dialect) -> None:
    """videos (account) repeats the leading column of videos (account, charged_at), which serves
    every lookup by account as well; keeping both cost every job's record one more index write."""
    conn.execute("DROP INDEX IF EXISTS idx_videos_account")


def _step_6_index_the_unfinished_jobs_by_account(conn: Connection, dialect: Dialect) -> None:
    """The job watcher claims each account's due jobs up to the polls that account has to spare
    (relay.store.videos): through videos (account, watch_next_at) it reads only those, where
    videos (watch_next_at) walked every due job of the accounts skipped, each round, in the
    claim's write transaction. Only unfinished jobs not deleted are in the index, so finished
    ones cost it nothing, and counting the jobs in flight (at every scrape) reads it instead of
    every job the relay ever recorded."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_videos_unfinished ON videos (account, watch_next_at)"
        " WHERE deleted_at IS NULL AND status NOT IN ('completed', 'failed')"
    )
    conn.execute("DROP INDEX IF EXISTS idx_videos_watch_next_at")


def _step_7_drop_the_videos_key_charge_index(conn: Connection, dialect: Dialect) -> None:
    """Budgets read a key's charges from their running totals (step 4), so videos (key_name,
    charged_at) served nothing a relay does: a key's charges since any other time (no caller
    asks) are found through videos (key_name, created_at). Every job's record wrote it."""
    conn.execute("DROP INDEX IF EXISTS idx_videos_key_name_charged_at")


# Append only: a released step never changes (databases out there ran it as it was). A step
# gets the connection of the upgrade's write transaction and the dialect it runs on.
MIGRATIONS: tuple[Callable[[Connection, Dialect], None], ...] = (
    _step_1_base_schema,
    _step_2_account_models,
    _step_3_webhooks_and_job_watch,
    _step_4_request_slots_and_charge_totals,
    _step_5_drop_the_videos_account_index,
    _step_6_index_the_unfinished_jobs_by_account,
    _step_7_drop_the_videos_key_charge_index,
)
# Indexes step 1 makes that a later step drops, and that step: a repair of step 1 (below)
# makes them again, so the step (idempotent) runs again after it.
_STEP_1_INDEXES_DROPPED = {"idx_videos_account": 5, "idx_videos_key_name_charged_at": 7}
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class SchemaStatus:
    # The database as shown to people (a PostgreSQL password masked).
    database: str
    dialect: Dialect
    # None: no version recorded (a new, empty database, or not a relay database).
    version: int | None
    code_version: int
    pending: tuple[int, ...]
    # journal_mode (SQLite), server_version (PostgreSQL).
    details: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {
            "database": self.database,
            "dialect": self.dialect,
            "version": self.version,
            "code_version": self.code_version,
            **self.details,
            "pending": list(self.pending),
        }


def recorded_version(conn: Connection, dialect: Dialect) -> int | None:
    if not has_table(conn, dialect, "meta"):
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def has_table(conn: Connection, dialect: Dialect, name: str) -> bool:
    if dialect == "sqlite":
        statement = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        statement = "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?"
    return conn.execute(statement, (name,)).fetchone() is not None


def pending_steps(conn: Connection, dialect: Dialect) -> tuple[int, ...]:
    """The steps an upgrade would run, in order; raises SchemaTooNew for a newer database."""
    version = recorded_version(conn, dialect) or 0
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database has schema version {version}, newer than this release knows ({SCHEMA_VERSION}):"
            " run the release that upgraded it, or a newer one"
        )
    steps = tuple(range(version + 1, SCHEMA_VERSION + 1))
    # Only SQLite databases predate versioned migrations.
    if version >= 1 and dialect == "sqlite" and _falls_short_of_step_1(cast(sqlite3.Connection, conn)):
        again = sorted({step for step in _STEP_1_INDEXES_DROPPED.values() if step <= version})
        steps = (1, *again, *steps)
    return steps


def upgrade(conn: Connection, dialect: Dialect) -> tuple[int, ...]:
    """Run the pending steps on a connection inside a write transaction; return their numbers."""
    steps = pending_steps(conn, dialect)
    for number in steps:
        MIGRATIONS[number - 1](conn, dialect)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE CAST(meta.value AS INTEGER) < ?",
            (str(number), number),
        )
    return steps


def _shape(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """Every (table, column) and (index, name) a SQLite database has."""
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
    """What step 1 leaves that later steps keep: its tables' columns and named indexes, read from
    their definitions (SQLite's own indexes for primary keys come with the tables). Building step 1
    in a scratch database to look at it cost every relay and relayctl start a tenth of a second."""
    columns = {(table.name, column) for table in _STEP_1_TABLES for column in table.columns}
    indexes = {("index", _index_name(table.name, names)) for table in _STEP_1_TABLES for names, _ in table.indexes}
    return frozenset(columns | indexes) - {("index", name) for name in _STEP_1_INDEXES_DROPPED}


def _index_name(table: str, columns: tuple[str, ...]) -> str:
    """The name sqlite-utils gives an index, and the PostgreSQL tables' indexes are given."""
    return f"idx_{table}_{'_'.join(columns)}"


def _falls_short_of_step_1(conn: sqlite3.Connection) -> bool:
    return not _step_1_shape() <= _shape(conn)


class Schema(Aggregate):
    def ensure_schema(self) -> tuple[int, ...]:
        """Bring the database up to this code's schema (start-up and `relayctl db upgrade`); return the steps run.

        In one write transaction: on PostgreSQL its advisory lock makes replicas that start
        together take turns, and each finds the work done or does it.
        """
        with self.transaction() as conn:
            return upgrade(conn, self._db.dialect)

    def schema_status(self) -> SchemaStatus:
        """The database's schema against this code's, without changing it."""
        dialect = self._db.dialect
        with self.reading() as conn:
            version = recorded_version(conn, dialect)
            newer = version is not None and version > SCHEMA_VERSION
            pending = () if newer else pending_steps(conn, dialect)
        return SchemaStatus(
            database=self._db.location.shown,
            dialect=dialect,
            version=version,
            code_version=SCHEMA_VERSION,
            pending=pending,
            details=self._db.describe(),
        )
