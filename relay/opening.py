"""Opening the database and the secret box. Apart from the relay's running state (relay.state):
relayctl opens a database on every command, and loads none of the server's modules for it."""

from __future__ import annotations

import logging

from .config import ConfigError, Settings
from .crypto import SecretBox, generate_key, resolve_keys
from .records import SchemaTooNew, StoreUnavailable
from .store import DatabaseLocation, Store

log = logging.getLogger("relay")


def open_store(settings: Settings, *, read_only: bool = False) -> tuple[Store, SecretBox]:
    """Open the database and the secret box, failing loudly on a wrong or malformed key.

    Shared by the relay and the CLI, so both find the same key the same way. `read_only` (the
    CLI's listings and doctor) writes nothing anywhere: no file, no migration, no journal-mode
    switch, no key file, no meta row. A database whose schema is behind this release is refused
    then rather than read: an older schema may lack columns the queries name.
    """
    path = settings.database.path
    if path is not None and not path.parent.is_dir():
        # A mistyped path must not start a relay on a new, empty database that refuses every key.
        raise ConfigError(
            f"the folder {path.parent} for the database {path} does not exist: "
            f"check RELAY_DATABASE or --db, or create it with 'relayctl db init --db {path}'"
        )
    try:
        store = Store(
            settings.database,
            read_only=read_only,
            busy_timeout_seconds=settings.database_busy_timeout_seconds,
            pool=settings.database_pool,
        )
    except StoreUnavailable as error:
        raise ConfigError(f"{settings.database} cannot be opened ({error.reason})") from None
    try:
        return store, _open_box(store, settings, read_only=read_only)
    except BaseException:
        # A relay that does not start, or a command that fails, leaves no pool threads behind.
        store.close()
        raise


def _open_box(store: Store, settings: Settings, *, read_only: bool) -> SecretBox:
    try:
        if read_only:
            refuse_pending_migrations(store, settings.database)
        else:
            store.ensure_schema()
        check = store.get_meta("secret_check")
    except StoreUnavailable as error:
        if settings.database.is_sqlite:
            raise ConfigError(f"{settings.database} is not a relay database or cannot be read ({error.reason})") from None
        raise ConfigError(f"{settings.database} cannot be used: {error.reason}") from None
    except SchemaTooNew as error:
        raise ConfigError(f"{settings.database}: {error}") from None
    if read_only and check is None and settings.secret_key is None and not settings.key_file.exists():
        # Nothing was ever encrypted here, and a reader must not create the key file: a key
        # held in memory only decrypts nothing, which is all there is.
        return SecretBox([generate_key().encode()])
    # A database written under a key gets no new one: that key could never read its credentials.
    keys, created_message = resolve_keys(settings.secret_key, settings.key_file, may_create=check is None)
    if created_message:
        log.warning(created_message)
    box = SecretBox(keys)
    if check is None and not read_only:
        check = store.set_meta_if_absent("secret_check", box.check_value())
    if check is not None:
        box.verify_check_value(check)
    return box


def refuse_pending_migrations(store: Store, database: DatabaseLocation) -> None:
    """A database this release cannot read as it is: newer than it knows, or behind it."""
    status = store.schema_status()
    if status.version is not None and status.version > status.code_version:
        raise SchemaTooNew(f"the database has schema version {status.version}, newer than this release knows ({status.code_version})")
    pending = status.pending
    if pending:
        raise ConfigError(
            f"{database} needs schema migration(s) {', '.join(map(str, pending))} before this release can read it:"
            f" run 'relayctl db upgrade --db {database}' (or start the relay)"
        )
