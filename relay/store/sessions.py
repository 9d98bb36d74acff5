"""Sticky sessions: which account a client's session is pinned to."""

from __future__ import annotations

from typing import Any

from .backend import Aggregate


class Sessions(Aggregate):
    def session_account(self, session_hash: str, now: float) -> str | None:
        with self.reading() as conn:
            row = conn.execute("SELECT account FROM sessions WHERE session_hash = ? AND expires_at > ?", (session_hash, now)).fetchone()
            return None if row is None else row["account"]

    def claim_session(self, session_hash: str, candidate: str, *, replacing: str | None, now: float, ttl: float) -> str:
        """Map a session to `candidate` unless another process mapped it meanwhile; return the mapping.

        `replacing` is the account the caller saw and found unusable: that mapping is
        overwritten, any other live mapping wins over the caller's candidate.
        """
        with self.transaction() as conn:
            row = conn.execute("SELECT account FROM sessions WHERE session_hash = ? AND expires_at > ?", (session_hash, now)).fetchone()
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
        statement = "DELETE FROM sessions"
        params: tuple[object, ...] = ()
        if account is not None:
            statement, params = "DELETE FROM sessions WHERE account = ?", (account,)
        elif session_prefix is not None:
            statement = "DELETE FROM sessions WHERE substr(session_hash, 1, ?) = ?"
            params = (len(session_prefix), session_prefix)
        with self.transaction() as conn:
            return conn.execute(statement, params).rowcount

    def count_sessions(self, now: float) -> int:
        with self.reading() as conn:
            row = conn.execute("SELECT COUNT(*) FROM sessions WHERE expires_at > ?", (now,)).fetchone()
            return int(row[0])

    def list_sessions(self, now: float) -> list[dict[str, Any]]:
        with self.reading() as conn:
            return [dict(row) for row in conn.execute("SELECT * FROM sessions WHERE expires_at > ? ORDER BY last_used_at DESC", (now,))]
