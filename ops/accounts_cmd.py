"""relayctl accounts: the upstream accounts the relay sends work to."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from relay.accounts import (
    CONSUMER_BACKEND_WARNING,
    PRIORITY_RANGE,
    AccountInputError,
    add_account,
    checked_input,
    daily_cap_status,
    redact_proxy,
    remove_account,
    reset_account,
    rotate_credential,
    set_base_api,
    set_daily_cap,
    set_enabled,
    set_models,
    set_priority,
    set_proxy,
    validate_base_api,
    validate_models,
)
from relay.store import ACCOUNT_TYPES, Account, Store
from relay.upstream import shown_url

from .common import database_options, open_db, read_db
from .output import emit, emit_json, emit_record, timestamp

ERROR_RATE_WINDOW_SECONDS = 3600
PRIORITY = click.IntRange(*PRIORITY_RANGE)
ACCOUNT_COLUMNS = ["name", "type", "base_api", "priority", "models", "state", "until", "last_used", "error_rate_1h"]


def account_row(account: Account, now: float, rates: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    state = account.effective_state(now)
    attempts, errors = (rates or {}).get(account.name, (0, 0))
    return {
        "name": account.name,
        "type": account.type,
        # A row stored before base_api was checked may hold a password in it.
        "base_api": shown_url(account.base_api),
        "priority": account.priority,
        # None (an empty cell): every model the account's type can carry.
        "models": list(account.models) if account.models is not None else None,
        "state": state,
        "until": timestamp(account.state_until) if state == "rate_limited" else None,
        "last_used": timestamp(account.last_used_at),
        "error_rate_1h": round(errors / attempts, 3) if attempts else None,
    }


def read_token(token: str | None, token_stdin: bool) -> str:
    """From --token, --token-stdin, or a hidden prompt; never echoed."""
    if token is not None and token_stdin:
        raise click.UsageError("give the token with --token or --token-stdin, not both")
    if token_stdin:
        return token_from_stdin(sys.stdin.read(MAX_TOKEN_INPUT_CHARS + 1))
    if token is not None:
        return token
    if not sys.stdin.isatty():
        raise click.UsageError("no token: pass --token-stdin and pipe it in, or run in a terminal to be prompted")
    return str(click.prompt("Token (input hidden)", hide_input=True))


# Far above any real token (ChatGPT access tokens run to a few thousand characters).
MAX_TOKEN_INPUT_CHARS = 64 * 1024


def token_from_stdin(text: str) -> str:
    """The one line piped in. Two lines are refused: keeping one of them silently could store the wrong token."""
    if len(text) > MAX_TOKEN_INPUT_CHARS:
        raise click.UsageError(f"more than {MAX_TOKEN_INPUT_CHARS:,} characters on standard input: pipe in the token alone")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        raise click.UsageError(f"{len(lines)} non-empty lines on standard input: pipe in the token alone, on one line")
    return lines[0] if lines else ""


def token_options(command: Any) -> Any:
    command = click.option("--token-stdin", is_flag=True, help="Read the token from standard input.")(command)
    return click.option("--token", help="The API key or access token (visible in shell history: prefer --token-stdin or the prompt).")(
        command
    )


def done(name: str, as_json: bool, message: str, **fields: Any) -> None:
    if as_json:
        emit_json({"name": name, **fields})
    else:
        click.echo(message)


@click.group()
def accounts() -> None:
    """Upstream accounts the relay sends work to."""


@accounts.command("add")
@click.argument("name")
@click.option(
    "--type",
    "account_type",
    type=click.Choice(ACCOUNT_TYPES),
    required=True,
    help="openai-responses (API key, recommended), azure-openai (Azure OpenAI key, sent as api-key; --base-api required),"
    " gemini (Gemini API key, sent as x-goog-api-key; serves veo-* models, translated behind the OpenAI contract),"
    " runway (Runway API key, sent as Bearer with X-Runway-Version; serves gen4*, gen3a* and veo3* models, translated),"
    " byteplus (BytePlus ModelArk API key, sent as Bearer; serves seedance-* models, translated),"
    " fal (fal API key, sent as 'Authorization: Key'; serves fal-ai/* model ids, translated),"
    " or openai (ChatGPT access token; see the warning above).",
)
@token_options
@click.option(
    "--base-api",
    help="Upstream base URL (default: https://api.openai.com/v1 for openai-responses, https://chatgpt.com/backend-api for openai,"
    " https://generativelanguage.googleapis.com/v1beta for gemini, https://api.dev.runwayml.com/v1 for runway,"
    " https://ark.ap-southeast.bytepluses.com/api/v3 for byteplus, https://queue.fal.run for fal;"
    " for azure-openai, https://RESOURCE.openai.azure.com/openai/v1).",
)
@click.option("--priority", type=PRIORITY, default=100, show_default=True, help="Lower numbers are used first.")
@click.option("--proxy", help="Send this account's traffic through a proxy: http://host:port or socks5://host:port.")
@click.option(
    "--models",
    "models_text",
    metavar="A,B",
    help="Serve only these models (default: every model its type carries: veo-* for gemini, any other model for the"
    " OpenAI-contract types). Change with 'accounts models'.",
)
@database_options
def accounts_add(
    name: str,
    account_type: str,
    token: str | None,
    token_stdin: bool,
    base_api: str | None,
    priority: int,
    proxy: str | None,
    models_text: str | None,
    db_path: str,
    as_json: bool,
) -> None:
    """Add an upstream account NAME; its token is stored encrypted.

    Accounts of type 'openai' drive ChatGPT's private backend with an access token: that
    may breach that provider's terms of use, and the operator carries the risk. Prefer
    'openai-responses' with an API key.

    \b
    Example:
      relayctl accounts add main --type openai-responses --token-stdin < key.txt
      relayctl accounts add backup --type openai-responses --base-api https://gateway.example/v1
      relayctl accounts add pro --type openai-responses --models sora-2-pro --token-stdin < key.txt
      relayctl accounts add az --type azure-openai --base-api https://res.openai.azure.com/openai/v1 --token-stdin < azure-key.txt
      relayctl accounts add veo --type gemini --token-stdin < gemini-key.txt
      relayctl accounts add kling --type fal --models fal-ai/kling-video/v2.1/master/text-to-video --token-stdin < fal-key.txt
      relayctl accounts add seedance --type byteplus --token-stdin < ark-key.txt
      relayctl accounts add runway --type runway --token-stdin < runway-key.txt
    """
    if account_type == "openai":
        click.echo(CONSUMER_BACKEND_WARNING, err=True)
    models = model_list(models_text) if models_text is not None else None
    if base_api is not None and not base_api:
        # An empty --base-api is a mistake, not a request for the type's default (leave the
        # option out for that): refused with the words 'accounts base-api NAME ""' gets.
        validate_base_api(base_api)
    credential = read_token(token, token_stdin)
    # Before the database is opened: refused input leaves nothing behind, not even a new database.
    checked_input(name=name, type=account_type, credential=credential, base_api=base_api, priority=priority, proxy=proxy)
    store, box = open_db(db_path, create=True)
    account = add_account(
        store,
        box,
        name=name,
        type=account_type,
        credential=credential,
        base_api=base_api,
        priority=priority,
        proxy=proxy,
        models=models,
    )
    done(
        name,
        as_json,
        f"Added account {account.name!r} ({account.type}, {shown_url(account.base_api)}, priority {account.priority}).",
        **{k: v for k, v in account_row(account, time.time()).items() if k != "name"},
    )


@accounts.command("list")
@database_options
def accounts_list(db_path: str, as_json: bool) -> None:
    """List accounts with state and recent error rate (never their credentials).

    \b
    Example:
      relayctl accounts list --json
    """
    store, _ = read_db(db_path)
    now = time.time()
    rates = store.error_rates(now - ERROR_RATE_WINDOW_SECONDS)
    emit(
        [account_row(account, now, rates) for account in store.list_accounts()],
        ACCOUNT_COLUMNS,
        as_json=as_json,
        empty="No accounts. Add one with: relayctl accounts add NAME --type openai-responses --token-stdin",
    )


@accounts.command("show")
@click.argument("name")
@database_options
def accounts_show(name: str, db_path: str, as_json: bool) -> None:
    """Everything about account NAME except its credential (a proxy's user name and password show as ***).

    \b
    Example:
      relayctl accounts show main
    """
    store, box = read_db(db_path)
    now = time.time()
    account = store.account(name)
    rates = store.error_rates(now - ERROR_RATE_WINDOW_SECONDS)
    record = account_row(account, now, rates)
    attempts, errors = rates.get(name, (0, 0))
    record.update(
        {
            "proxy": redact_proxy(box.decrypt_or_none(account.proxy_encrypted)) if account.proxy_encrypted else None,
            "enabled": account.enabled,
            "state_reason": account.state_reason,
            "state_since": timestamp(account.state_since),
            "last_error": account.last_error,
            "attempts_1h": attempts,
            "errors_1h": errors,
            "live_videos": store.live_video_count(name, now),
            **daily_cap_status(store, account, now),
            **upstream_quota_record(store, name),
            "credential": "stored encrypted",
            "credential_rotated": timestamp(account.credential_rotated_at),
            "created": timestamp(account.created_at),
        }
    )
    emit_record(record, as_json=as_json)


def upstream_quota_record(store: Store, name: str) -> dict[str, Any]:
    quota = next((q for q in store.account_quotas() if q.account == name), None)
    return {
        "upstream_requests_limit": quota.limit_requests if quota else None,
        "upstream_requests_remaining": quota.remaining_requests if quota else None,
        "upstream_requests_reset": timestamp(quota.resets_at) if quota else None,
        "upstream_quota_seen": timestamp(quota.observed_at) if quota else None,
    }


@accounts.command("limits")
@click.argument("name")
@click.option(
    "--max-video-seconds-per-day",
    "cap",
    metavar="SECONDS|none",
    help="Seconds of video this account may render per UTC day; 'none' removes the cap.",
)
@database_options
def accounts_limits(name: str, cap: str | None, db_path: str, as_json: bool) -> None:
    """Show or set account NAME's daily cap. A capped account is skipped until the UTC day ends.

    \b
    Example:
      relayctl accounts limits main --max-video-seconds-per-day 600
      relayctl accounts limits main --max-video-seconds-per-day none
    """
    if cap is None:
        store, _ = read_db(db_path)
    else:
        seconds = None if cap.strip().lower() == "none" else _cap_seconds(cap)
        store, _ = open_db(db_path)
        set_daily_cap(store, name, seconds)
    emit_record({"name": name, **daily_cap_status(store, store.account(name), time.time())}, as_json=as_json)


def _cap_seconds(cap: str) -> float:
    try:
        return float(cap)
    except ValueError:
        raise click.BadParameter(f"{cap!r} is not a number of seconds (or 'none')", param_hint="--max-video-seconds-per-day") from None


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
    set_enabled(store, name, True)
    done(name, as_json, f"Account {name!r} is enabled.", enabled=True)


@accounts.command("disable")
@click.argument("name")
@database_options
def accounts_disable(name: str, db_path: str, as_json: bool) -> None:
    """Take account NAME out of rotation for new work (its existing videos stay reachable).

    \b
    Example:
      relayctl accounts disable main
    """
    store, _ = open_db(db_path)
    set_enabled(store, name, False)
    done(name, as_json, f"Account {name!r} is disabled.", enabled=False)


# Negative priorities are allowed, so "-1" must read as a number, not an option.
@accounts.command("priority", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("priority", type=PRIORITY)
@database_options
def accounts_priority(name: str, priority: int, db_path: str, as_json: bool) -> None:
    """Set account NAME's priority (lower numbers are used first), from -1000000 to 1000000.

    \b
    Example:
      relayctl accounts priority backup 200
    """
    store, _ = open_db(db_path)
    set_priority(store, name, priority)
    done(name, as_json, f"Account {name!r} has priority {priority}.", priority=priority)


def model_list(text: str) -> tuple[str, ...] | None:
    """`a,b` as a checked list; `none` for every model."""
    if text.strip().lower() == "none":
        return None
    try:
        return validate_models(text.split(","))
    except AccountInputError as error:
        raise click.BadParameter(str(error), param_hint="--models / MODELS") from None


@accounts.command("models")
@click.argument("name")
@click.argument("models_text", metavar="MODELS")
@database_options
def accounts_models(name: str, models_text: str, db_path: str, as_json: bool) -> None:
    """Serve only MODELS (comma-separated) on account NAME, or 'none' for every model its type carries.

    New work goes only to accounts that serve its model; a model no account serves is the
    client's 400 (model_not_found). Work on existing videos stays with their account whatever
    it serves. Running relays follow within about a second.

    \b
    Example:
      relayctl accounts models pro sora-2-pro
      relayctl accounts models main none
    """
    models = model_list(models_text)
    store, _ = open_db(db_path)
    set_models(store, name, models)
    served = ", ".join(models) if models is not None else "every model its type carries"
    done(name, as_json, f"Account {name!r} serves {served}.", models=list(models) if models is not None else None)


@accounts.command("base-api")
@click.argument("name")
@click.argument("url")
@database_options
def accounts_base_api(name: str, url: str, db_path: str, as_json: bool) -> None:
    """Point account NAME at another upstream base URL; its videos, credential and history stay.

    \b
    Example:
      relayctl accounts base-api backup https://gateway.example/v1
    """
    store, _ = open_db(db_path)
    stored = set_base_api(store, name, url)
    done(name, as_json, f"Account {name!r} now sends to {stored}.", base_api=stored)


@accounts.command("proxy")
@click.argument("name")
@click.argument("url", required=False)
@click.option("--clear", is_flag=True, help="Connect directly again.")
@database_options
def accounts_proxy(name: str, url: str | None, clear: bool, db_path: str, as_json: bool) -> None:
    """Route account NAME's upstream traffic through URL (http://, https://, socks5://), or --clear (or 'none').

    The proxy URL is stored encrypted (it may carry a password) and shown with the password
    hidden. Through an http:// proxy to an https:// upstream the request travels in a CONNECT
    tunnel, so the proxy never sees the credential.

    \b
    Example:
      relayctl accounts proxy main socks5://127.0.0.1:1080
      relayctl accounts proxy main --clear
    """
    if url is not None and not url.strip():
        # Most likely an unset shell variable: clearing the proxy is asked for by name.
        raise click.BadParameter("the proxy URL is empty: give one, or --clear (or 'none') to connect directly", param_hint="URL")
    if url is not None and url.lower() == "none":
        url, clear = None, True
    if (url is None) == (not clear):
        raise click.UsageError("give a proxy URL or --clear")
    store, box = open_db(db_path)
    set_proxy(store, box, name, None if clear else url)
    shown = redact_proxy(url) if url else None
    done(name, as_json, f"Account {name!r} now connects " + (f"through {shown}." if shown else "directly."), proxy=shown)


@accounts.command("rotate")
@click.argument("name")
@token_options
@database_options
def accounts_rotate(name: str, token: str | None, token_stdin: bool, db_path: str, as_json: bool) -> None:
    """Replace account NAME's credential; clears 'unauthorized', keeps its videos and history.

    \b
    Example:
      relayctl accounts rotate main --token-stdin < new-key.txt
    """
    credential = read_token(token, token_stdin)
    store, box = open_db(db_path)
    rotate_credential(store, box, name, credential)
    done(name, as_json, f"Account {name!r} has a new credential and is active.", state="active")


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
    done(name, as_json, f"Account {name!r} is active again.", state="active")


@accounts.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove even though it owns videos that have not expired.")
@database_options
def accounts_remove(name: str, force: bool, db_path: str, as_json: bool) -> None:
    """Remove account NAME (refused while it owns unexpired videos, unless --force).

    \b
    Example:
      relayctl accounts remove old-trial
    """
    store, _ = open_db(db_path)
    remove_account(store, name, force=force)
    done(name, as_json, f"Removed account {name!r}.", removed=True)
