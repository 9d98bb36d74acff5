"""Upstream accounts: credentials (encrypted), state, caps, and the quota their upstream reported."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..records import STORED_STATES, Account, AccountQuota, AlreadyExists, NotFound
from .backend import Aggregate, Connection
from .meta import bump_config_version
from .videos import character_count, live_video_count
from .webhooks import reencrypt_webhook_secrets


class Accounts(Aggregate):
    def insert_account(
        self,
        *,
        name: str,
        type: str,
        credential_encrypted: str,
        base_api: str,
        priority: int,
        now: float,
        proxy_encrypted: str | None = None,
        models: tuple[str, ...] | None = None,
    ) -> Account:
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"an account named {name!r} exists already")
            conn.execute(
                "INSERT INTO accounts (name, type, credential, base_api, priority, enabled, state, state_since,"
                " created_at, proxy, models) VALUES (?, ?, ?, ?, ?, 1, 'active', ?, ?, ?, ?)",
                (
                    name,
                    type,
                    credential_encrypted,
                    base_api,
                    priority,
                    now,
                    now,
                    proxy_encrypted,
                    None if models is None else json.dumps(list(models)),
                ),
            )
            bump_config_version(conn)
        return self.account(name)

    def set_account_enabled(self, name: str, enabled: bool) -> None:
        with self.transaction() as conn:
            cursor = conn.execute("UPDATE accounts SET enabled = ? WHERE name = ?", (int(enabled), name))
            if cursor.rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            bump_config_version(conn)

    def set_account_proxy(self, name: str, proxy_encrypted: str | None) -> None:
        with self.transaction() as conn:
            if conn.execute("UPDATE accounts SET proxy = ? WHERE name = ?", (proxy_encrypted, name)).rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            bump_config_version(conn)

    def set_account_base_api(self, name: str, base_api: str) -> None:
        with self.transaction() as conn:
            if conn.execute("UPDATE accounts SET base_api = ? WHERE name = ?", (base_api, name)).rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            bump_config_version(conn)

    def set_account_priority(self, name: str, priority: int) -> None:
        with self.transaction() as conn:
            if conn.execute("UPDATE accounts SET priority = ? WHERE name = ?", (priority, name)).rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            bump_config_version(conn)

    def set_account_cap(self, name: str, max_video_seconds_per_day: float | None) -> None:
        with self.transaction() as conn:
            cursor = conn.execute("UPDATE accounts SET max_video_seconds_per_day = ? WHERE name = ?", (max_video_seconds_per_day, name))
            if cursor.rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            bump_config_version(conn)

    def set_account_models(self, name: str, models: tuple[str, ...] | None) -> None:
        with self.transaction() as conn:
            if conn.execute("UPDATE accounts SET models = ? WHERE name = ?", (_models_json(models), name)).rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            bump_config_version(conn)

    def replace_credential(self, name: str, credential_encrypted: str, now: float) -> None:
        """A new credential clears `unauthorized`: the old one was what failed."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE accounts SET credential = ?, credential_rotated_at = ?, state = 'active',"
                " state_reason = 'credential rotated', state_since = ?, state_until = NULL WHERE name = ?",
                (credential_encrypted, now, now, name),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no account named {name!r}")
            resume_paused_jobs(conn, name, now)
            bump_config_version(conn)

    def reencrypt_credentials(self, reencrypt: Callable[[str], str], check_value: str) -> tuple[int, int]:
        """Re-encrypt every credential, every webhook endpoint's signing secrets and the key check
        in one transaction; return how many accounts and endpoints."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT id, credential, proxy FROM accounts").fetchall()
            conn.executemany(
                "UPDATE accounts SET credential = ?, proxy = ? WHERE id = ?",
                [(reencrypt(r["credential"]), reencrypt(r["proxy"]) if r["proxy"] else None, r["id"]) for r in rows],
            )
            endpoints = reencrypt_webhook_secrets(conn, reencrypt)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'secret_check'", (check_value,))
            bump_config_version(conn)
            return len(rows), endpoints

    def remove_account(self, name: str, *, unless_owning_at: float | None = None) -> tuple[int, int]:
        """Delete an account and its sticky sessions; its videos keep naming it (for history).

        Returns the (reachable videos, characters) it owns, counted in the same transaction. With
        `unless_owning_at` (now), an account that owns any is kept: no video can be created for it
        between that count and the delete.
        """
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone() is None:
                raise NotFound(f"no account named {name!r}")
            owned = live_video_count(conn, name, time.time() if unless_owning_at is None else unless_owning_at), character_count(conn, name)
            if any(owned) and unless_owning_at is not None:
                return owned
            conn.execute("DELETE FROM accounts WHERE name = ?", (name,))
            conn.execute("DELETE FROM sessions WHERE account = ?", (name,))
            bump_config_version(conn)
            return owned

    def account(self, name: str) -> Account:
        with self.reading() as conn:
            row = conn.execute("SELECT * FROM accounts WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no account named {name!r}")
            return _account(row)

    def list_accounts(self) -> list[Account]:
        with self.reading() as conn:
            return [_account(row) for row in conn.execute("SELECT * FROM accounts ORDER BY priority, name")]

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
        with self.transaction() as conn:
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
            if state == "active":
                resume_paused_jobs(conn, name, now)
            bump_config_version(conn)
            if not evict_sessions:
                return 0
            return conn.execute("DELETE FROM sessions WHERE account = ?", (name,)).rowcount

    def account_quotas(self) -> list[AccountQuota]:
        with self.reading() as conn:
            return [
                AccountQuota(
                    account=row["account"],
                    observed_at=row["observed_at"],
                    limit_requests=row["limit_requests"],
                    remaining_requests=row["remaining_requests"],
                    resets_at=row["resets_at"],
                )
                for row in conn.execute("SELECT * FROM account_quota ORDER BY account")
            ]


def _models_json(models: tuple[str, ...] | None) -> str | None:
    return None if models is None else json.dumps(list(models))


def _account(row: Any) -> Account:
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
        models=None if row["models"] is None else tuple(json.loads(row["models"])),
    )


def resume_paused_jobs(conn: Connection, account: str, now: float) -> None:
    """The watcher's jobs that waited for an unauthorized account are due again at once."""
    conn.execute(
        "UPDATE videos SET watch_next_at = ?, watch_stopped = NULL"
        " WHERE account = ? AND watch_stopped = 'account_unauthorized' AND watch_next_at IS NOT NULL",
        (now, account),
    )
