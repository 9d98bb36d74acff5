"""Settings read once from the environment and passed down explicitly."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .store.location import DatabaseLocation, LocationError, parse_location
from .store.pool_settings import PoolSettings
from .store.retention import MIN_KEEP_DAYS, RetentionPolicy


class ConfigError(ValueError):
    """A setting has a value the relay cannot run with."""


@dataclass(frozen=True)
class Settings:
    database: DatabaseLocation = field(default_factory=lambda: parse_location("relay.db"))
    # How long a statement waits for another connection's lock before the request gets a 503.
    database_busy_timeout_seconds: float = 10.0
    # PostgreSQL only: each process's connections (RELAY_DATABASE_POOL_MIN_SIZE, _MAX_SIZE, _TIMEOUT_SECONDS).
    database_pool: PoolSettings = field(default_factory=PoolSettings)
    secret_key: str | None = None
    # Where the secret key is kept without RELAY_SECRET_KEY: beside a SQLite database by default.
    secret_key_file: Path | None = None
    sticky_ttl_seconds: float = 3600.0
    default_cooldown_seconds: float = 60.0
    max_cooldown_seconds: float = 7 * 24 * 3600.0
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 300.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_upstream_response_bytes: int = 16 * 1024 * 1024
    refresh_interval_seconds: float = 0.5
    # A process's reservations stop counting this long after it last renewed its lease (relay.holders).
    holder_lease_seconds: float = 10.0
    max_upstream_connections: int = 256
    poll_after_ms: int = 2000
    max_failover: int = 2
    server_error_threshold: int = 3
    server_error_cooldown_seconds: float = 30.0
    idempotency_ttl_seconds: float = 24 * 3600.0
    log_format: str = "text"
    metrics_token: str | None = None
    # /metrics on its own port (and no longer on the relay's), for every worker.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    access_log: bool = True
    # `lru` (least recently used) or `most-remaining` (most upstream requests left first).
    scheduler: str = "lru"
    # Hosts whose http(s) image URLs the relay may fetch for providers that take image bytes
    # (Veo's input_reference). None by default: fetching a client's URL from inside the operator's
    # network is theirs to allow, host by host.
    image_url_hosts: frozenset[str] = frozenset()
    # The job watcher (relay.watcher): how often an unfinished job is polled when the upstream
    # gives no hint, how long before it is given up, and each account's share of this process's polls.
    # RELAY_JOB_WATCHER=0: this process leaves watching to others (replicas that run it share the jobs).
    job_watcher: bool = True
    # RELAY_GC_FREEZE=0: the cycle collector keeps scanning what the process built to start.
    gc_freeze: bool = True
    job_poll_seconds: float = 10.0
    job_max_age_seconds: float = 24 * 3600.0
    watcher_polls_per_minute: int = 60
    # Webhook deliveries (relay.webhooks): the delays before each attempt (Standard Webhooks' schedule),
    # one attempt's time limit, how long an endpoint may fail every delivery before it is disabled.
    webhook_retry_schedule: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    webhook_timeout_seconds: float = 15.0
    webhook_disable_after_seconds: float = 5 * 24 * 3600.0
    # Development and tests only: http:// and private, loopback or link-local webhook targets.
    webhook_allow_private: bool = False
    # Downloads handed to a front nginx (relay.offload): the secret it sends in X-Relay-Offload on
    # every request it passes to the relay, and its internal location that fetches from upstream.
    offload_secret: str | None = None
    offload_location: str = "/_relay_offload"
    # What the database keeps (relay.store.retention): days of outcomes and of finished webhook
    # deliveries (unset: for good); and how often each process prunes.
    retention: RetentionPolicy = RetentionPolicy()
    retention_interval_seconds: float = 3600.0

    @property
    def key_file(self) -> Path:
        if self.secret_key_file is not None:
            return self.secret_key_file
        if self.database.path is not None:
            return self.database.path.with_name(self.database.path.name + ".key")
        # A PostgreSQL database has no folder of its own: the working directory's relay.key.
        return Path("relay.key")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
    return value


def _keep_days(env: Mapping[str, str], name: str) -> float | None:
    """Days of history to keep; unset or empty keeps it for good."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return _number(env, name, 0.0, minimum=MIN_KEEP_DAYS)
    except ConfigError:
        raise ConfigError(f"{name} must be a number of days >= {MIN_KEEP_DAYS:g} (unset keeps them for good), got {raw!r}") from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {raw!r}")
    return int(raw)


