"""relayctl db: set up a database (and its folder and key file) where the relay will find it, and
see or run its schema migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from relay.store import SchemaTooNew, Store, StoreUnavailable

from .common import database_options, open_db, settings_for
from .output import emit_json, emit_record


@click.group("db")
def db_group() -> None:
    """The relay's database file."""


@db_group.command("init")
@database_options
def db_init(db_path: str, as_json: bool) -> None:
    """Create the database, its folder (mode 0700) and, without RELAY_SECRET_KEY, its key file.

    The relay and the other commands refuse a database path whose folder is missing (a typo
    must not start an empty relay); this is how to ask for a new folder. Running it again on an
    existing database changes nothing.

    \b
    Example:
      relayctl db init --db /var/lib/video-relay/relay.db
    """
    settings = settings_for(db_path)
    folder = settings.database.parent
    created = []
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True)
        created.append(str(folder))
    existed = settings.database.exists()
    key_existed = settings.key_file.exists()
    open_db(db_path, create=True)
    if not existed:
        created.append(str(settings.database))
    if settings.secret_key is None and not key_existed:
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

    The relay runs them itself at start-up; this is for upgrading ahead of a start, or after
    restoring an old backup. Relays still running the previous release keep working on an
    upgraded database only if the release notes say so: stop them first.

    \b
    Example:
      relayctl db upgrade --db /var/lib/video-relay/relay.db
    """
    with _existing_store(db_path) as store:
        applied = store.ensure_schema()
        version = store.schema_status().version
    if as_json:
        emit_json({"database": db_path, "applied": list(applied), "version": version})
    elif applied:
        click.echo(f"Ran migration(s) {', '.join(str(step) for step in applied)}; {db_path} is at schema version {version}.")
    else:
        click.echo(f"{db_path} is at schema version {version}; nothing to do.")


@contextmanager
def _existing_store(db_path: str, *, read_only: bool = False) -> Iterator[Store]:
    """The store of a database that exists, without the secret key: migrations do not need it."""
    if not Path(db_path).is_file():
        raise click.ClickException(f"no relay database at {db_path}: check --db or RELAY_DATABASE (or create one with 'db init')")
    store = Store(db_path, read_only=read_only)
    try:
        yield store
    except StoreUnavailable as error:
        raise click.ClickException(f"{db_path} is not a relay database or cannot be read ({error.reason})") from None
    except SchemaTooNew as error:
        raise click.ClickException(f"{db_path}: {error}") from None
    finally:
        store.close()
