"""relayctl db init: set up a database (and its folder and key file) where the relay will find it."""

from __future__ import annotations

import click

from .common import database_options, open_db, settings_for
from .output import emit_json


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
