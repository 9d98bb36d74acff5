"""What every relayctl command shares: the database options, durations, one-line errors."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from relay.accounts import AccountInputError
from relay.config import ConfigError, Settings, load_settings
from relay.crypto import SecretBox, SecretKeyError
from relay.errors import shown
from relay.keys import KeyInputError
from relay.limits import LimitInputError
from relay.opening import open_store
from relay.pricing import PriceInputError
from relay.store import AlreadyExists, LocationError, NotFound, Store, StoreUnavailable, parse_location

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# The longest duration any option takes. Expiries and grace periods are that far from now at
# most, so every stored time stays a date the relay and relayctl can show.
MAX_DURATION_DAYS = 36500
MAX_DURATION_SECONDS = MAX_DURATION_DAYS * 86400

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
    StoreUnavailable,
)


def parse_duration(value: str) -> float:
    """Seconds in a duration like 90m, 12h, 30d or 2w: at least 1 s, at most MAX_DURATION_DAYS."""
    match = _DURATION.match(value)
    digits = match.group(1).lstrip("0") if match else ""
    if match is None or not digits:
        raise click.BadParameter(f"{shown(value)!r} is not a duration like 90m, 12h, 30d or 2w")
    # Long digit strings are too long anyway, and int() refuses thousands of digits.
    seconds = int(digits) * _UNIT_SECONDS[match.group(2)] if len(digits) <= 15 else MAX_DURATION_SECONDS + 1
    if seconds > MAX_DURATION_SECONDS:
        raise click.BadParameter(f"{shown(value)!r} is longer than the longest duration, {MAX_DURATION_DAYS}d (100 years)")
    return float(seconds)


class Duration(click.ParamType[float, Any]):
    """An option's duration (parse_duration), in seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except click.BadParameter as error:
            self.fail(error.message, param, ctx)


DURATION = Duration()


class FiniteNumber(click.ParamType[int | float, Any]):
    """A number within [low, high]; nan and inf are refused (click's FloatRange lets nan through)."""

    def __init__(self, low: float, high: float, *, whole: bool = False) -> None:
        self.low, self.high, self.whole = low, high, whole
        self.name = "integer" if whole else "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number: int | float = value
        else:
            text = str(value).strip()
            try:
                # Long digit strings are out of range anyway; int() would refuse them with a worse message.
                number = (int(text) if len(text) <= 20 else self.high + 1) if self.whole else float(text)
            except ValueError:
                self.fail(f"{shown(value)!r} is not {'a whole number' if self.whole else 'a number'}", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{shown(value)!r} is not in the range {_plain(self.low)} to {_plain(self.high)}", param, ctx)
        # -0 passes the range check and would be stored and shown as "-0": adding 0 makes it 0.
        return number + 0 if self.whole else number + 0.0


def _plain(number: float) -> str:
    return f"{number:,.0f}" if number == int(number) else f"{number:g}"


def database_options(command: F) -> F:
    """--db and --json on every command; library errors become one clear line and exit 1."""

    @click.option(
        "--db",
        "db_path",
        envvar="RELAY_DATABASE",
        default="relay.db",
        show_default="$RELAY_DATABASE, else relay.db",
        help="The relay's database: a SQLite path or a postgresql:// URL (env RELAY_DATABASE).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        context = click.get_current_context()
        kwargs["db_path"] = _inherited(context, "db_path", kwargs["db_path"])
        kwargs["as_json"] = _inherited(context, "as_json", kwargs["as_json"])
        try:
            return command(*args, **kwargs)
        except OPERATOR_ERRORS as error:
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]


def remember_options(context: click.Context, **given: Any) -> None:
    """Options a group got on the command line (`relayctl --db PATH keys list`), for its commands."""
    for name, value in given.items():
        if value is not None and context.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            context.meta[f"relayctl.{name}"] = value


def json_wanted(as_json: bool) -> bool:
    """A command's own --json, or one given before the command (`relayctl --json ...`)."""
    return as_json or bool(click.get_current_context().meta.get("relayctl.as_json"))


def _inherited(context: click.Context, name: str, value: Any) -> Any:
    """A command's own option when given on its command line, else the nearest group's, else
    its environment variable or default. Groups run before their commands, and `meta` is
    shared down the chain, so the last group that saw the option has the final say."""
    if context.get_parameter_source(name) == ParameterSource.COMMANDLINE:
        remember_options(context, **{name: value})
        return value
    return context.meta.get(f"relayctl.{name}", value)


def settings_for(db_path: str) -> Settings:
    """The relay's settings from the environment, with --db as the database."""
    try:
        return dataclasses.replace(load_settings(), database=parse_location(db_path))
    except (ConfigError, LocationError) as error:
        raise click.ClickException(str(error)) from None


def file_in_the_way(path: Path) -> Path | None:
    """A file standing where one of a SQLite database's folders must be: no command can create
    that folder, so saying it "does not exist" (and pointing at 'db init') would mislead."""
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            return None if folder.is_dir() else folder
    return None


def check_folder(path: Path | None, *, hint: str = "check --db or RELAY_DATABASE") -> None:
    """Refuse a SQLite path under a file, naming that file (see file_in_the_way)."""
    blocker = file_in_the_way(path) if path is not None else None
    if blocker is not None:
        raise click.ClickException(f"{blocker} is a file, not a folder, so no database can be at {path}: {hint}")


def open_db(db_path: str, *, create: bool = False) -> tuple[Store, SecretBox]:
    """The relay's database, for a command that changes it. Only commands that set a relay up
    may create it: a mistyped --db must not look like a relay with no keys or accounts."""
    check_folder(settings_for(db_path).database.path)
    if not create:
        _must_exist(db_path)
    return open_store(settings_for(db_path))


def _must_exist(db_path: str) -> None:
    """A SQLite file must exist already, and a PostgreSQL database must hold the relay's tables:
    a mistyped --db must not be given a schema (and a key file) by a command that changes it."""
    settings = settings_for(db_path)
    if not relay_database_exists(settings):
        raise click.ClickException(
            f"no relay database at {settings.database}: check --db or RELAY_DATABASE "
            "(the relay creates it on first start, as do 'db init', 'accounts add', 'keys issue', 'prices set' and 'prices load')"
        )


def relay_database_exists(settings: Settings) -> bool:
    """Whether the database is a relay's: a SQLite file that exists, or a PostgreSQL database
    with a schema version recorded (an unreachable server raises StoreUnavailable)."""
    location = settings.database
    if location.path is not None:
        return location.path.exists()
    store = Store(location, read_only=True, busy_timeout_seconds=settings.database_busy_timeout_seconds, pool=settings.database_pool)
    try:
        return store.schema_status().version is not None
    finally:
        store.close()


def read_db(db_path: str) -> tuple[Store, SecretBox]:
    """The relay's database, for a command that only reads: nothing is written to it or beside it."""
    check_folder(settings_for(db_path).database.path)
    _must_exist(db_path)
    return open_store(settings_for(db_path), read_only=True)
