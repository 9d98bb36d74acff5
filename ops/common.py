"""What every relayctl command shares: the database options, durations, one-line errors."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from relay.accounts import AccountInputError
from relay.config import ConfigError, Settings, load_settings
from relay.crypto import SecretBox, SecretKeyError
from relay.keys import KeyInputError
from relay.limits import LimitInputError
from relay.pricing import PriceInputError
from relay.state import open_store
from relay.store import AlreadyExists, NotFound, Store

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# Errors from the library that are the operator's to fix: one line, exit 1.
OPERATOR_ERRORS = (
    NotFound,
    AlreadyExists,
    KeyInputError,
    AccountInputError,
    SecretKeyError,
    ConfigError,
    LimitInputError,
    PriceInputError,
)


def parse_duration(value: str) -> float:
    match = _DURATION.match(value)
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r} is not a duration like 90m, 12h, 30d or 2w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def database_options(command: F) -> F:
    """--db and --json on every command; library errors become one clear line and exit 1."""

    @click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False),
        envvar="RELAY_DATABASE",
        default="relay.db",
        show_default="$RELAY_DATABASE, else relay.db",
        help="SQLite database the relay uses (env RELAY_DATABASE).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OPERATOR_ERRORS as error:
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]


def settings_for(db_path: str) -> Settings:
    try:
        settings = load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    return Settings(database=Path(db_path), secret_key=settings.secret_key)


def open_db(db_path: str, *, create: bool = False) -> tuple[Store, SecretBox]:
    """The relay's database. Only commands that set a relay up may create it: a mistyped
    --db must not look like a relay with no keys or accounts."""
    if not create and not Path(db_path).exists():
        raise click.ClickException(
            f"no relay database at {db_path}: check --db or RELAY_DATABASE "
            "(the relay creates it on first start, as do 'accounts add', 'keys issue', 'prices set' and 'prices load')"
        )
    return open_store(settings_for(db_path))
