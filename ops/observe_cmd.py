"""relayctl cooldowns, sessions and outcomes: what the relay is doing and has done."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

import click
from click.core import ParameterSource

from relay.accounts import cooldowns, reset_account
from relay.outcomes import ERROR_CLASSES
from relay.sessions import evict_sessions
from relay.store import Store

from .common import DURATION, FiniteNumber, database_options, open_db, read_db
from .output import emit, emit_json, emit_json_line, timestamp

COOLDOWN_COLUMNS = ["account", "state", "reason", "since", "until", "seconds_left", "last_error"]
SESSION_COLUMNS = ["session", "account", "age_seconds", "expires"]
OUTCOME_COLUMNS = ["time", "request_id", "key", "account", "route", "status", "error_class", "latency_ms", "job_status"]
SUMMARY_COLUMNS = ["account", "requests", "errors", "error_classes", "p50_ms", "p95_ms"]


# -- cooldowns --------------------------------------------------------------------------------------


def cooldown_rows(store: Store) -> list[dict[str, Any]]:
    rows = []
    for cooldown in cooldowns(store, time.time()):
        row = cooldown.as_dict()
        row["since"] = timestamp(cooldown.since)
        row["until"] = timestamp(cooldown.until)
        rows.append(row)
    return rows


@click.group("cooldowns", invoke_without_command=True)
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh every --interval seconds until interrupted. With --json, one compact JSON array per refresh, one per line (JSON Lines).",
)
@click.option("--interval", type=FiniteNumber(0.01, 86400), default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--count", type=click.IntRange(1, 1_000_000), help="With --watch, stop after this many refreshes.")
@database_options
@click.pass_context
def cooldowns_group(ctx: click.Context, watch: bool, interval: float, count: int | None, db_path: str, as_json: bool) -> None:
    """Accounts not serving new work: rate-limited, unauthorized or disabled; why and until when.

    With --watch --json, each refresh prints one JSON array on a line of its own (JSON Lines),
    so a script can read the stream line by line.

    \b
    Example:
      relayctl cooldowns
      relayctl cooldowns --watch
      relayctl cooldowns --watch --json | jq -c 'map(.account)'
      relayctl cooldowns clear main
    """
    if ctx.invoked_subcommand is not None:
        return
    if not watch:
        # Without --watch there is one listing: a count or an interval would be silently ignored.
        for name in ("count", "interval"):
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name} needs --watch")
    store, _ = read_db(db_path)
    shown = 0
    try:
        while True:
            if watch and not as_json:
                click.clear()
                click.echo(f"Cooldowns at {timestamp(time.time())} (Ctrl-C to stop)\n")
            if watch and as_json:
                # Indented arrays back to back are no JSON document: one compact array per line is.
                emit_json_line(cooldown_rows(store))
            else:
                emit(cooldown_rows(store), COOLDOWN_COLUMNS, as_json=as_json, empty="All accounts are active.")
            shown += 1
            if not watch or (count is not None and shown >= count):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@cooldowns_group.command("clear")
@click.argument("name")
@database_options
def cooldowns_clear(name: str, db_path: str, as_json: bool) -> None:
    """End account NAME's cooldown now (same as `accounts reset`).

    \b
    Example:
      relayctl cooldowns clear main
    """
    store, _ = open_db(db_path)
    reset_account(store, name)
    if as_json:
        emit_json({"name": name, "state": "active"})
    else:
        click.echo(f"Account {name!r} is active again.")


# -- sessions ---------------------------------------------------------------------------------------


@click.group("sessions")
def sessions_group() -> None:
    """Sticky sessions: which session is held to which account (ids are stored hashed)."""


@sessions_group.command("list")
@click.option("--account", help="Only this account's sessions.")
@database_options
def sessions_list(account: str | None, db_path: str, as_json: bool) -> None:
    """List live session mappings (the hash's first 16 characters identify a session).

    \b
    Example:
      relayctl sessions list --account main
    """
    store, _ = read_db(db_path)
    if account is not None:
        store.account(account)  # an unknown name is an error, not an empty list
    now = time.time()
    rows = [
        {
            "session": row["session_hash"][:16],
            "account": row["account"],
            "age_seconds": round(now - row["created_at"], 1),
            "expires": timestamp(row["expires_at"]),
        }
        for row in store.list_sessions(now)
        if account is None or row["account"] == account
    ]
    emit(rows, SESSION_COLUMNS, as_json=as_json, empty="No sticky sessions.")


@sessions_group.command("evict")
@click.argument("session", required=False)
@click.option("--account", help="Evict every session held to this account.")
@click.option("--all", "evict_all", is_flag=True, help="Evict every session.")
@database_options
def sessions_evict(session: str | None, account: str | None, evict_all: bool, db_path: str, as_json: bool) -> None:
    """Drop sticky mappings: one SESSION (hash prefix from `sessions list`), an account's, or all.

    \b
    Example:
      relayctl sessions evict 3f9a2c41d0b7e6a5
      relayctl sessions evict --account main
    """
    if sum((session is not None, account is not None, evict_all)) != 1:
        raise click.UsageError("name exactly one of: SESSION, --account NAME, --all")
    if session is not None and len(session) < 8:
        raise click.UsageError("give at least 8 characters of the session hash")
    store, _ = open_db(db_path)
    if account is not None:
        store.account(account)  # an unknown name is an error, as in `sessions list`, not "Evicted 0"
    evicted = evict_sessions(store, account=account, session_prefix=session)
    if as_json:
        emit_json({"evicted": evicted})
    else:
        click.echo(f"Evicted {evicted} session(s).")


# -- outcomes ---------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per account: requests, errors by class, p50/p95 latency of the attempts."""
    by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_account[row["account"]].append(row)
    summary = []
    for account, attempts in sorted(by_account.items()):
        classes: dict[str, int] = defaultdict(int)
        for attempt in attempts:
            if attempt["error_class"] != "none":
                classes[attempt["error_class"]] += 1
        latencies = sorted(a["latency_ms"] for a in attempts if a["latency_ms"] is not None)
        summary.append(
            {
                "account": account,
                "requests": len(attempts),
                "errors": sum(classes.values()),
                "error_classes": dict(sorted(classes.items())),
                "p50_ms": percentile(latencies, 0.50),
                "p95_ms": percentile(latencies, 0.95),
            }
        )
    return summary


# The listing's filters that a summary has no use for (it takes its own --since): given before
# `summary`, they would be silently ignored.
_LISTING_ONLY = ("key_name", "since", "status", "error_class", "limit")


@click.group("outcomes", invoke_without_command=True)
@click.option("--account", help="Only this account.")
@click.option("--key", "key_name", help="Only this relay key (by name).")
@click.option("--since", type=DURATION, help="Only this recent, e.g. 15m, 1h, 7d.")
@click.option("--status", type=click.IntRange(100, 599), help="Only this upstream HTTP status, e.g. 429.")
@click.option("--error-class", type=click.Choice(ERROR_CLASSES), help="Only this error class.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@database_options
@click.pass_context
def outcomes_group(
    ctx: click.Context,
    account: str | None,
    key_name: str | None,
    since: float | None,
    status: int | None,
    error_class: str | None,
    limit: int,
    db_path: str,
    as_json: bool,
) -> None:
    """Upstream attempts, newest first: who, where, what came back, how long it took.

    \b
    Example:
      relayctl outcomes --account main --since 1h --status 429
      relayctl outcomes summary --since 24h
      relayctl outcomes --account main summary
    """
    if ctx.invoked_subcommand is not None:
        given = [
            param
            for param in ctx.command.params
            if param.name in _LISTING_ONLY and ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE
        ]
        if given:
            names = ", ".join(param.opts[0] for param in given)
            raise click.UsageError(f"only the listing takes {names}: '{ctx.invoked_subcommand}' takes --since and --account")
        ctx.meta["relayctl.outcomes.account"] = account
        return
    since_ts = time.time() - since if since else None
    store, _ = read_db(db_path)
    rows = [
        {
            "time": timestamp(row["ts"]),
            "request_id": row["request_id"],
            "key": row["key_name"],
            "account": row["account"],
            "route": row["route"],
            "status": row["upstream_status"],
            "error_class": row["error_class"],
            "latency_ms": row["latency_ms"],
            "job_status": row["job_status"],
        }
        for row in store.list_outcomes(
            limit=limit, account=account, key_name=key_name, since=since_ts, status=status, error_class=error_class
        )
    ]
    emit(rows, OUTCOME_COLUMNS, as_json=as_json, empty="No outcomes match.")


@outcomes_group.command("summary")
@click.option("--since", type=DURATION, default="24h", show_default=True, help="Window, e.g. 1h, 24h, 7d.")
@click.option("--account", help="Only this account (also taken before 'summary': relayctl outcomes --account main summary).")
@database_options
@click.pass_context
def outcomes_summary(ctx: click.Context, since: float, account: str | None, db_path: str, as_json: bool) -> None:
    """Per account: requests, error classes, p50/p95 upstream latency.

    \b
    Example:
      relayctl outcomes summary --since 24h --json
      relayctl outcomes summary --account main --since 1h
    """
    if account is None:
        account = ctx.meta.get("relayctl.outcomes.account")
    since_ts = time.time() - since
    store, _ = read_db(db_path)
    rows = [row for row in store.outcome_latencies(since=since_ts) if account is None or row["account"] == account]
    emit(summarize(rows), SUMMARY_COLUMNS, as_json=as_json, empty="No outcomes in that window.")
