"""relayctl db: set up a database (and its folder and key file) where the relay will find it, see
or run its schema migrations, prune old rows, and copy it to another database (SQLite to PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from relay.opening import refuse_pending_migrations
from relay.store import LocationError, SchemaTooNew, Store, StoreBug, StoreUnavailable, parse_location
from relay.store.copy import CopyMismatch, TargetNotEmpty, copy_database
from relay.store.retention import DAY_SECONDS, MIN_KEEP_DAYS, RetentionPolicy, count_prunable, prune

from .common import DURATION, check_folder, database_options, open_db, relay_database_exists, settings_for
from .output import emit_json, emit_record, emit_table


@click.group("db")
def db_group() -> None:
    """The relay's database: set it up, upgrade its schema, copy it to PostgreSQL."""


@db_group.command("init")
@database_options
def db_init(db_path: str, as_json: bool) -> None:
    """Create the database (SQLite: its folder, mode 0700, too), its schema and, without RELAY_SECRET_KEY, the key file.

    The relay and the other commands refuse a SQLite path whose folder is missing (a typo must
    not start an empty relay); this is how to ask for a new folder. A PostgreSQL database is
    created by its server's administrator (createdb); this command gives it the relay's tables.
    Running it again changes nothing.

    \b
    Examples:
      relayctl db init --db /var/lib/video-relay/relay.db
      relayctl db init --db postgresql://relay@db.internal:5432/relay
    """
    settings = settings_for(db_path)
    path = settings.database.path
    created = []
    check_folder(path)
    if path is not None and not path.parent.is_dir():
        try:
            path.parent.mkdir(mode=0o700, parents=True)
        except OSError as error:
            raise click.ClickException(f"cannot create the folder {path.parent} ({error.strerror}): check --db or RELAY_DATABASE") from None
        created.append(str(path.parent))
    existed = relay_database_exists(settings)
    key_existed = settings.key_file.exists()
    store, _ = open_db(db_path, create=True)
    store.close()
    if not existed:
        created.append(str(path) if path is not None else f"the relay's tables in {settings.database}")
    if settings.secret_key is None and not key_existed and settings.key_file.exists():
        created.append(str(settings.key_file))
    if as_json:
        emit_json({"database": str(settings.database), "created": created})
    elif created:
        click.echo("Created " + ", ".join(created) + ".")
    else:
        click.echo(f"{settings.database} is already set up; nothing changed.")


@db_group.command("status")
@database_options
def db_status(db_path: str, as_json: bool) -> None:
    """The database's schema version against this release's, and the migrations an upgrade would run.

    Changes nothing. A database newer than this release shows no pending steps: the relay and
    'db upgrade' refuse it.

    \b
    Example:
      relayctl db status --db /var/lib/video-relay/relay.db
    """
    with _existing_store(db_path, read_only=True) as store:
        status = store.schema_status()
    if as_json:
        emit_json(status.as_dict())
        return
    emit_record({**status.as_dict(), "pending": ", ".join(str(step) for step in status.pending) or "none"}, as_json=False)


@db_group.command("upgrade")
@database_options
def db_upgrade(db_path: str, as_json: bool) -> None:
    """Run the schema migrations the database has not had yet; running it again changes nothing.

    The relay runs them itself at start-up (replicas starting together take turns); this is for
    upgrading ahead of a start, or after restoring an old backup. Relays still running the
    previous release keep working on an upgraded database only if the release notes say so:
    stop them first.

    \b
    Example:
      relayctl db upgrade --db /var/lib/video-relay/relay.db
    """
    with _existing_store(db_path) as store:
        applied = store.ensure_schema()
        version = store.schema_status().version
    shown = store.location.shown
    if as_json:
        emit_json({"database": shown, "applied": list(applied), "version": version})
    elif applied:
        click.echo(f"Ran migration(s) {', '.join(str(step) for step in applied)}; {shown} is at schema version {version}.")
    else:
        click.echo(f"{shown} is at schema version {version}; nothing to do.")


@db_group.command("copy")
@click.option("--to", "target", required=True, help="The database to copy into: a postgresql:// URL (or a SQLite path).")
@click.option("--force", is_flag=True, help="Copy even though the target holds relay data already (it is replaced).")
@database_options
def db_copy(target: str, force: bool, db_path: str, as_json: bool) -> None:
    """Copy every table of the database (--db) into another, and check the row counts match.

    For moving a SQLite relay onto PostgreSQL: keys, accounts (credentials stay encrypted under
    the same secret key: give the new relays that key), sessions, videos, usage, reservations,
    prices and outcomes. The target gets this release's schema first; one that holds relay data
    already is refused unless --force. Stop the relays writing to the source first: rows they
    write during the copy would be left behind.

    \b
    Example:
      relayctl db copy --db /var/lib/video-relay/relay.db --to postgresql://relay@db.internal/relay
    """
    try:
        destination = parse_location(target)
    except LocationError as error:
        raise click.BadParameter(str(error), param_hint="--to") from None
    check_folder(destination.path, hint="check --to")
    if destination.path is not None and not destination.path.parent.is_dir():
        # Not 'db init' for it: that would put a new key file beside the copy, one that cannot
        # read the credentials copied under the source's key.
        folder = destination.path.parent
        raise click.ClickException(
            f"the folder {folder} for the database {destination.path} does not exist: check --to, or create the folder first"
        )
    with _existing_store(db_path, read_only=True) as source:
        if source.schema_status().pending:
            raise click.ClickException(f"{source.location} needs 'relayctl db upgrade' before it can be copied")
        try:
            copied = copy_database(source, destination, replace=force, pool=settings_for(db_path).database_pool)
        except TargetNotEmpty as error:
            raise click.ClickException(f"{destination} holds relay data already ({error}): pass --force to replace it") from None
        except CopyMismatch as error:
            raise click.ClickException(f"the copy into {destination} does not match its source: {error}") from None
        except StoreUnavailable as error:
            # The source answered a moment ago (its schema status): it is the target that fails.
            raise click.ClickException(f"{destination} cannot be opened or written ({error.reason})") from None
        except SchemaTooNew as error:
            raise click.ClickException(f"{destination}: {error}") from None
        except OSError as error:
            # A SQLite target the system will not let us create (permissions, a read-only disk).
            raise click.ClickException(f"{destination} cannot be created ({error.strerror})") from None
        except StoreBug as error:
            # A row the target's column types refuse (an older version stored something odd):
            # nothing was written, the copy being one transaction.
            raise click.ClickException(f"the copy into {destination} failed on a row it cannot take ({error}); none copied") from None
    if as_json:
        emit_json({"from": source.location.shown, "to": destination.shown, "rows": copied})
        return
    emit_table([{"table": table, "rows": rows} for table, rows in copied.items()], ["table", "rows"], empty="no tables")
    click.echo(f"Copied {sum(copied.values())} rows from {source.location} to {destination}; every table's count matches.")


