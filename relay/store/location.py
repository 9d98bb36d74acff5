"""Where the database is: one setting (RELAY_DATABASE, relayctl's --db) names SQLite or PostgreSQL.

- a path, or `sqlite:///relative/path` / `sqlite:////absolute/path`: SQLite, the default;
- `postgresql://user:password@host:port/dbname?sslmode=require` (or `postgres://`): PostgreSQL,
  with libpq's own query options passed through unchanged.

A location prints as `shown`, with any password replaced by `***`, so an f-string in a log line,
an error or `relayctl doctor` cannot leak it; only `raw` carries the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit

Dialect = Literal["sqlite", "postgresql"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_LIBPQ_KEYWORDS = re.compile(r"(^|\s)(host|hostaddr|dbname|user|password|port|sslmode)\s*=")


class LocationError(ValueError):
    """RELAY_DATABASE (or --db) names no database this relay can open."""


@dataclass(frozen=True)
class DatabaseLocation:
    dialect: Dialect
    # The password-free form, for every message a person or a log sees.
    shown: str
    # SQLite: the database file.
    path: Path | None = None
    # The setting as given, password included: for the driver and for a child process's
    # RELAY_DATABASE, never for a message.
    raw: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.shown

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def sqlite_path(self) -> Path:
        if self.path is None:
            raise LocationError(f"{self.shown} is not a SQLite database")
        return self.path


def parse_location(given: str | Path | DatabaseLocation) -> DatabaseLocation:
    if isinstance(given, DatabaseLocation):
        return given
    if isinstance(given, Path):
        return DatabaseLocation("sqlite", str(given), path=given, raw=str(given))
    text = given.strip()
    if not text:
        raise LocationError("the database location is empty: set RELAY_DATABASE or --db to a path or a postgresql:// URL")
    scheme, sep, rest = text.partition("://")
    if not sep or "/" in scheme or "\\" in scheme:
        if _LIBPQ_KEYWORDS.search(text):
            # `host=db password=...` would otherwise name a SQLite file, shown with its password.
            raise LocationError("libpq keyword settings are not supported here: give a postgresql:// URL")
        return DatabaseLocation("sqlite", text, path=Path(text), raw=text)
    scheme = scheme.lower()
    if scheme == "sqlite":
        # SQLAlchemy's spelling: sqlite:///relay.db is relative, sqlite:////var/lib/relay.db absolute.
        if not rest.startswith("/") or rest == "/":
            raise LocationError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        path = Path(rest[1:])
        return DatabaseLocation("sqlite", str(path), path=path, raw=text)
    if scheme in _POSTGRES_SCHEMES:
        return _postgres(text)
    raise LocationError(f"the database URL scheme {scheme[:20]!r} is not supported: use a path, sqlite:///path or postgresql://")


def _postgres(url: str) -> DatabaseLocation:
    try:
        parts = urlsplit(url)
        # Reading the port validates it (a non-number raises).
        _ = parts.port
    except ValueError:
        # The driver's and urllib's messages can repeat the URL: say what is wrong, not what was given.
        raise LocationError("the postgresql:// URL cannot be parsed: check its host, port and user information") from None
    if parts.fragment:
        raise LocationError("a postgresql:// URL takes no #fragment")
    import psycopg.conninfo  # only PostgreSQL users pay for importing the driver

    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        raise LocationError("libpq does not accept this postgresql:// URL: check its query options") from None
    return DatabaseLocation("postgresql", _without_password(parts), raw=url)


def _without_password(parts: SplitResult) -> str:
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = userinfo.split(":", 1)[0] + ":***@" + hostport
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}" if eq else name
        for name, eq, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    # Not urlunsplit: it drops an empty host (postgresql:///relay?host=/run/postgresql, a unix socket).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
