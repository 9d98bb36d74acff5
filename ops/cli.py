"""relayctl: keys, accounts, cooldowns and the sandbox upstream.

Every command works on the database a running relay uses (`--db`, default $RELAY_DATABASE
or ./relay.db); the relay picks up changes within about a second, without a restart.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from relay.accounts import CONSUMER_BACKEND_WARNING, AccountInputError, add_account, cooldowns, reset_account
from relay.config import ConfigError, Settings, load_settings
from relay.crypto import SecretBox, SecretKeyError, generate_key
from relay.keys import PERMISSIONS, KeyInputError, issue_key
from relay.state import open_store
from relay.store import ACCOUNT_TYPES, AlreadyExists, NotFound, Store

from .output import emit_json, emit_table, timestamp

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> float:
    match = _DURATION.match(value)
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r} is not a duration like 90m, 12h, 30d or 2w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def database_options(command: F) -> F:
    """--db and --json on every command; store errors become one clear line and exit 1."""

    @click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False),
        envvar="RELAY_DATABASE",
        default="relay.db",
        show_default=True,
        help="SQLite database the relay uses (env RELAY_DATABASE).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (NotFound, AlreadyExists, KeyInputError, AccountInputError, SecretKeyError, ConfigError) as error:
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]


def open_db(db_path: str) -> tuple[Store, SecretBox]:
    try:
        settings = load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    return open_store(Settings(database=Path(db_path), secret_key=settings.secret_key))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="video-relay")
def main() -> None:
    """Operate a video relay: relay keys, upstream accounts, cooldowns.

    \b
    Example:
      relayctl accounts add main --type openai-responses --token-stdin < key.txt
      relayctl keys issue alice --permission openai
      relayctl cooldowns
    """


# -- keys -----------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Relay keys: what users send as their bearer token."""


@keys.command("issue")
@click.argument("name")
@click.option(
    "--permission",
    "-p",
    "permissions",
    multiple=True,
    type=click.Choice(PERMISSIONS),
    help="Service the key may use; repeat for several (default: openai).",
)
@click.option("--expires-in", help="Expire the key after this long, e.g. 30d, 12h, 2w.")
@click.option("--note", help="Free text for operators (who it is for).")
@database_options
def keys_issue(
    name: str, permissions: tuple[str, ...], expires_in: str | None, note: str | None, db_path: str, as_json: bool
) -> None:
    """Issue a new key named NAME and print it once: it cannot be shown again.

    \b
    Example:
      relayctl keys issue alice --permission openai --expires-in 30d
    """
    expires_at = time.time() + parse_duration(expires_in) if expires_in else None
    store, _ = open_db(db_path)
    issued = issue_key(store, name, permissions or ("openai",), expires_at=expires_at, note=note)
    record = issued.record
    if as_json:
        emit_json(
            {
                "name": record.name,
                "key": issued.key,
                "permissions": sorted(record.permissions),
                "expires_at": timestamp(record.expires_at) or None,
            }
        )
        return
    click.echo(f"Issued key {record.name!r} with permissions {', '.join(sorted(record.permissions))}.")
    if record.expires_at:
        click.echo(f"It expires at {timestamp(record.expires_at)}.")
    click.echo("Copy it now; the relay stores only a hash and cannot show it again:\n")
    click.echo(f"  {issued.key}\n")


@keys.command("list")
@database_options
def keys_list(db_path: str, as_json: bool) -> None:
    """List keys (never their secrets).

    \b
    Example:
      relayctl keys list --json
    """
    store, _ = open_db(db_path)
    now = time.time()
    rows = [
        {
            "name": k.name,
            "permissions": sorted(k.permissions),
            "state": k.state(now),
            "created": timestamp(k.created_at),
            "last_used": timestamp(k.last_used_at) or None,
            "expires": timestamp(k.expires_at) or None,
            "note": k.note,
        }
        for k in store.list_keys()
    ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["name", "permissions", "state", "created", "last_used", "expires", "note"], empty="No keys.")


@keys.command("revoke")
@click.argument("name")
@database_options
def keys_revoke(name: str, db_path: str, as_json: bool) -> None:
    """Revoke the key NAME at once (running relays refuse it within a second).

    \b
    Example:
      relayctl keys revoke alice
    """
    store, _ = open_db(db_path)
    store.revoke_key(name, time.time())
    if as_json:
        emit_json({"name": name, "state": "revoked"})
    else:
        click.echo(f"Revoked key {name!r}.")


# -- accounts -------------------------------------------------------------------------------


@main.group()
def accounts() -> None:
    """Upstream accounts the relay sends work to."""


def _account_row(account: Any, now: float) -> dict[str, Any]:
    return {
        "name": account.name,
        "type": account.type,
        "base_api": account.base_api,
        "priority": account.priority,
        "state": account.effective_state(now),
        "until": timestamp(account.state_until) if account.effective_state(now) == "rate_limited" else None,
        "last_used": timestamp(account.last_used_at) or None,
    }


