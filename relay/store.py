"""SQLite through sqlite-utils: the schema and every query the relay and the CLI run.

Several uvicorn workers and the CLI share one database file, so:
- WAL mode and a busy timeout let readers and one writer proceed together;
- every read-modify-write runs in `BEGIN IMMEDIATE`, so two writers never interleave;
- writers queue on a lock (threads) and a lock file (`<database>-lock`, processes) before
  that, so a waiting writer wakes when its turn comes instead of sleeping in SQLite's busy
  handler; WAL checkpoints run in the recorder's thread, not in commits on the request path;
- every change to keys or accounts bumps `meta.config_version`, which running relays poll
  to refresh their in-memory snapshots within a fraction of a second.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import sqlite_utils

if TYPE_CHECKING:
    from .holders import Holder

R = TypeVar("R")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 10.0

ACCOUNT_TYPES = ("openai-responses", "openai")
ACCOUNT_STATES = ("active", "rate_limited", "unauthorized", "disabled")
# What the relay stores; `disabled` is how an account with enabled = 0 shows.
STORED_STATES = ("active", "rate_limited", "unauthorized")


class NotFound(LookupError):
    """No row with that name."""


class AlreadyExists(ValueError):
    """A row with that name exists already."""


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    type: str
    base_api: str
    priority: int
    enabled: bool
    state: str
    state_reason: str | None
    state_since: float | None
    state_until: float | None
    last_error: str | None
    last_used_at: float | None
    created_at: float
    credential_encrypted: str = field(repr=False)
    credential_rotated_at: float | None = None
    proxy_encrypted: str | None = field(default=None, repr=False)
    # Operator's cap on video-seconds this account may render per UTC day (None: no cap).
    max_video_seconds_per_day: float | None = None

    def effective_state(self, now: float) -> str:
        if not self.enabled:
            return "disabled"
        if self.state == "rate_limited" and (self.state_until is None or self.state_until <= now):
            return "active"
        return self.state

    def is_usable(self, now: float) -> bool:
        return self.effective_state(now) == "active"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    salt: str = field(repr=False)
    hash: str = field(repr=False)
    permissions: frozenset[str]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    note: str | None
    previous_salt: str | None = field(default=None, repr=False)
    previous_hash: str | None = field(default=None, repr=False)
    previous_valid_until: float | None = None
    rotated_at: float | None = None
    # The key's limits as stored JSON (relay.limits.Limits reads it); None: no limits.
    limits_json: str | None = None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Outcome:
    ts: float
    request_id: str
    key_name: str | None
    account: str | None
    account_type: str | None
    route: str
    upstream_status: int | None
    error_class: str
    latency_ms: float | None
    # Set on the retrieve that saw a job reach `completed` or `failed`.
    job_status: str | None = None


TERMINAL_STATUSES = ("completed", "failed")


@dataclass(frozen=True)
class Video:
    id: str
    account: str
    key_name: str
    kind: str
    source_video_id: str | None
    model: str | None
    seconds: str | None
    billable_seconds: float | None
    size: str | None
    status: str
    progress: int | None
    created_at: float
    recorded_at: float
    finished_at: float | None
    deleted_at: float | None
    resource: str
    expires_at: float | None = None
    # Cost accounting: USD reserved at create, settled on completion, released on failure.
    usd: float | None = None
    charge_state: str | None = None
    charged_at: float | None = None


# A reservation counts while the process that wrote it holds its lease (relay.holders); rows
# from versions without owners keep only their own expiry. Takes the current time.time().
_HELD_BY_LIVE_OWNER = "(owner IS NULL OR owner IN (SELECT id FROM holders WHERE expires_at > ?))"

CHARGE_STATES = ("reserved", "settled", "released")
# Charges that count against budgets.
_COUNTED = "('reserved', 'settled')"


@dataclass(frozen=True)
class Usage:
    """What a key or an account has used in a period: its jobs plus the creates still in flight."""

    in_flight: int = 0
    video_seconds: float = 0.0
    usd: float = 0.0


@dataclass(frozen=True)
class AccountQuota:
    """The upstream's own request quota for an account, from its x-ratelimit-* headers."""

    account: str
    observed_at: float
    limit_requests: int | None
    remaining_requests: int | None
    resets_at: float | None


