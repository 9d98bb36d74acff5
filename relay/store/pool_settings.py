"""How a process sizes its connections to PostgreSQL, apart from the driver: settings and the
CLI read it without importing psycopg, which only PostgreSQL users pay for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolSettings:
    """A process's connections to PostgreSQL (RELAY_DATABASE_POOL_*)."""

    min_size: int = 2
    max_size: int = 10
    # How long a store call waits for a free connection before the request gets a 503.
    timeout_seconds: float = 5.0
