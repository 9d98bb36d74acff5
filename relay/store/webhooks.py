"""Webhooks: a key's endpoints, the events on their way to them, and every attempt to deliver one.

An event is written once, inside the transaction that settles its job (`enqueue_video_event`):
one delivery row per endpoint, each with the exact bytes every attempt sends. Deliveries are
claimed under a lease (`claim_due_deliveries`), so one worker of one replica attempts a
delivery at a time; an attempt is recorded only by the worker that still holds the lease.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from ..records import WEBHOOK_DISABLED_REASONS, WEBHOOK_EVENT_TYPES, NotFound, WebhookDelivery, WebhookEndpoint
from .backend import Aggregate, Connection


class EndpointLimitReached(ValueError):
    """The key has as many webhook endpoints as it may."""


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(16)}"


def new_delivery_id() -> str:
    return f"wh_{secrets.token_hex(16)}"


def event_body(event_id: str, event_type: str, created_at: float, data: dict[str, Any]) -> bytes:
    """An event as it is signed and sent: compact JSON, built once."""
    event = {"id": event_id, "object": "event", "created_at": int(created_at), "type": event_type, "data": data}
    return json.dumps(event, separators=(",", ":")).encode()


def enqueue_video_event(conn: Connection, *, key_name: str, video_id: str, event_type: str, now: float) -> int:
    """Queue `event_type` for `video_id` to every enabled endpoint of the key subscribed to it.

    Call inside the transaction that moves the job to its final status, so the event is written
    exactly when the status is, once. One event (one id, one body) and a delivery per endpoint,
    due at once. Returns how many deliveries were queued.
    """
    if event_type not in WEBHOOK_EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    rows = conn.execute(
        "SELECT id, event_types FROM webhook_endpoints WHERE key_name = ? AND disabled_at IS NULL ORDER BY created_at, id",
        (key_name,),
    ).fetchall()
    endpoints = [row["id"] for row in rows if event_type in json.loads(row["event_types"])]
    if not endpoints:
        return 0
    event_id = new_event_id()
    body = event_body(event_id, event_type, now, {"id": video_id})
    conn.executemany(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, video_id, body, state, attempts, created_at,"
        " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
        [(new_delivery_id(), endpoint_id, event_id, event_type, video_id, body, now, now) for endpoint_id in endpoints],
    )
    return len(endpoints)


class Webhooks(Aggregate):
    # -- endpoints ----------------------------------------------------------------------------------

    def create_webhook_endpoint(self, endpoint: WebhookEndpoint, *, max_per_key: int | None = None) -> None:
        """Store a new endpoint; with `max_per_key`, refuse (EndpointLimitReached) a key that has that many."""
        with self.transaction() as conn:
            if max_per_key is not None:
                row = conn.execute("SELECT count(*) AS n FROM webhook_endpoints WHERE key_name = ?", (endpoint.key_name,)).fetchone()
                if int(row["n"]) >= max_per_key:
                    raise EndpointLimitReached(f"key {endpoint.key_name!r} has {max_per_key} webhook endpoints already")
            conn.execute(
                "INSERT INTO webhook_endpoints (id, key_name, name, url, event_types, secret, secret_hint, previous_secret,"
                " previous_secret_until, created_at, updated_at, disabled_at, disabled_reason, failing_since)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    endpoint.id,
                    endpoint.key_name,
                    endpoint.name,
                    endpoint.url,
                    json.dumps(list(endpoint.event_types)),
                    endpoint.secret_encrypted,
                    endpoint.secret_hint,
                    endpoint.previous_secret_encrypted,
                    endpoint.previous_secret_until,
                    endpoint.created_at,
                    endpoint.updated_at,
                    endpoint.disabled_at,
                    endpoint.disabled_reason,
                    endpoint.failing_since,
                ),
            )

    def webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        with self.reading() as conn:
            row = conn.execute("SELECT * FROM webhook_endpoints WHERE id = ?", (endpoint_id,)).fetchone()
            return None if row is None else _endpoint(row)

    def list_webhook_endpoints(
        self, key_name: str | None, *, after: str | None = None, limit: int = 100
    ) -> tuple[list[WebhookEndpoint], bool]:
        """A page of endpoints, newest first (as OpenAI lists them), and whether more follow.

        `key_name` None lists every key's (the CLI). `after` is the last id of the previous page;
        one that is not in the listing (gone, or another key's) ends it: an empty page.
        """
        with self.reading() as conn:
            where = "key_name = ?" if key_name is not None else "1 = 1"
            params: list[Any] = [key_name] if key_name is not None else []
            if after is not None:
                cursor = conn.execute(f"SELECT created_at, id FROM webhook_endpoints WHERE id = ? AND {where}", (after, *params)).fetchone()
                if cursor is None:
                    return [], False
                where += " AND (created_at, id) < (?, ?)"
                params += [cursor["created_at"], cursor["id"]]
            rows = conn.execute(
                f"SELECT * FROM webhook_endpoints WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit + 1)
            ).fetchall()
            return [_endpoint(row) for row in rows[:limit]], len(rows) > limit

    def update_webhook_endpoint(
        self,
        endpoint_id: str,
        *,
        name: str | None,
        url: str | None,
        event_types: tuple[str, ...] | None,
        now: float,
    ) -> WebhookEndpoint:
        """Change what is given (None: keep it) and enable the endpoint if it was disabled.

        updated_at moves only when the name, URL or event types changed (as OpenAI's does).
        """
        with self.transaction() as conn:
            current = _endpoint_or_raise(conn, endpoint_id)
            changed = (
                (name is not None and name != current.name)
                or (url is not None and url != current.url)
                or (event_types is not None and tuple(event_types) != current.event_types)
            )
            conn.execute(
                "UPDATE webhook_endpoints SET name = ?, url = ?, event_types = ?, updated_at = ? WHERE id = ?",
                (
                    current.name if name is None else name,
                    current.url if url is None else url,
                    json.dumps(list(current.event_types if event_types is None else event_types)),
                    now if changed else current.updated_at,
                    endpoint_id,
                ),
            )
            _enable(conn, current, now)
            return _endpoint_or_raise(conn, endpoint_id)

    def enable_webhook_endpoint(self, endpoint_id: str, now: float) -> None:
        """Deliveries resume: the ones that waited are due at once, and it gets new events again."""
        with self.transaction() as conn:
            _enable(conn, _endpoint_or_raise(conn, endpoint_id), now)

    def disable_webhook_endpoint(self, endpoint_id: str, reason: str, now: float) -> bool:
        """Stop delivering to an endpoint: it gets no new events, and its pending deliveries wait
        (not claimed) until it is enabled again, whatever the reason (a 410 included: the key holder
        may fix the URL). An endpoint disabled already keeps its first time and reason;
        True only for the call that disabled it (so two workers seeing a 410 count it once).
        """
        if reason not in WEBHOOK_DISABLED_REASONS:
            raise ValueError(f"unknown reason {reason!r} to disable a webhook endpoint")
        with self.transaction() as conn:
            _endpoint_or_raise(conn, endpoint_id)
            disabled = conn.execute(
                "UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ? WHERE id = ? AND disabled_at IS NULL",
                (now, reason, endpoint_id),
            ).rowcount
            return disabled == 1

    def rotate_webhook_secret(
        self,
        endpoint_id: str,
        *,
        secret_encrypted: str,
        secret_hint: str,
        keep_previous_until: float | None,
        now: float,
    ) -> WebhookEndpoint:
        """A new signing secret; the current one keeps signing too until `keep_previous_until` (None: not at all)."""
        with self.transaction() as conn:
            current = _endpoint_or_raise(conn, endpoint_id)
            previous = current.secret_encrypted if keep_previous_until is not None else None
            conn.execute(
                "UPDATE webhook_endpoints SET previous_secret = ?, previous_secret_until = ?, secret = ?, secret_hint = ?, updated_at = ?"
                " WHERE id = ?",
                (previous, keep_previous_until, secret_encrypted, secret_hint, now, endpoint_id),
            )
            return _endpoint_or_raise(conn, endpoint_id)

    def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        """Delete an endpoint (False: there was none); its pending deliveries are cancelled, the rest kept as history."""
        with self.transaction() as conn:
            if conn.execute("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,)).rowcount == 0:
                return False
            conn.execute(
                "UPDATE webhook_deliveries SET state = 'cancelled', next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL"
                " WHERE endpoint_id = ? AND state = 'pending'",
                (endpoint_id,),
            )
            return True

    # -- deliveries ---------------------------------------------------------------------------------

    def claim_due_deliveries(
        self, owner: str, *, now: float, lease_seconds: float, limit: int
    ) -> list[tuple[WebhookDelivery, WebhookEndpoint]]:
        """Take up to `limit` deliveries that are due, for `owner`, until now + lease_seconds.

        Pending, due, not leased (or the lease lapsed: its worker died), to an enabled endpoint;
        oldest due first. In one write transaction, so no two owners get the same delivery.
        """
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT d.* FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
                " WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until <= ?)"
                " AND e.disabled_at IS NULL ORDER BY d.next_attempt_at, d.id LIMIT ?",
                (now, now, limit),
            ).fetchall()
            if not rows:
                return []
            deliveries = [_delivery(row) for row in rows]
            ids = [delivery.id for delivery in deliveries]
            marks = _marks(ids)
            conn.execute(
                f"UPDATE webhook_deliveries SET lease_owner = ?, lease_until = ? WHERE id IN ({marks})", (owner, now + lease_seconds, *ids)
            )
            endpoint_ids = sorted({delivery.endpoint_id for delivery in deliveries})
            endpoints = {
                row["id"]: _endpoint(row)
                for row in conn.execute(f"SELECT * FROM webhook_endpoints WHERE id IN ({_marks(endpoint_ids)})", endpoint_ids)
            }
            return [(delivery, endpoints[delivery.endpoint_id]) for delivery in deliveries]

    def record_delivery_attempt(
        self,
        delivery_id: str,
        owner: str,
        *,
        status: int | None,
        error: str | None,
        delivered: bool,
        next_attempt_at: float | None,
        latency_seconds: float,
        now: float,
    ) -> bool:
        """The outcome of one attempt, and the lease released. Returns False (nothing written)
        when `owner` no longer holds the delivery's lease: another worker took it over.

        Delivered: the delivery is done and its endpoint no longer failing. Not delivered: the
        endpoint is failing since its first failed attempt after the last success, and the
        delivery is due again at `next_attempt_at`, or failed for good when that is None.
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT endpoint_id FROM webhook_deliveries WHERE id = ? AND lease_owner = ? AND state = 'pending'", (delivery_id, owner)
            ).fetchone()
            if row is None:
                return False
            settled = "state = 'delivered', next_attempt_at = NULL, delivered_at = ?" if delivered else "state = ?, next_attempt_at = ?"
            outcome: tuple[Any, ...] = (now,) if delivered else ("pending" if next_attempt_at is not None else "failed", next_attempt_at)
            conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = ?, last_status = ?, last_error = ?,"
                f" lease_owner = NULL, lease_until = NULL, {settled} WHERE id = ?",
                (now, status, error, *outcome, delivery_id),
            )
            if delivered:
                conn.execute("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ?", (row["endpoint_id"],))
            else:
                conn.execute(
                    "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, ?) WHERE id = ?", (now, row["endpoint_id"])
                )
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, ts, status, error, latency_seconds) VALUES (?, ?, ?, ?, ?)",
                (delivery_id, now, status, error, latency_seconds),
            )
            return True

    def release_delivery(self, delivery_id: str, owner: str, next_attempt_at: float) -> bool:
        """Give a claimed delivery back unattempted (a worker stopping), due at `next_attempt_at`."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?"
                " WHERE id = ? AND lease_owner = ? AND state = 'pending'",
                (next_attempt_at, delivery_id, owner),
            )
            return cursor.rowcount == 1

    def list_webhook_deliveries(
        self, *, endpoint_id: str | None = None, state: str | None = None, limit: int = 50
    ) -> list[WebhookDelivery]:
        """Deliveries newest first, of one endpoint and in one state if asked."""
        conditions: list[str] = []
        params: list[Any] = []
        if endpoint_id is not None:
            conditions.append("endpoint_id = ?")
            params.append(endpoint_id)
        if state is not None:
            conditions.append("state = ?")
            params.append(state)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self.reading() as conn:
            rows = conn.execute(f"SELECT * FROM webhook_deliveries {where} ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit))
            return [_delivery(row) for row in rows]

    def webhook_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        with self.reading() as conn:
            row = conn.execute("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone()
            return None if row is None else _delivery(row)

    def webhook_attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        """Every attempt at a delivery, oldest first: ts, status, error, latency_seconds."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT ts, status, error, latency_seconds FROM webhook_attempts WHERE delivery_id = ? ORDER BY ts", (delivery_id,)
            )
            return [
                {"ts": row["ts"], "status": row["status"], "error": row["error"], "latency_seconds": row["latency_seconds"]} for row in rows
            ]

    def webhook_delivery_counts(self, endpoint_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Deliveries per state, per endpoint (endpoints without any are left out)."""
        if not endpoint_ids:
            return {}
        counts: dict[str, dict[str, int]] = {}
        with self.reading() as conn:
            for row in conn.execute(
                f"SELECT endpoint_id, state, count(*) AS n FROM webhook_deliveries WHERE endpoint_id IN ({_marks(endpoint_ids)})"
                " GROUP BY endpoint_id, state",
                tuple(endpoint_ids),
            ):
                counts.setdefault(row["endpoint_id"], {})[row["state"]] = int(row["n"])
        return counts

    def redeliver(self, delivery_id: str, now: float) -> WebhookDelivery:
        """Send a delivery again, whatever became of it: pending, due now, its schedule from the
        start (attempts 0; the earlier ones stay in webhook_attempts), the same id and bytes.

        Refused (NotFound) when its endpoint was deleted: there is nowhere to send it.
        """
        with self.transaction() as conn:
            row = conn.execute("SELECT endpoint_id FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                raise NotFound(f"no webhook delivery {delivery_id!r}")
            if conn.execute("SELECT 1 FROM webhook_endpoints WHERE id = ?", (row["endpoint_id"],)).fetchone() is None:
                raise NotFound(f"the endpoint of webhook delivery {delivery_id!r} was deleted: there is nowhere to send it")
            conn.execute(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, delivered_at = NULL WHERE id = ?",
                (now, delivery_id),
            )
            return _delivery(conn.execute("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,)).fetchone())

    def webhook_backlog(self, now: float) -> dict[str, Any]:
        """Pending deliveries, how long the oldest has waited, and how many endpoints are disabled."""
        with self.reading() as conn:
            pending = conn.execute(
                "SELECT count(*) AS n, min(created_at) AS oldest FROM webhook_deliveries WHERE state = 'pending'"
            ).fetchone()
            disabled = conn.execute("SELECT count(*) AS n FROM webhook_endpoints WHERE disabled_at IS NOT NULL").fetchone()
        oldest = pending["oldest"]
        return {
            "pending": int(pending["n"]),
            "oldest_pending_seconds": max(0.0, now - float(oldest)) if oldest is not None else 0.0,
            "disabled_endpoints": int(disabled["n"]),
        }


def reencrypt_webhook_secrets(conn: Connection, reencrypt: Callable[[str], str]) -> int:
    """Every endpoint's signing secrets under a new first key (`relayctl secrets rotate`): call
    inside the transaction that re-encrypts the account credentials. Returns how many endpoints."""
    rows = conn.execute("SELECT id, secret, previous_secret FROM webhook_endpoints").fetchall()
    conn.executemany(
        "UPDATE webhook_endpoints SET secret = ?, previous_secret = ? WHERE id = ?",
        [(reencrypt(row["secret"]), reencrypt(row["previous_secret"]) if row["previous_secret"] else None, row["id"]) for row in rows],
    )
    return len(rows)


def _enable(conn: Connection, endpoint: WebhookEndpoint, now: float) -> None:
    """Enabled, not failing; the deliveries that waited while it was disabled are due now."""
    if endpoint.disabled_at is None and endpoint.failing_since is None:
        return
    conn.execute(
        "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL WHERE id = ?", (endpoint.id,)
    )
    if endpoint.disabled_at is not None:
        conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE endpoint_id = ? AND state = 'pending' AND next_attempt_at > ?",
            (now, endpoint.id, now),
        )


def _endpoint_or_raise(conn: Connection, endpoint_id: str) -> WebhookEndpoint:
    row = conn.execute("SELECT * FROM webhook_endpoints WHERE id = ?", (endpoint_id,)).fetchone()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    return _endpoint(row)


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _endpoint(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["id"],
        key_name=row["key_name"],
        name=row["name"],
        url=row["url"],
        event_types=tuple(json.loads(row["event_types"])),
        secret_encrypted=row["secret"],
        secret_hint=row["secret_hint"],
        previous_secret_encrypted=row["previous_secret"],
        previous_secret_until=row["previous_secret_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
        failing_since=row["failing_since"],
    )


def _delivery(row: Any) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        video_id=row["video_id"],
        body=bytes(row["body"]),
        state=row["state"],
        attempts=int(row["attempts"]),
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        last_attempt_at=row["last_attempt_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
    )
