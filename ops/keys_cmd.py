"""relayctl keys: what users send as their bearer token."""

from __future__ import annotations

import time
from typing import Any

import click

from relay.errors import shown
from relay.keys import PERMISSIONS, IssuedKey, change_permissions, issue_key, revoke_key, rotate_key, set_limits, validate_name
from relay.limits import NO_LIMITS, PERIODS, Limits, changed_limits, holdings_summary, period_bounds, usage_summary
from relay.store import KeyRecord, Store

from .common import DURATION, database_options, open_db, read_db
from .output import emit, emit_json, emit_record, timestamp

KEY_COLUMNS = ["name", "permissions", "state", "created", "last_used", "expires", "note"]


def key_row(record: KeyRecord, now: float) -> dict[str, Any]:
    return {
        "name": record.name,
        "permissions": sorted(record.permissions),
        "state": record.state(now),
        "created": timestamp(record.created_at),
        "last_used": timestamp(record.last_used_at),
        "expires": timestamp(record.expires_at),
        "note": record.note,
    }


def show_new_key(issued: IssuedKey, *, as_json: bool, verb: str) -> None:
    record = issued.record
    if as_json:
        emit_json(
            {
                "name": record.name,
                "key": issued.key,
                "permissions": sorted(record.permissions),
                "expires": timestamp(record.expires_at),
            }
        )
        return
    click.echo(f"{verb} key {record.name!r} with permissions {', '.join(sorted(record.permissions))}.")
    if record.expires_at:
        click.echo(f"It expires at {timestamp(record.expires_at)}.")
    if record.previous_valid_until and record.previous_valid_until > time.time():
        click.echo(f"The old secret keeps working until {timestamp(record.previous_valid_until)}.")
    click.echo("Copy it now; the relay stores only a hash and cannot show it again:\n")
    click.echo(f"  {issued.key}\n")


# (option, limit field, parser): "none" clears a limit.
_LIMIT_OPTIONS = (
    ("--requests-per-minute", "requests_per_minute", int, "Requests per minute (every request counts)."),
    ("--max-concurrent-creates", "max_concurrent_creates", int, "Creates (and remixes, edits, extensions) in flight at once."),
    ("--video-seconds-per-day", "video_seconds_per_day", float, "Seconds of video per UTC day (reserved + rendered)."),
    ("--video-seconds-per-month", "video_seconds_per_month", float, "Seconds of video per UTC month."),
    ("--usd-per-day", "usd_per_day", float, "USD budget per UTC day (reserved + settled, from the price table)."),
    ("--usd-per-month", "usd_per_month", float, "USD budget per UTC month."),
    ("--models", "models", str, "Comma-separated models the key may use."),
    ("--sizes", "sizes", str, "Comma-separated sizes the key may use."),
)


def limit_options(command: Any) -> Any:
    for option, field, _, help_text in reversed(_LIMIT_OPTIONS):
        command = click.option(option, field, metavar="VALUE|none", help=help_text)(command)
    return command


def limit_changes(options: dict[str, Any]) -> dict[str, Any]:
    """The limit options given on the command line, parsed; `none` clears one."""
    changes: dict[str, Any] = {}
    for option, field, kind, _ in _LIMIT_OPTIONS:
        raw = options.pop(field)
        if raw is None:
            continue
        if raw.strip().lower() == "none":
            changes[field] = None
        elif kind is str:
            changes[field] = tuple(part.strip() for part in raw.split(",") if part.strip())
        else:
            try:
                # -0 passes a ">= 0" check and would be stored and shown as "-0"; it is falsy, so
                # `or` makes it the 0 that was meant.
                changes[field] = kind(raw) or kind(0)
            except ValueError:
                raise click.BadParameter(f"{shown(raw)!r} is not a number (or 'none')", param_hint=option) from None
    return changes


def limits_record(store: Store, record: KeyRecord, now: float) -> dict[str, Any]:
    limits = Limits.from_json(record.limits_json)
    usage = {period: store.key_usage(record.name, since=period_bounds(period, now)[0], now=now) for period in PERIODS}
    return {"name": record.name, **limits.as_dict(), **usage_summary(limits, usage)}


def held_record(store: Store, name: str, now: float, *, as_json: bool) -> dict[str, Any]:
    """What the key's creates in flight hold, since when, and which relay process holds it."""
    held = holdings_summary(store.key_holdings(name, now))
    since = held["held_since"]
    processes = [{**process, "since": timestamp(process["since"])} for process in held["held_by"]]
    return {
        "held_video_seconds": held["held_video_seconds"],
        "held_usd": held["held_usd"],
        "held_since": timestamp(since),
        "held_for_seconds": round(max(0.0, now - since), 1) if since is not None else None,
        "held_by": processes if as_json else "; ".join(_held_line(process) for process in processes),
    }


def _held_line(process: dict[str, Any]) -> str:
    if process["process"] is None:
        who = "no owner (an older relay's; counts until it expires)"
    elif process["pid"] is None:
        who = f"{process['process']} (gone, not counted)"
    else:
        liveness = "alive" if process["alive"] else "gone, not counted"
        who = f"{process['process']} ({process['hostname']} pid {process['pid']}, {liveness})"
    ahead = f", {process['blocks']} budget block(s)" if process["blocks"] else ""
    return f"{who}: {process['creates']} create(s){ahead}, {process['video_seconds']:g} s, ${process['usd']:.2f} since {process['since']}"


