"""The relay's domain records and the store's errors: plain data, no database.

Pure modules (limits, pool, metrics, quota, videos ...) import these from here, so they never
import the database layer; relay.store reads and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .providers import ACCOUNT_TYPES as _TYPES, model_name, serves_by_default

ACCOUNT_TYPES = tuple(_TYPES)
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
    # The models this account serves (None: every model its type can carry).
    models: tuple[str, ...] | None = None

    def serves(self, model: str) -> bool:
        """Its model list decides; without one, its type's models (relay.providers): a gemini
        account serves veo-*, the OpenAI-contract types every model no other type claims."""
        if self.models is not None:
            return model in self.models or model_name(model) in self.models
        return serves_by_default(self.type, model)

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
    # The job watcher (relay.watcher): when the relay next polls this unfinished job (None: not
    # watched, because it finished or the watcher stopped), and why it stopped, if it did.
    watch_next_at: float | None = None
    watch_stopped: str | None = None


CHARGE_STATES = ("reserved", "settled", "released")

# The events the relay sends to webhook endpoints (relay.webhooks): a job reached a final status.
WEBHOOK_EVENT_TYPES = ("video.completed", "video.failed")
WEBHOOK_DELIVERY_STATES = ("pending", "delivered", "failed", "cancelled")
# Why an endpoint is disabled: it answered 410 Gone, it failed every delivery for too long, an operator said so.
WEBHOOK_DISABLED_REASONS = ("gone", "failing", "operator")


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where a relay key's job events go (OpenAI's webhook endpoint), and its signing secret, encrypted."""

    id: str  # "we_<32 hex>"
    key_name: str  # the relay key that owns it
    name: str
    url: str
    event_types: tuple[str, ...]  # a subset of WEBHOOK_EVENT_TYPES
    secret_encrypted: str = field(repr=False)
    secret_hint: str
    # After a rotation with a grace period, the old secret signs too until previous_secret_until.
    previous_secret_encrypted: str | None = field(repr=False)
    previous_secret_until: float | None
    created_at: float
    updated_at: float
    disabled_at: float | None
    disabled_reason: str | None  # one of WEBHOOK_DISABLED_REASONS
    # The first failed attempt since the last delivered one (None: the last attempt succeeded).
    failing_since: float | None

    @property
    def status(self) -> str:
        return "enabled" if self.disabled_at is None else "disabled"


@dataclass(frozen=True)
class WebhookDelivery:
    """One event on its way to one endpoint: the same id and bytes on every attempt."""

    id: str  # "wh_<32 hex>": the webhook-id header
    endpoint_id: str
    event_id: str  # "evt_<32 hex>", also inside body
    event_type: str
    video_id: str | None
    body: bytes = field(repr=False)  # the exact bytes signed and sent
    state: str  # one of WEBHOOK_DELIVERY_STATES ("cancelled": its endpoint was deleted)
    # Attempts since the delivery was queued, or re-queued by `redeliver` (every one is in webhook_attempts).
    attempts: int
    created_at: float
    next_attempt_at: float | None
    last_attempt_at: float | None
    last_status: int | None  # the endpoint's HTTP status on the last attempt
    last_error: str | None  # http_error, redirect, timeout, connect_error, unsafe_target, gone
    delivered_at: float | None


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


class SchemaTooNew(RuntimeError):
    """The database was upgraded by a newer release than this one: its schema is unknown here."""


class StoreBug(Exception):
    """A statement failed in a way that says the code or the schema is wrong (a constraint, a
    syntax or type error), on either database: no retry helps. Driver errors never leave the
    store as themselves; this names the driver's error class and code only (its message can
    quote the values of a row)."""


class StoreUnavailable(Exception):
    """The database could not be read or written just now (locked past the busy timeout, I/O error,
    disk full, file missing or damaged): the caller may try again later.

    The message names the kind of failure only, never a path, a host or a statement, so it is safe
    to show to clients and operators.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database is unavailable: {reason}")
        self.reason = reason