def _keep_days(context: click.Context, parameter: click.Parameter, seconds: float | None) -> float | None:
    """A window given as a duration (90d, 12w), in the days RetentionPolicy counts."""
    if seconds is None:
        return None
    if seconds < MIN_KEEP_DAYS * DAY_SECONDS:
        raise click.BadParameter(f"must be at least {MIN_KEEP_DAYS:g}d (one day), like 90d or 12w")
    return seconds / DAY_SECONDS


@db_group.command("prune")
@click.option(
    "--outcomes-older-than",
    "outcomes_days",
    type=DURATION,
    callback=_keep_days,
    metavar="DURATION",
    help="Delete outcomes older than this, e.g. 90d or 12w, at least 1d (default: $RELAY_KEEP_OUTCOMES_DAYS days, else keep them).",
)
@click.option(
    "--deliveries-older-than",
    "deliveries_days",
    type=DURATION,
    callback=_keep_days,
    metavar="DURATION",
    help="Delete finished webhook deliveries (and their attempts) older than this, e.g. 30d, at least 1d"
    " (default: $RELAY_KEEP_WEBHOOK_DELIVERIES_DAYS days, else keep them). Pending ones are never deleted.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@database_options
def db_prune(outcomes_days: float | None, deliveries_days: float | None, dry_run: bool, db_path: str, as_json: bool) -> None:
    """Delete rows nobody will read again, and history older than the windows given.

    Always: expired sticky sessions, expired Idempotency-Key answers, and request-log rows a day
    old. With a window (a duration like 90d, 12w or 2160h; at least a day): outcomes, and
    finished webhook deliveries. Jobs are never deleted. The relay does the same every hour by
    itself (RELAY_PRUNE_INTERVAL_SECONDS) with the windows of its environment; this is for a
    first clean-up, or a database no relay runs on. It deletes in batches of 250 rows, so relays
    running on the database wait for one batch at most. A database whose schema is behind this
    release is refused: run 'relayctl db upgrade' first.

    \b
    Examples:
      relayctl db prune --outcomes-older-than 90d --deliveries-older-than 30d --dry-run
      relayctl db prune --outcomes-older-than 90d --deliveries-older-than 30d
    """
    kept = settings_for(db_path).retention
    policy = RetentionPolicy(
        outcomes_days=kept.outcomes_days if outcomes_days is None else outcomes_days,
        webhook_deliveries_days=kept.webhook_deliveries_days if deliveries_days is None else deliveries_days,
    )
    # Checked read-only first: opening for writing would switch a SQLite file that is not the
    # relay's (or is behind this release) to WAL before it is refused.
    with _existing_store(db_path, read_only=True) as store:
        refuse_pending_migrations(store, store.location)
    with _existing_store(db_path, read_only=dry_run) as store:
        now = time.time()
        counts = count_prunable(store, policy, now) if dry_run else prune(store, policy, now)
    column = "would_delete" if dry_run else "deleted"
    rows = [{"table": table, column: count} for table, count in counts.items()]
    if as_json:
        emit_json(rows)
        return
    emit_table(rows, ("table", column), empty="Nothing to prune.")
    windows = (("outcomes", policy.outcomes_days), ("webhook deliveries", policy.webhook_deliveries_days))
    kept_for_good = [name for name, days in windows if days is None]
    if kept_for_good:
        click.echo(f"Kept for good (no window given): {' and '.join(kept_for_good)}.")


@contextmanager
def _existing_store(db_path: str, *, read_only: bool = False) -> Iterator[Store]:
    """The store of a database that exists, without the secret key: migrations do not need it."""
    settings = settings_for(db_path)
    location = settings.database
    if location.path is not None and not location.path.is_file():
        raise click.ClickException(f"no relay database at {location}: check --db or RELAY_DATABASE (or create one with 'db init')")
    try:
        store = Store(
            location, read_only=read_only, busy_timeout_seconds=settings.database_busy_timeout_seconds, pool=settings.database_pool
        )
    except StoreUnavailable as error:
        raise click.ClickException(f"{location} cannot be opened ({error.reason})") from None
    try:
        yield store
    except StoreUnavailable as error:
        raise click.ClickException(f"{location} is not a relay database or cannot be read ({error.reason})") from None
    except SchemaTooNew as error:
        raise click.ClickException(f"{location}: {error}") from None
    finally:
        store.close()