def is_loopback_address(text: str) -> bool | None:
    """Whether the IP address `text` is a loopback one (IPv4-mapped IPv6 too); None if it is no address."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def is_loopback_host(host: str) -> bool:
    """Whether only this machine can reach `host` (an address, or the name localhost); another
    name may resolve anywhere."""
    return host.strip().lower() == "localhost" or is_loopback_address(host) is True


def _metrics_host(env: Mapping[str, str], token: str | None) -> str:
    host = (env.get("RELAY_METRICS_HOST") or "127.0.0.1").strip()
    if token is None and not is_loopback_host(host):
        raise ConfigError(
            f"RELAY_METRICS_HOST={host} serves /metrics beyond this machine: set RELAY_METRICS_TOKEN too "
            "(metrics name keys and accounts and show their budgets)"
        )
    return host


def database_location(env: Mapping[str, str] | None = None) -> DatabaseLocation:
    env = os.environ if env is None else env
    try:
        return parse_location(env.get("RELAY_DATABASE") or "relay.db")
    except LocationError as error:
        raise ConfigError(f"RELAY_DATABASE: {error}") from None


def pool_settings(env: Mapping[str, str]) -> PoolSettings:
    default = PoolSettings()
    max_size = int(_number(env, "RELAY_DATABASE_POOL_MAX_SIZE", default.max_size, minimum=1))
    return PoolSettings(
        min_size=min(max_size, int(_number(env, "RELAY_DATABASE_POOL_MIN_SIZE", default.min_size, minimum=0))),
        max_size=max_size,
        timeout_seconds=_number(env, "RELAY_DATABASE_POOL_TIMEOUT_SECONDS", default.timeout_seconds, minimum=0.01),
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    metrics_token = env.get("RELAY_METRICS_TOKEN") or None
    return Settings(
        database=database_location(env),
        database_busy_timeout_seconds=_number(env, "RELAY_DATABASE_BUSY_TIMEOUT_SECONDS", 10.0, minimum=0.01),
        database_pool=pool_settings(env),
        secret_key=env.get("RELAY_SECRET_KEY") or None,
        secret_key_file=Path(env["RELAY_SECRET_KEY_FILE"]) if env.get("RELAY_SECRET_KEY_FILE") else None,
        sticky_ttl_seconds=_number(env, "RELAY_STICKY_TTL_SECONDS", 3600.0, minimum=1.0),
        default_cooldown_seconds=_number(env, "RELAY_DEFAULT_COOLDOWN_SECONDS", 60.0, minimum=1.0),
        max_cooldown_seconds=_number(env, "RELAY_MAX_COOLDOWN_SECONDS", 7 * 24 * 3600.0, minimum=1.0),
        connect_timeout_seconds=_number(env, "RELAY_CONNECT_TIMEOUT", 10.0, minimum=0.001),
        read_timeout_seconds=_number(env, "RELAY_READ_TIMEOUT", 300.0, minimum=0.001),
        max_body_bytes=int(_number(env, "RELAY_MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1)),
        refresh_interval_seconds=_number(env, "RELAY_REFRESH_INTERVAL_SECONDS", 0.5, minimum=0.05),
        holder_lease_seconds=_number(env, "RELAY_HOLDER_LEASE_SECONDS", 10.0, minimum=1.0),
        poll_after_ms=int(_number(env, "RELAY_POLL_AFTER_MS", 2000, minimum=0)),
        max_failover=int(_number(env, "RELAY_MAX_FAILOVER", 2, minimum=0)),
        server_error_threshold=int(_number(env, "RELAY_SERVER_ERROR_THRESHOLD", 3, minimum=1)),
        server_error_cooldown_seconds=_number(env, "RELAY_SERVER_ERROR_COOLDOWN_SECONDS", 30.0, minimum=1.0),
        idempotency_ttl_seconds=_number(env, "RELAY_IDEMPOTENCY_TTL_SECONDS", 24 * 3600.0, minimum=60.0),
        log_format=_choice(env, "RELAY_LOG_FORMAT", ("text", "json"), "text"),
        metrics_token=metrics_token,
        metrics_port=_port(env, "RELAY_METRICS_PORT"),
        metrics_host=_metrics_host(env, metrics_token),
        access_log=_choice(env, "RELAY_ACCESS_LOG", ("1", "0", "true", "false"), "1") in ("1", "true"),
        scheduler=_choice(env, "RELAY_SCHEDULER", ("lru", "most-remaining"), "lru"),
        image_url_hosts=_host_names(env, "RELAY_IMAGE_URL_HOSTS"),
        job_watcher=_choice(env, "RELAY_JOB_WATCHER", ("1", "0", "true", "false"), "1") in ("1", "true"),
        gc_freeze=_choice(env, "RELAY_GC_FREEZE", ("1", "0", "true", "false"), "1") in ("1", "true"),
        job_poll_seconds=_number(env, "RELAY_JOB_POLL_SECONDS", 10.0, minimum=0.05),
        job_max_age_seconds=_number(env, "RELAY_JOB_MAX_AGE_SECONDS", 24 * 3600.0, minimum=1.0),
        watcher_polls_per_minute=int(_number(env, "RELAY_WATCHER_POLLS_PER_MINUTE", 60, minimum=1)),
        webhook_retry_schedule=_schedule(env, "RELAY_WEBHOOK_RETRY_SCHEDULE", Settings.webhook_retry_schedule),
        webhook_timeout_seconds=_number(env, "RELAY_WEBHOOK_TIMEOUT_SECONDS", 15.0, minimum=0.05),
        webhook_disable_after_seconds=_number(env, "RELAY_WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 24 * 3600.0, minimum=1.0),
        webhook_allow_private=_choice(env, "RELAY_WEBHOOK_ALLOW_PRIVATE", ("1", "0", "true", "false"), "0") in ("1", "true"),
        offload_secret=_offload_secret(env),
        offload_location=_offload_location(env),
        retention=RetentionPolicy(
            outcomes_days=_keep_days(env, "RELAY_KEEP_OUTCOMES_DAYS"),
            webhook_deliveries_days=_keep_days(env, "RELAY_KEEP_WEBHOOK_DELIVERIES_DAYS"),
        ),
        retention_interval_seconds=_number(env, "RELAY_PRUNE_INTERVAL_SECONDS", 3600.0, minimum=1.0),
    )


def _offload_secret(env: Mapping[str, str]) -> str | None:
    secret = env.get("RELAY_OFFLOAD_SECRET") or None
    # It stands between a client and an upstream credential: a guessable one would hand both out.
    if secret is not None and (len(secret) < 32 or not secret.isascii() or not secret.isprintable() or " " in secret):
        raise ConfigError("RELAY_OFFLOAD_SECRET must be at least 32 printable ASCII characters without spaces (e.g. openssl rand -hex 32)")
    return secret


def _offload_location(env: Mapping[str, str]) -> str:
    location = env.get("RELAY_OFFLOAD_LOCATION") or Settings.offload_location
    if not re.fullmatch(r"/[A-Za-z0-9._/-]{1,200}", location):
        raise ConfigError(f"RELAY_OFFLOAD_LOCATION must be a path such as /_relay_offload, got {location!r}")
    return location


def _schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Comma-separated delays in seconds, one per attempt, the first usually 0."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds such as 0,5,300, got {raw!r}") from None
    if not all(0 <= delay < float("inf") for delay in delays):
        raise ConfigError(f"{name} must list finite delays >= 0, got {raw!r}")
    return delays


_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|\[[0-9a-f:.]{2,45}\]")


def _host_names(env: Mapping[str, str], name: str) -> frozenset[str]:
    """A comma-separated list of host names (or IP literals, IPv6 in brackets), compared lower-case."""
    hosts = frozenset(part.strip().lower() for part in env.get(name, "").split(",") if part.strip())
    for host in hosts:
        if not _HOST_NAME.fullmatch(host):
            raise ConfigError(f"{name} lists host names such as images.example.com or 127.0.0.1, got {host!r}")
    return hosts
