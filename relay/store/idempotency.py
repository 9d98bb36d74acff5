"""Idempotency-Key claims and the answers stored for replays."""

from __future__ import annotations

from typing import Any

from .backend import Aggregate


class Idempotency(Aggregate):
    def claim_idempotency(
        self, key_name: str, idempotency_key: str, request_hash: str, *, now: float, ttl: float, stale_after: float
    ) -> tuple[str, dict[str, Any] | None]:
        """Claim an Idempotency-Key for one request.

        Returns ("claimed", None) for the first request, ("replay", stored answer) once it
        finished, ("in_progress", None) while another request holds it, or ("mismatch", None)
        when the key was used with a different request. A claim older than `stale_after`
        (its worker died) can be taken over.
        """
        with self.transaction() as conn:
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
                "INSERT INTO idempotency (key_name, idempotency_key, request_hash, state, created_at, expires_at)"
                " VALUES (?, ?, ?, 'pending', ?, ?) ON CONFLICT (key_name, idempotency_key) DO UPDATE SET"
                " request_hash = excluded.request_hash, state = excluded.state, created_at = excluded.created_at,"
                " expires_at = excluded.expires_at, status = NULL, content_type = NULL, body = NULL",
                (key_name, idempotency_key, request_hash, now, now + ttl),
            )
            return "claimed", None

    def finish_idempotency(self, key_name: str, idempotency_key: str, *, status: int, content_type: str | None, body: bytes) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE idempotency SET state = 'done', status = ?, content_type = ?, body = ? WHERE key_name = ? AND idempotency_key = ?",
                (status, content_type, body, key_name, idempotency_key),
            )

    def release_idempotency(self, key_name: str, idempotency_key: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE key_name = ? AND idempotency_key = ? AND state = 'pending'",
                (key_name, idempotency_key),
            )