@accounts.command("add")
@click.argument("name")
@click.option("--type", "account_type", type=click.Choice(ACCOUNT_TYPES), required=True, help="openai-responses (API key, recommended) or openai (ChatGPT access token).")
@click.option("--token", help="The API key or access token (visible in shell history: prefer --token-stdin or the prompt).")
@click.option("--token-stdin", is_flag=True, help="Read the token from standard input.")
@click.option("--base-api", help="Upstream base URL (default: https://api.openai.com/v1 for openai-responses, https://chatgpt.com/backend-api for openai).")
@click.option("--priority", type=int, default=100, show_default=True, help="Lower numbers are used first.")
@database_options
def accounts_add(
    name: str,
    account_type: str,
    token: str | None,
    token_stdin: bool,
    base_api: str | None,
    priority: int,
    db_path: str,
    as_json: bool,
) -> None:
    """Add an upstream account NAME; its token is stored encrypted.

    Accounts of type 'openai' drive ChatGPT's private backend with an access token: that
    may breach that provider's terms, and the operator carries the risk. Prefer
    'openai-responses' with an API key.

    \b
    Example:
      relayctl accounts add main --type openai-responses --token-stdin < key.txt
      relayctl accounts add backup --type openai-responses --base-api https://gateway.example/v1
    """
    if account_type == "openai":
        click.echo(CONSUMER_BACKEND_WARNING, err=True)
    if token is not None and token_stdin:
        raise click.UsageError("give the token with --token or --token-stdin, not both")
    if token_stdin:
        token = sys.stdin.readline()
    elif token is None:
        if not sys.stdin.isatty():
            raise click.UsageError("no token: pass --token-stdin and pipe it in, or run in a terminal to be prompted")
        token = click.prompt("Token (input hidden)", hide_input=True)
    store, box = open_db(db_path)
    account = add_account(
        store, box, name=name, type=account_type, credential=token or "", base_api=base_api, priority=priority
    )
    if as_json:
        emit_json(_account_row(account, time.time()))
    else:
        click.echo(f"Added account {account.name!r} ({account.type}, {account.base_api}, priority {account.priority}).")


@accounts.command("list")
@database_options
def accounts_list(db_path: str, as_json: bool) -> None:
    """List accounts (never their credentials).

    \b
    Example:
      relayctl accounts list --json
    """
    store, _ = open_db(db_path)
    now = time.time()
    rows = [_account_row(account, now) for account in store.list_accounts()]
    if as_json:
        emit_json(rows)
    else:
        emit_table(
            rows,
            ["name", "type", "base_api", "priority", "state", "until", "last_used"],
            empty="No accounts. Add one with: relayctl accounts add NAME --type openai-responses --token-stdin",
        )


@accounts.command("reset")
@click.argument("name")
@database_options
def accounts_reset(name: str, db_path: str, as_json: bool) -> None:
    """Put account NAME back to active (clears a rate limit or 'unauthorized').

    \b
    Example:
      relayctl accounts reset main
    """
    store, _ = open_db(db_path)
    reset_account(store, name)
    if as_json:
        emit_json({"name": name, "state": "active"})
    else:
        click.echo(f"Account {name!r} is active again.")


@accounts.command("disable")
@click.argument("name")
@database_options
def accounts_disable(name: str, db_path: str, as_json: bool) -> None:
    """Take account NAME out of rotation until it is enabled again.

    \b
    Example:
      relayctl accounts disable main
    """
    store, _ = open_db(db_path)
    store.set_account_enabled(name, False)
    if as_json:
        emit_json({"name": name, "enabled": False})
    else:
        click.echo(f"Account {name!r} is disabled.")


@accounts.command("enable")
@click.argument("name")
@database_options
def accounts_enable(name: str, db_path: str, as_json: bool) -> None:
    """Put a disabled account NAME back into rotation.

    \b
    Example:
      relayctl accounts enable main
    """
    store, _ = open_db(db_path)
    store.set_account_enabled(name, True)
    if as_json:
        emit_json({"name": name, "enabled": True})
    else:
        click.echo(f"Account {name!r} is enabled.")


# -- cooldowns ------------------------------------------------------------------------------


@main.command("cooldowns")
@database_options
def cooldowns_command(db_path: str, as_json: bool) -> None:
    """Accounts not serving new work now: rate-limited, unauthorized or disabled.

    \b
    Example:
      relayctl cooldowns --json
    """
    store, _ = open_db(db_path)
    rows = []
    for cooldown in cooldowns(store, time.time()):
        row = cooldown.as_dict()
        row["since"] = timestamp(cooldown.since) or None
        row["until"] = timestamp(cooldown.until) or None
        rows.append(row)
    if as_json:
        emit_json(rows)
    else:
        emit_table(
            rows,
            ["account", "state", "reason", "since", "until", "seconds_left", "last_error"],
            empty="All accounts are active.",
        )


# -- secrets and sandbox ----------------------------------------------------------------------


@main.group("secrets")
def secrets_group() -> None:
    """The key that encrypts upstream credentials at rest."""


@secrets_group.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new random key for RELAY_SECRET_KEY.

    \b
    Example:
      export RELAY_SECRET_KEY=$(relayctl secrets generate-key)
    """
    click.echo(generate_key())


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--complete-after", default=1.0, show_default=True, type=float, help="Seconds until a job completes.")
@click.option("--fail", type=click.Choice(["429", "401", "402", "500", "slow"]), help="Answer every request with this failure.")
def sandbox(host: str, port: int, complete_after: float, fail: str | None) -> None:
    """Run the local emulator of the Videos API (no credentials, no internet).

    Point an account at it with --base-api http://HOST:PORT/v1.

    \b
    Example:
      relayctl sandbox --port 8090
      relayctl accounts add sandbox --type openai-responses --token test --base-api http://127.0.0.1:8090/v1
    """
    from relay.sandbox import run_sandbox

    run_sandbox(host, port, complete_after_seconds=complete_after, fail=fail)