def _create_private(path: Path) -> None:
    """Create the database file 0600, before SQLite would create it 0644: it holds encrypted
    credentials and key hashes. SQLite gives the -wal and -shm files the database file's mode.

    Only a file this call creates is opened and closed here: closing any descriptor of a file
    drops every POSIX lock this process holds on it, SQLite's included.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class Store:
    """One per process. Each thread gets its own connection to the same file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_turn = threading.Lock()
        self._manual_checkpoints = False
        self._lock_fd: int | None = None
        _create_private(self.path)

    # -- connections and transactions ---------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            self._local.conn = conn
            with self._lock:
                if self._manual_checkpoints:
                    conn.execute("PRAGMA wal_autocheckpoint=0")
                self._connections.append(conn)
        return conn

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

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # Writers take turns here rather than in SQLite: a connection that finds the database
        # locked sleeps in SQLite's busy handler for up to tens of milliseconds at a time.
        with self._write_turn, self._process_turn():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _process_turn(self) -> Iterator[None]:
        """Processes sharing the database (workers, relayctl) take turns on a lock file.

        The kernel wakes the next process the moment the lock is free, where SQLite's own lock
        makes a waiting writer sleep 1, 2, 5, 10 ... ms between tries: with 2 workers creating
        at concurrency 64, 876 -> 1,143 creates/s and p99 392 -> 146 ms (measured). SQLite's
        lock still guards the data; this only orders the waiting. Called with `_write_turn`
        held, so one thread per process is here at a time.
        """
        if self._lock_fd is None:
            self._lock_fd = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
        with self._write_turn:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- schema -----------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        with self._write() as conn:
            db = sqlite_utils.Database(conn)
            db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
            db["keys"].create(
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
            db["keys"].create_index(["name"], unique=True, if_not_exists=True)
            db["accounts"].create(
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
            db["accounts"].create_index(["name"], unique=True, if_not_exists=True)
            db["sessions"].create(
                {"session_hash": str, "account": str, "created_at": float, "last_used_at": float, "expires_at": float},
                pk="session_hash",
                not_null=["account", "created_at", "last_used_at", "expires_at"],
                if_not_exists=True,
            )
            db["sessions"].create_index(["account"], if_not_exists=True)
            db["outcomes"].create(
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
            db["outcomes"].create_index(["ts"], if_not_exists=True)
            db["outcomes"].create_index(["account", "ts"], if_not_exists=True)
            db["videos"].create(
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
            db["videos"].create_index(["key_name", "created_at"], if_not_exists=True)
            db["videos"].create_index(["account"], if_not_exists=True)
            db["idempotency"].create(
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
            db["videos"].create_index(["key_name", "charged_at"], if_not_exists=True)
            db["videos"].create_index(["account", "charged_at"], if_not_exists=True)
            # Creates on their way upstream: they count against concurrency, budgets and account
            # caps until their job is recorded (or they fail). Rows of a dead worker expire.
            db["reservations"].create(
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
            db["reservations"].create_index(["key_name"], if_not_exists=True)
            # The relay process that wrote a reservation (relay.holders): it counts only while
            # that process keeps its lease here. Rows without an owner (older versions) expire.
            _add_missing_columns(db, "reservations", {"owner": str})
            db["holders"].create(
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
            db["request_log"].create({"key_name": str, "ts": float}, not_null=["key_name", "ts"], if_not_exists=True)
            db["request_log"].create_index(["key_name", "ts"], if_not_exists=True)
            db["prices"].create(
                {"model": str, "size": str, "usd_per_second": float, "updated_at": float},
                pk=("model", "size"),
                not_null=["usd_per_second", "updated_at"],
                if_not_exists=True,
            )
            db["account_quota"].create(
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
            db["characters"].create(
                {"id": str, "account": str, "key_name": str, "created_at": float},
                pk="id",
                not_null=["account", "key_name", "created_at"],
                if_not_exists=True,
            )
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?), ('config_version', '0')",
                (str(SCHEMA_VERSION),),
            )

    # -- meta -----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless a value is there already; return the stored one."""
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()["value"]

    def config_version(self) -> int:
        return int(self.get_meta("config_version") or 0)

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'")

    # -- keys -------------------------------------------------------------------------------------

    def insert_key(self, record: KeyRecord) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM keys WHERE name = ?", (record.name,)).fetchone():
                raise AlreadyExists(f"a key named {record.name!r} exists already")
            conn.execute(
                "INSERT INTO keys (id, name, salt, hash, permissions, created_at, expires_at, revoked_at, note, limits)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.salt,
                    record.hash,
                    json.dumps(sorted(record.permissions)),
                    record.created_at,
                    record.expires_at,
                    record.revoked_at,
                    record.note,
                    record.limits_json,
                ),
            )
            self._bump(conn)

    def key_by_id(self, key_id: str) -> KeyRecord | None:
        row = self._conn().execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else _key(row)

    def key_by_name(self, name: str) -> KeyRecord:
        row = self._conn().execute("SELECT * FROM keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no key named {name!r}")
        return _key(row)

    def list_keys(self) -> list[KeyRecord]:
        return [_key(row) for row in self._conn().execute("SELECT * FROM keys ORDER BY name")]

    def revoke_key(self, name: str, now: float) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE keys SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ?", (now, name)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no key named {name!r}")
            self._bump(conn)

    def rotate_key_secret(self, name: str, *, salt: str, hash: str, grace_until: float | None, now: float) -> None:
        """New secret for a key; the old one stays valid until `grace_until` (None: not at all)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE keys SET previous_salt = salt, previous_hash = hash, previous_valid_until = ?,"
                " salt = ?, hash = ?, rotated_at = ? WHERE name = ?",
                (grace_until, salt, hash, now, name),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no key named {name!r}")
            self._bump(conn)

    def set_key_permissions(self, name: str, permissions: frozenset[str]) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE keys SET permissions = ? WHERE name = ?", (json.dumps(sorted(permissions)), name)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no key named {name!r}")
            self._bump(conn)

    def set_key_limits(self, name: str, limits_json: str | None) -> None:
        with self._write() as conn:
            if conn.execute("UPDATE keys SET limits = ? WHERE name = ?", (limits_json, name)).rowcount == 0:
                raise NotFound(f"no key named {name!r}")
            self._bump(conn)

    # -- accounts ---------------------------------------------------------------------------------

    def insert_account(
        self, *, name: str, type: str, credential_encrypted: str, base_api: str, priority: int, now: float
    ) -> Account:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"an account named {name!r} exists already")
            conn.execute(
                "INSERT INTO accounts (name, type, credential, base_api, priority, enabled, state, state_since,"
                " created_at) VALUES (?, ?, ?, ?, ?, 1, 'active', ?, ?)",
                (name, type, credential_encrypted, base_api, priority, now, now),
            )
            self._bump(conn)
        return self.account(name)

    def set_account_enabled(self, name: str, enabled: bool) -> None:
        with self._write() as conn:
            cursor = conn.execute("UPDATE accounts SET enabled = ? WHERE name = ?", (int(enabled), name))
            if cursor.rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            self._bump(conn)

    def set_account_proxy(self, name: str, proxy_encrypted: str | None) -> None:
        with self._write() as conn:
            if conn.execute("UPDATE accounts SET proxy = ? WHERE name = ?", (proxy_encrypted, name)).rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            self._bump(conn)

    def set_account_base_api(self, name: str, base_api: str) -> None:
        with self._write() as conn:
            if conn.execute("UPDATE accounts SET base_api = ? WHERE name = ?", (base_api, name)).rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            self._bump(conn)

    def set_account_priority(self, name: str, priority: int) -> None:
        with self._write() as conn:
            if conn.execute("UPDATE accounts SET priority = ? WHERE name = ?", (priority, name)).rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            self._bump(conn)

    def set_account_cap(self, name: str, max_video_seconds_per_day: float | None) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE accounts SET max_video_seconds_per_day = ? WHERE name = ?", (max_video_seconds_per_day, name)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            self._bump(conn)

    def replace_credential(self, name: str, credential_encrypted: str, now: float) -> None:
        """A new credential clears `unauthorized`: the old one was what failed."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE accounts SET credential = ?, credential_rotated_at = ?, state = 'active',"
                " state_reason = 'credential rotated', state_since = ?, state_until = NULL WHERE name = ?",
                (credential_encrypted, now, now, name),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            self._bump(conn)

    def reencrypt_credentials(self, reencrypt: Callable[[str], str], check_value: str) -> int:
        """Re-encrypt every credential and the key check in one transaction; return how many."""
        with self._write() as conn:
            rows = conn.execute("SELECT id, credential, proxy FROM accounts").fetchall()
            conn.executemany(
                "UPDATE accounts SET credential = ?, proxy = ? WHERE id = ?",
                [(reencrypt(r["credential"]), reencrypt(r["proxy"]) if r["proxy"] else None, r["id"]) for r in rows],
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'secret_check'", (check_value,))
            self._bump(conn)
            return len(rows)

    def live_video_count(self, account: str, now: float) -> int:
        """Videos of an account that can still be reached: not deleted, not finished-and-expired."""
        row = self._conn().execute(
            "SELECT count(*) AS n FROM videos WHERE account = ? AND deleted_at IS NULL"
            " AND (status NOT IN ('completed', 'failed') OR expires_at IS NULL OR expires_at > ?)",
            (account, now),
        ).fetchone()
        return int(row["n"])

    def remove_account(self, name: str) -> None:
        """Delete an account and its sticky sessions; its videos keep naming it (for history)."""
        with self._write() as conn:
            if conn.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            conn.execute("DELETE FROM sessions WHERE account = ?", (name,))
            self._bump(conn)

    def account(self, name: str) -> Account:
        row = self._conn().execute("SELECT * FROM accounts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no account named {name!r}")
        return _account(row)

    def list_accounts(self) -> list[Account]:
        return [_account(row) for row in self._conn().execute("SELECT * FROM accounts ORDER BY priority, name")]

    def set_account_state(
        self,
        name: str,
        state: str,
        *,
        now: float,
        reason: str | None = None,
        until: float | None = None,
        last_error: str | None = None,
        evict_sessions: bool = False,
    ) -> int:
        """Move an account to `state`; return how many sticky sessions were evicted with it.

        Repeats are idempotent: several workers that see the same 429 extend one cooldown to
        the latest `until` instead of racing each other, and `state_since` keeps the start.
        """
        if state not in STORED_STATES:
            raise ValueError(f"unknown account state {state!r}")
        with self._write() as conn:
            row = conn.execute("SELECT state, state_since, state_until FROM accounts WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no account named {name!r}")
            same = row["state"] == state and (state != "rate_limited" or (row["state_until"] or 0) > now)
            since = row["state_since"] if same else now
            if same and state == "rate_limited" and until is not None:
                until = max(until, row["state_until"] or 0)
            conn.execute(
                "UPDATE accounts SET state = ?, state_reason = ?, state_since = ?, state_until = ?,"
                " last_error = COALESCE(?, last_error) WHERE name = ?",
                (state, reason, since, until, last_error, name),
            )
            self._bump(conn)
            if not evict_sessions:
                return 0
            return conn.execute("DELETE FROM sessions WHERE account = ?", (name,)).rowcount

    # -- sticky sessions --------------------------------------------------------------------------

    def session_account(self, session_hash: str, now: float) -> str | None:
        row = self._conn().execute(
            "SELECT account FROM sessions WHERE session_hash = ? AND expires_at > ?", (session_hash, now)
        ).fetchone()
        return None if row is None else row["account"]

    def claim_session(
        self, session_hash: str, candidate: str, *, replacing: str | None, now: float, ttl: float
    ) -> str:
        """Map a session to `candidate` unless another process mapped it meanwhile; return the mapping.

        `replacing` is the account the caller saw and found unusable: that mapping is
        overwritten, any other live mapping wins over the caller's candidate.
        """
        with self._write() as conn:
            row = conn.execute(
                "SELECT account FROM sessions WHERE session_hash = ? AND expires_at > ?", (session_hash, now)
            ).fetchone()
            if row is not None and row["account"] != replacing:
                return str(row["account"])
            conn.execute(
                "INSERT INTO sessions (session_hash, account, created_at, last_used_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_hash) DO UPDATE SET account = excluded.account,"
                " created_at = excluded.created_at, last_used_at = excluded.last_used_at,"
                " expires_at = excluded.expires_at",
                (session_hash, candidate, now, now, now + ttl),
            )
            return candidate

    def evict_sessions(self, *, account: str | None = None, session_prefix: str | None = None) -> int:
        """Drop sticky mappings: all of them, an account's, or those whose hash starts with a prefix."""
        where, params = "1 = 1", []
        if account is not None:
            where, params = "account = ?", [account]
        elif session_prefix is not None:
            where, params = "substr(session_hash, 1, ?) = ?", [len(session_prefix), session_prefix]
        with self._write() as conn:
            return conn.execute(f"DELETE FROM sessions WHERE {where}", params).rowcount

    def count_sessions(self, now: float) -> int:
        row = self._conn().execute("SELECT COUNT(*) FROM sessions WHERE expires_at > ?", (now,)).fetchone()
        return int(row[0])

    def list_sessions(self, now: float) -> list[dict[str, Any]]:
        return [
            dict(row)
            for row in self._conn().execute(
                "SELECT * FROM sessions WHERE expires_at > ? ORDER BY last_used_at DESC", (now,)
            )
        ]

    # -- limits, reservations and charges --------------------------------------------------------

    def take_request_slot(self, key_name: str, *, now: float, limit: int, window: float) -> float | None:
        """Admit one request into the key's sliding window; None if admitted, else seconds until a slot frees."""
        with self._write() as conn:
            conn.execute("DELETE FROM request_log WHERE key_name = ? AND ts <= ?", (key_name, now - window))
            row = conn.execute(
                "SELECT count(*) AS n, min(ts) AS oldest FROM request_log WHERE key_name = ?", (key_name,)
            ).fetchone()
            if row["n"] >= limit:
                return max(0.0, row["oldest"] + window - now)
            conn.execute("INSERT INTO request_log (key_name, ts) VALUES (?, ?)", (key_name, now))
            return None

    def _usage(self, conn: sqlite3.Connection, column: str, value: str, *, since: float, now: float, exclude: str = "") -> Usage:
        jobs = conn.execute(
            f"SELECT coalesce(sum(billable_seconds), 0) AS seconds, coalesce(sum(usd), 0) AS usd FROM videos"
            f" WHERE {column} = ? AND charged_at >= ? AND charge_state IN {_COUNTED}",
            (value, since),
        ).fetchone()
        flying = conn.execute(
            f"SELECT count(*) AS n, coalesce(sum(video_seconds), 0) AS seconds, coalesce(sum(usd), 0) AS usd"
            f" FROM reservations WHERE {column} = ? AND expires_at > ? AND id != ? AND {_HELD_BY_LIVE_OWNER}",
            (value, now, exclude, time.time()),
        ).fetchone()
        return Usage(
            in_flight=int(flying["n"]),
            video_seconds=float(jobs["seconds"]) + float(flying["seconds"]),
            usd=float(jobs["usd"]) + float(flying["usd"]),
        )

    def key_usage(self, key_name: str, *, since: float, now: float) -> Usage:
        return self._usage(self._conn(), "key_name", key_name, since=since, now=now)

    def account_usage(self, account: str, *, since: float, now: float) -> Usage:
        return self._usage(self._conn(), "account", account, since=since, now=now)

    def reserve(
        self,
        reservation_id: str,
        *,
        key_name: str,
        video_seconds: float,
        usd: float,
        now: float,
        expires_at: float,
        periods: Sequence[float],
        refuse: Callable[[Usage, dict[float, Usage]], R | None],
        owner: str | None = None,
    ) -> R | None:
        """Reserve a create against its key's limits, atomically across workers and the CLI.

        `refuse` sees the key's usage (in flight, and per period start in `periods`) and names
        the limit the create would break, or None; only then is the reservation written.
        Because this runs in one write transaction, concurrent creates racing for the last of
        a budget are admitted one at a time and cannot overspend it.
        """
        with self._write() as conn:
            conn.execute(
                f"DELETE FROM reservations WHERE expires_at <= ? OR NOT {_HELD_BY_LIVE_OWNER}", (now, time.time())
            )
            current = self._usage(conn, "key_name", key_name, since=now, now=now)
            by_period = {start: self._usage(conn, "key_name", key_name, since=start, now=now) for start in periods}
            refused = refuse(current, by_period)
            if refused is None:
                conn.execute(
                    "INSERT INTO reservations (id, key_name, account, video_seconds, usd, created_at, expires_at, owner)"
                    " VALUES (?, ?, NULL, ?, ?, ?, ?, ?)",
                    (reservation_id, key_name, video_seconds, usd, now, expires_at, owner),
                )
            return refused

    def claim_account_capacity(
        self,
        reservation_id: str,
        *,
        key_name: str,
        account: str,
        video_seconds: float,
        usd: float,
        cap: float,
        day_start: float,
        now: float,
        expires_at: float,
        owner: str | None = None,
    ) -> bool:
        """Book a create's seconds on a capped account if they fit under its daily cap."""
        with self._write() as conn:
            used = self._usage(conn, "account", account, since=day_start, now=now, exclude=reservation_id)
            if used.video_seconds + video_seconds > cap:
                return False
            conn.execute(
                "INSERT INTO reservations (id, key_name, account, video_seconds, usd, created_at, expires_at, owner)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET account = excluded.account",
                (reservation_id, key_name, account, video_seconds, usd, now, expires_at, owner),
            )
            return True

    def release_reservation(self, reservation_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    def live_reservations(self, now: float) -> list[dict[str, Any]]:
        """The reservations that count: not expired, and held by a live process (or by no process)."""
        return [
            dict(row)
            for row in self._conn().execute(
                f"SELECT * FROM reservations WHERE expires_at > ? AND {_HELD_BY_LIVE_OWNER}", (now, time.time())
            )
        ]

    def key_holdings(self, key_name: str, now: float) -> list[dict[str, Any]]:
        """A key's unexpired reservations, oldest first, with their owner and whether it holds its lease."""
        return [
            {**dict(row), "alive": bool(row["alive"])}
            for row in self._conn().execute(
                "SELECT r.id, r.owner, r.account, r.video_seconds, r.usd, r.created_at, r.expires_at,"
                " h.hostname, h.pid, h.expires_at AS lease_expires_at,"
                " (r.owner IS NULL OR coalesce(h.expires_at > ?, 0)) AS alive"
                " FROM reservations r LEFT JOIN holders h ON h.id = r.owner"
                " WHERE r.key_name = ? AND r.expires_at > ? ORDER BY r.created_at, r.id",
                (time.time(), key_name, now),
            )
        ]

    # -- holders: relay processes and their leases (relay.holders) ------------------------------

    def renew_holder(
        self, holder: Holder, *, now: float, lease: float, exited: Callable[[dict[str, Any]], bool]
    ) -> int:
        """Register or renew this process's lease; forget processes that are gone; return holdings freed.

        A holder is gone when its lease lapsed or when `exited` says so (a dead pid on this
        machine). Their reservations are deleted here, by whichever live process renews first.
        """
        with self._write() as conn:
            conn.execute(
                "INSERT INTO holders (id, host, hostname, pid, process_started, started_at, renewed_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET renewed_at = excluded.renewed_at,"
                " expires_at = excluded.expires_at",
                (holder.owner, holder.host, holder.hostname, holder.pid, holder.process_started, now, now, now + lease),
            )
            others = conn.execute("SELECT * FROM holders WHERE id != ?", (holder.owner,)).fetchall()
            gone = [row["id"] for row in others if row["expires_at"] <= now or exited(dict(row))]
            conn.executemany("DELETE FROM holders WHERE id = ?", [(owner,) for owner in gone])
            return conn.execute(
                "DELETE FROM reservations WHERE owner IS NOT NULL AND owner NOT IN (SELECT id FROM holders)"
            ).rowcount

    def release_holder(self, owner: str) -> None:
        """A process that stops cleanly gives up its lease and whatever it still held."""
        with self._write() as conn:
            conn.execute("DELETE FROM reservations WHERE owner = ?", (owner,))
            conn.execute("DELETE FROM holders WHERE id = ?", (owner,))

    # -- prices ---------------------------------------------------------------------------------

    def list_prices(self) -> dict[tuple[str, str], float]:
        rows = self._conn().execute("SELECT model, size, usd_per_second FROM prices")
        return {(row["model"], row["size"]): float(row["usd_per_second"]) for row in rows}

    def set_prices(self, rows: Sequence[tuple[str, str, float]], *, now: float) -> None:
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO prices (model, size, usd_per_second, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model, size) DO UPDATE SET usd_per_second = excluded.usd_per_second,"
                " updated_at = excluded.updated_at",
                [(model, size, usd, now) for model, size, usd in rows],
            )
            self._bump(conn)

    def delete_price(self, model: str, size: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM prices WHERE model = ? AND size = ?", (model, size)).rowcount == 0:
                raise NotFound(f"no price override for model {model!r} size {size!r}")
            self._bump(conn)

    # -- upstream quota -------------------------------------------------------------------------

    def account_quotas(self) -> list[AccountQuota]:
        return [
            AccountQuota(
                account=row["account"],
                observed_at=row["observed_at"],
                limit_requests=row["limit_requests"],
                remaining_requests=row["remaining_requests"],
                resets_at=row["resets_at"],
            )
            for row in self._conn().execute("SELECT * FROM account_quota ORDER BY account")
        ]

    # -- usage reports ----------------------------------------------------------------------------

    def usage_report(self, by: str, *, since: float) -> list[dict[str, Any]]:
        """Per key, account or model since a time: requests, jobs, completions, failures, seconds, USD."""
        column = {"key": "key_name", "account": "account", "model": "model"}[by]
        jobs = {
            row["name"]: dict(row)
            for row in self._conn().execute(
                f"SELECT coalesce({column}, 'unknown') AS name, count(*) AS jobs,"
                " sum(status = 'completed') AS completed, sum(status = 'failed') AS failed,"
                " coalesce(sum(CASE WHEN status = 'completed' THEN billable_seconds END), 0) AS video_seconds,"
                " coalesce(sum(CASE WHEN charge_state = 'settled' THEN usd END), 0) AS usd,"
                " coalesce(sum(CASE WHEN charge_state = 'reserved' THEN usd END), 0) AS usd_reserved"
                f" FROM videos WHERE coalesce(charged_at, recorded_at) >= ? GROUP BY 1",
                (since,),
            )
        }
        requests: dict[str, int] = {}
        if column != "model":  # outcome rows know keys and accounts, not models
            requests = {
                row["name"]: int(row["n"])
                for row in self._conn().execute(
                    f"SELECT {column} AS name, count(*) AS n FROM outcomes WHERE ts >= ? AND {column} IS NOT NULL GROUP BY 1",
                    (since,),
                )
            }
        report = []
        for name in sorted(set(jobs) | set(requests)):
            row = jobs.get(name, {})
            report.append(
                {
                    by: name,
                    "requests": requests.get(name, 0) if column != "model" else int(row.get("jobs") or 0),
                    "jobs": int(row.get("jobs") or 0),
                    "completed": int(row.get("completed") or 0),
                    "failed": int(row.get("failed") or 0),
                    "video_seconds": round(float(row.get("video_seconds") or 0), 3),
                    "usd": round(float(row.get("usd") or 0), 6),
                    "usd_reserved": round(float(row.get("usd_reserved") or 0), 6),
                }
            )
        return report

    # -- outcomes and usage timestamps ------------------------------------------------------------

    def write_batch(
        self,
        outcomes: Sequence[Outcome],
        key_last_used: dict[str, float],
        account_last_used: dict[str, float],
        session_touches: dict[str, tuple[float, float]],
        quotas: Sequence[AccountQuota] = (),
    ) -> None:
        """Everything the recorder collected, in one transaction."""
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO account_quota (account, observed_at, limit_requests, remaining_requests, resets_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET observed_at = excluded.observed_at,"
                " limit_requests = excluded.limit_requests, remaining_requests = excluded.remaining_requests,"
                " resets_at = excluded.resets_at WHERE excluded.observed_at >= account_quota.observed_at",
                [(q.account, q.observed_at, q.limit_requests, q.remaining_requests, q.resets_at) for q in quotas],
            )
            conn.executemany(
                "INSERT INTO outcomes (ts, request_id, key_name, account, account_type, route, upstream_status,"
                " error_class, latency_ms, job_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        o.ts,
                        o.request_id,
                        o.key_name,
                        o.account,
                        o.account_type,
                        o.route,
                        o.upstream_status,
                        o.error_class,
                        o.latency_ms,
                        o.job_status,
                    )
                    for o in outcomes
                ],
            )
            conn.executemany(
                "UPDATE keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                [(ts, key_id) for key_id, ts in key_last_used.items()],
            )
            conn.executemany(
                "UPDATE accounts SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE name = ?",
                [(ts, name) for name, ts in account_last_used.items()],
            )
            conn.executemany(
                "UPDATE sessions SET last_used_at = MAX(last_used_at, ?), expires_at = MAX(expires_at, ?)"
                " WHERE session_hash = ?",
                [(used, expires, session_hash) for session_hash, (used, expires) in session_touches.items()],
            )

    # -- videos and characters (job affinity) -----------------------------------------------------

    def insert_video(self, video: Video, *, reservation_id: str | None = None) -> Video:
        """Record who owns a new job, its charge taking over from the create's reservation.

        A replayed id keeps its first owner: the record returned is the one that holds the id.
        """
        with self._write() as conn:
            if reservation_id is not None:
                conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            inserted = conn.execute(
                "INSERT INTO videos (id, account, key_name, kind, source_video_id, model, seconds, billable_seconds,"
                " size, status, progress, created_at, recorded_at, updated_at, resource, usd, charge_state, charged_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    video.id,
                    video.account,
                    video.key_name,
                    video.kind,
                    video.source_video_id,
                    video.model,
                    video.seconds,
                    video.billable_seconds,
                    video.size,
                    video.status,
                    video.progress,
                    video.created_at,
                    video.recorded_at,
                    video.recorded_at,
                    video.resource,
                    video.usd,
                    video.charge_state,
                    video.charged_at,
                ),
            )
            if inserted.rowcount == 1:
                return video
            return _video(conn.execute("SELECT * FROM videos WHERE id = ?", (video.id,)).fetchone())

    def video(self, video_id: str) -> Video | None:
        row = self._conn().execute("SELECT * FROM videos WHERE id = ?", (video_id,)).fetchone()
        return None if row is None else _video(row)

    def update_video(
        self,
        video_id: str,
        *,
        status: str,
        progress: int | None,
        expires_at: float | None,
        resource: str,
        now: float,
    ) -> bool:
        """Store the latest status; True only for the one call that moved the job to a final status.

        The compare-and-set (`status` not already final) means a completion is counted once,
        however many workers or polls see it: its charge (the price when it was created, times
        its seconds) is settled, or for a failure released, exactly once.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE videos SET status = ?, progress = ?, resource = ?, updated_at = ?, expires_at = ?,"
                " finished_at = CASE WHEN ? IN ('completed', 'failed') THEN ? ELSE NULL END,"
                " charge_state = CASE WHEN charge_state != 'reserved' THEN charge_state"
                "   WHEN ? = 'completed' THEN 'settled' WHEN ? = 'failed' THEN 'released' ELSE charge_state END"
                " WHERE id = ? AND status NOT IN ('completed', 'failed')",
                (status, progress, resource, now, expires_at, status, now, status, status, video_id),
            )
            return cursor.rowcount == 1 and status in TERMINAL_STATUSES

    def mark_video_deleted(self, video_id: str, now: float) -> None:
        # The charge stays as it is: the relay cannot know whether the upstream rendered (and
        # billed) the job before it was deleted, and under-billing is the worse mistake.
        with self._write() as conn:
            conn.execute("UPDATE videos SET deleted_at = COALESCE(deleted_at, ?) WHERE id = ?", (now, video_id))

    def list_videos(
        self, key_name: str, *, after: Video | None, limit: int, order: str
    ) -> tuple[list[Video], bool]:
        """A page of the key's live videos by creation time (id breaks ties), and whether more follow."""
        descending = order == "desc"
        where = "key_name = ? AND deleted_at IS NULL"
        params: list[Any] = [key_name]
        if after is not None:
            where += " AND (created_at, id) < (?, ?)" if descending else " AND (created_at, id) > (?, ?)"
            params += [after.created_at, after.id]
        direction = "DESC" if descending else "ASC"
        rows = self._conn().execute(
            f"SELECT * FROM videos WHERE {where} ORDER BY created_at {direction}, id {direction} LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        return [_video(row) for row in rows[:limit]], len(rows) > limit

    def claim_idempotency(
        self, key_name: str, idempotency_key: str, request_hash: str, *, now: float, ttl: float, stale_after: float
    ) -> tuple[str, dict[str, Any] | None]:
        """Claim an Idempotency-Key for one request.

        Returns ("claimed", None) for the first request, ("replay", stored answer) once it
        finished, ("in_progress", None) while another request holds it, or ("mismatch", None)
        when the key was used with a different request. A claim older than `stale_after`
        (its worker died) can be taken over.
        """
        with self._write() as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE key_name = ? AND idempotency_key = ? AND expires_at <= ?",
                (key_name, idempotency_key, now),
            )
            row = conn.execute(
                "SELECT * FROM idempotency WHERE key_name = ? AND idempotency_key = ?", (key_name, idempotency_key)
            ).fetchone()
            if row is not None:
                if row["request_hash"] != request_hash:
                    return "mismatch", None
                if row["state"] == "done":
                    return "replay", dict(row)
                if row["created_at"] > now - stale_after:
                    return "in_progress", None
            conn.execute(
                "INSERT OR REPLACE INTO idempotency (key_name, idempotency_key, request_hash, state, created_at,"
                " expires_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                (key_name, idempotency_key, request_hash, now, now + ttl),
            )
            return "claimed", None

    def finish_idempotency(self, key_name: str, idempotency_key: str, *, status: int, content_type: str | None, body: bytes) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE idempotency SET state = 'done', status = ?, content_type = ?, body = ?"
                " WHERE key_name = ? AND idempotency_key = ?",
                (status, content_type, body, key_name, idempotency_key),
            )

    def release_idempotency(self, key_name: str, idempotency_key: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE key_name = ? AND idempotency_key = ? AND state = 'pending'",
                (key_name, idempotency_key),
            )

    def insert_character(self, character_id: str, *, account: str, key_name: str, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO characters (id, account, key_name, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (character_id, account, key_name, now),
            )

    def character_count(self, account: str) -> int:
        """Characters an account created (they do not expire)."""
        row = self._conn().execute("SELECT count(*) AS n FROM characters WHERE account = ?", (account,)).fetchone()
        return int(row["n"])

    def character_owner(self, character_id: str) -> tuple[str, str] | None:
        """(account, key name) of a character, if the relay created it."""
        row = self._conn().execute(
            "SELECT account, key_name FROM characters WHERE id = ?", (character_id,)
        ).fetchone()
        return None if row is None else (row["account"], row["key_name"])

    def list_outcomes(
        self,
        *,
        limit: int = 100,
        account: str | None = None,
        key_name: str | None = None,
        since: float | None = None,
        status: int | None = None,
        error_class: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first, filtered."""
        clauses, params = _outcome_filters(account=account, key_name=key_name, since=since, status=status, error_class=error_class)
        sql = f"SELECT * FROM outcomes {clauses} ORDER BY id DESC LIMIT ?"
        return [dict(row) for row in self._conn().execute(sql, (*params, limit))]

    def outcome_latencies(self, *, since: float) -> list[dict[str, Any]]:
        """(account, error_class, latency_ms) of every attempt since a time, for summaries."""
        return [
            dict(row)
            for row in self._conn().execute(
                "SELECT account, error_class, latency_ms FROM outcomes WHERE ts >= ? AND account IS NOT NULL"
                " ORDER BY account, latency_ms",
                (since,),
            )
        ]

    def error_rates(self, since: float) -> dict[str, tuple[int, int]]:
        """account -> (attempts, attempts that failed) since a time."""
        rows = self._conn().execute(
            "SELECT account, count(*) AS total, sum(error_class != 'none') AS errors FROM outcomes"
            " WHERE ts >= ? AND account IS NOT NULL GROUP BY account",
            (since,),
        )
        return {row["account"]: (int(row["total"]), int(row["errors"] or 0)) for row in rows}

    def quick_check(self) -> str:
        return str(self._conn().execute("PRAGMA quick_check").fetchone()[0])

    def journal_mode(self) -> str:
        return str(self._conn().execute("PRAGMA journal_mode").fetchone()[0])


def _add_missing_columns(db: sqlite_utils.Database, table: str, columns: dict[str, type]) -> None:
    """Columns added after a table first shipped: databases made by older versions get them here."""
    existing = set(db[table].columns_dict)
    for name, kind in columns.items():
        if name not in existing:
            db[table].add_column(name, kind)


def _outcome_filters(**filters: Any) -> tuple[str, list[Any]]:
    columns = {
        "account": "account = ?",
        "key_name": "key_name = ?",
        "since": "ts >= ?",
        "status": "upstream_status = ?",
        "error_class": "error_class = ?",
    }
    clauses = [columns[name] for name, value in filters.items() if value is not None]
    params = [value for value in filters.values() if value is not None]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

def _key(row: sqlite3.Row) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        salt=row["salt"],
        hash=row["hash"],
        permissions=frozenset(json.loads(row["permissions"])),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        note=row["note"],
        previous_salt=row["previous_salt"],
        previous_hash=row["previous_hash"],
        previous_valid_until=row["previous_valid_until"],
        rotated_at=row["rotated_at"],
        limits_json=row["limits"],
    )


def _video(row: sqlite3.Row) -> Video:
    return Video(
        id=row["id"],
        account=row["account"],
        key_name=row["key_name"],
        kind=row["kind"],
        source_video_id=row["source_video_id"],
        model=row["model"],
        seconds=row["seconds"],
        billable_seconds=row["billable_seconds"],
        size=row["size"],
        status=row["status"],
        progress=row["progress"],
        created_at=row["created_at"],
        recorded_at=row["recorded_at"],
        finished_at=row["finished_at"],
        deleted_at=row["deleted_at"],
        resource=row["resource"],
        expires_at=row["expires_at"],
        usd=row["usd"],
        charge_state=row["charge_state"],
        charged_at=row["charged_at"],
    )


def _account(row: sqlite3.Row) -> Account:
    return Account(
        id=row["id"],
        name=row["name"],
        type=row["type"],
        base_api=row["base_api"],
        priority=row["priority"],
        enabled=bool(row["enabled"]),
        state=row["state"],
        state_reason=row["state_reason"],
        state_since=row["state_since"],
        state_until=row["state_until"],
        last_error=row["last_error"],
        last_used_at=row["last_used_at"],
        created_at=row["created_at"],
        credential_encrypted=row["credential"],
        credential_rotated_at=row["credential_rotated_at"],
        proxy_encrypted=row["proxy"],
        max_video_seconds_per_day=row["max_video_seconds_per_day"],
    )