@click.group()
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
@click.option("--expires-in", type=DURATION, help="Expire the key after this long, e.g. 30d, 12h, 2w.")
@click.option("--note", help="Free text for operators (who it is for), at most 500 characters.")
@limit_options
@database_options
def keys_issue(
    name: str,
    permissions: tuple[str, ...],
    expires_in: float | None,
    note: str | None,
    db_path: str,
    as_json: bool,
    **options: Any,
) -> None:
    """Issue a new key named NAME and print it once: it cannot be shown again.

    Limits can be set here or later with 'relayctl keys limits'.

    \b
    Example:
      relayctl keys issue alice --permission openai --expires-in 30d --note "Alice's render farm"
      relayctl keys issue bob --usd-per-month 200 --requests-per-minute 60 --models sora-2
    """
    expires_at = time.time() + expires_in if expires_in else None
    changes = limit_changes(options)
    # Checked before the database is opened: a refused key must not leave a new database behind.
    validate_name(name)
    changed_limits(NO_LIMITS, changes)
    store, _ = open_db(db_path, create=True)
    issued = issue_key(store, name, permissions or ("openai",), expires_at=expires_at, note=note, limits=changes)
    show_new_key(issued, as_json=as_json, verb="Issued")


@keys.command("list")
@database_options
def keys_list(db_path: str, as_json: bool) -> None:
    """List keys (never their secrets).

    \b
    Example:
      relayctl keys list --json
    """
    store, _ = read_db(db_path)
    now = time.time()
    emit([key_row(k, now) for k in store.list_keys()], KEY_COLUMNS, as_json=as_json, empty="No keys.")


@keys.command("show")
@click.argument("name")
@database_options
def keys_show(name: str, db_path: str, as_json: bool) -> None:
    """Everything about key NAME except its secret.

    \b
    Example:
      relayctl keys show alice
    """
    store, _ = read_db(db_path)
    record = store.key_by_name(name)
    row = key_row(record, time.time())
    row["revoked"] = timestamp(record.revoked_at)
    row["rotated"] = timestamp(record.rotated_at)
    row["old_secret_valid_until"] = timestamp(record.previous_valid_until)
    row.update({k: v for k, v in limits_record(store, record, time.time()).items() if k != "name"})
    emit_record(row, as_json=as_json)


@keys.command("limits")
@click.argument("name")
@limit_options
@database_options
def keys_limits(name: str, db_path: str, as_json: bool, **options: Any) -> None:
    """Show or change key NAME's limits; 'none' clears one. Relays enforce changes within a second.

    Over a limit the relay answers 429 (code relay_rate_limited, relay_concurrency_limited,
    relay_video_seconds_exceeded or relay_budget_exceeded) with Retry-After; a model or size
    outside the allow-lists gets 403. Days and months are UTC.

    Creates in flight hold a slot and their reserved seconds and USD until the upstream
    answers; held_by says which relay process holds them and since when. A process that dies
    frees its holdings when its lease lapses (RELAY_HOLDER_LEASE_SECONDS, 10 s), sooner when
    a relay starts or runs on its machine.

    \b
    Example:
      relayctl keys limits alice --usd-per-day 20 --usd-per-month 300 --max-concurrent-creates 2
      relayctl keys limits alice --models sora-2,sora-2-pro --sizes none
      relayctl keys limits alice --json
    """
    changes = limit_changes(options)
    store, _ = open_db(db_path) if changes else read_db(db_path)
    if changes:
        set_limits(store, name, changes)
    now = time.time()
    record = limits_record(store, store.key_by_name(name), now)
    emit_record({**record, **held_record(store, name, now, as_json=as_json)}, as_json=as_json)


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
    already = revoke_key(store, name)
    if as_json:
        emit_json({"name": name, "state": "revoked"})
    elif already is not None:
        click.echo(f"Key {name!r} was already revoked at {timestamp(already)}.")
    else:
        click.echo(f"Revoked key {name!r}.")


@keys.command("rotate")
@click.argument("name")
@click.option("--grace", type=DURATION, help="Keep the old secret working this long, e.g. 1h (default: it stops at once).")
@database_options
def keys_rotate(name: str, grace: float | None, db_path: str, as_json: bool) -> None:
    """Give key NAME a new secret, shown once; name, permissions and videos stay.

    \b
    Example:
      relayctl keys rotate alice --grace 1h
    """
    store, _ = open_db(db_path)
    show_new_key(rotate_key(store, name, grace_seconds=grace or 0.0), as_json=as_json, verb="Rotated")


@keys.command("permissions")
@click.argument("name")
@click.option("--add", "added", multiple=True, type=click.Choice(PERMISSIONS), help="Grant a service.")
@click.option("--remove", "removed", multiple=True, type=click.Choice(PERMISSIONS), help="Take a service away.")
@database_options
def keys_permissions(name: str, added: tuple[str, ...], removed: tuple[str, ...], db_path: str, as_json: bool) -> None:
    """Change or show the services key NAME may use.

    \b
    Example:
      relayctl keys permissions alice --add all --remove openai
    """
    store, _ = open_db(db_path) if added or removed else read_db(db_path)
    record = change_permissions(store, name, add=added, remove=removed) if added or removed else store.key_by_name(name)
    if as_json:
        emit_json({"name": name, "permissions": sorted(record.permissions)})
    else:
        click.echo(f"Key {name!r} has permissions: {', '.join(sorted(record.permissions))}.")
