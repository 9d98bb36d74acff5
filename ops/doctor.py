"""relayctl doctor and relayctl secrets: is this relay set up right, and its key rotation."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import click
import httpx

from relay.accounts import rotate_secret_key
from relay.config import Settings
from relay.crypto import SecretBox, SecretKeyError, generate_key, parse_keys
from relay.opening import open_store
from relay.store import SCHEMA_VERSION, Store, StoreUnavailable
from relay.upstream import base_api_problem, shown_url

from .common import database_options, json_wanted, open_db, settings_for
from .output import emit, emit_json

REACHABILITY_TIMEOUT_SECONDS = 3.0


@dataclass
class Check:
    check: str
    status: str  # ok, warn or fail
    detail: str
    fix: str = ""


def check_database(settings: Settings) -> tuple[list[Check], Store | None]:
    location = settings.database
    if location.path is not None and not location.path.exists():
        return [
            Check("database", "fail", f"{location} does not exist", "start the relay once, or pass the right --db / RELAY_DATABASE")
        ], None
    checks = []
    try:
        store = Store(location, read_only=True, busy_timeout_seconds=settings.database_busy_timeout_seconds, pool=settings.database_pool)
        integrity = store.integrity_check()
        details = store.schema_status().details
    except StoreUnavailable as error:
        problem = f"{location} is not a relay database or cannot be read ({error.reason})"
        return [Check("database", "fail", problem, "pass the right --db / RELAY_DATABASE")], None
    if location.is_sqlite:
        checks.append(
            Check(
                "database integrity", "ok" if integrity == "ok" else "fail", integrity, "" if integrity == "ok" else "restore from a backup"
            )
        )
        mode = details["journal_mode"]
        wal = mode == "wal"
        checks.append(Check("database journal", "ok" if wal else "warn", mode, "" if wal else "start the relay once to switch to WAL"))
    else:
        checks.append(Check("database", "ok", f"PostgreSQL {details['server_version']} reachable at {location}"))
    schema = store.schema_status()
    if schema.pending or schema.version != SCHEMA_VERSION:
        if schema.version is None:
            # No version recorded: an empty database, or a file that is not the relay's.
            detail, fix = (
                f"no relay tables (this release: {SCHEMA_VERSION})",
                "pass the right --db / RELAY_DATABASE, or relayctl db upgrade",
            )
        else:
            fix = "run the release that wrote it, or a newer one" if schema.version > SCHEMA_VERSION else "relayctl db upgrade"
            detail = f"{schema.version} (this release: {SCHEMA_VERSION})"
        checks.append(Check("schema version", "fail", detail, fix))
        # The other checks read tables this release's schema names: not before an upgrade.
        return checks, None
    checks.append(Check("schema version", "ok", str(schema.version)))
    return checks, store


def check_secret(db_path: str) -> tuple[list[Check], SecretBox | None]:
    """The secret key's checks, and the box it opens (None when it cannot be used)."""
    settings = settings_for(db_path)
    if settings.secret_key:
        source = "RELAY_SECRET_KEY"
    else:
        source = f"key file {settings.key_file}"
        if not settings.key_file.exists():
            missing = f"no RELAY_SECRET_KEY and no {settings.key_file}"
            return [Check("secret key", "fail", missing, "set RELAY_SECRET_KEY or restore the key file")], None
        mode = settings.key_file.stat().st_mode & 0o777
        if mode & 0o077:
            return [Check("secret key file mode", "fail", oct(mode), f"chmod 600 {settings.key_file}")], None
    try:
        store, box = open_store(settings, read_only=True)
    except SecretKeyError as error:
        return [Check("secret key", "fail", f"{source}: {error}", "use the key the database was written with")], None
    checks = [Check("secret key", "ok", f"{source} matches the database")]
    unreadable = [a.name for a in store.list_accounts() if box.decrypt_or_none(a.credential_encrypted) is None]
    if unreadable:
        checks.append(Check("credentials", "fail", f"cannot decrypt: {', '.join(unreadable)}", "relayctl accounts rotate NAME for each"))
    else:
        checks.append(Check("credentials", "ok", "every credential decrypts"))
    return checks, box


def check_accounts(store: Store, box: SecretBox | None = None) -> list[Check]:
    """Each account usable, and its base_api reachable the way the relay reaches it: through the
    account's proxy, when it has one and the secret key opens it."""
    accounts = store.list_accounts()
    now = time.time()
    if not accounts:
        return [Check("accounts", "fail", "no upstream account", "relayctl accounts add NAME --type openai-responses --token-stdin")]
    usable = [a for a in accounts if a.is_usable(now) and not base_api_problem(a.base_api)]
    checks = [
        Check(
            "accounts",
            "ok" if usable else "fail",
            f"{len(usable)} of {len(accounts)} usable now",
            "" if usable else "relayctl cooldowns, then accounts reset / rotate / enable",
        )
    ]
    with httpx.Client(timeout=REACHABILITY_TIMEOUT_SECONDS, trust_env=False) as direct:
        for account in accounts:
            if account.proxy_encrypted is None or base_api_problem(account.base_api):
                # A base_api the relay cannot send to fails first, whatever its proxy.
                checks.append(reachability(direct, account.name, account.base_api))
                continue
            proxy = box.decrypt_or_none(account.proxy_encrypted) if box is not None else None
            if proxy is None:
                checks.append(
                    Check(f"reach {account.name}", "warn", "not tried: its proxy cannot be decrypted", "see the secret key check")
                )
                continue
            try:
                via = httpx.Client(timeout=REACHABILITY_TIMEOUT_SECONDS, trust_env=False, proxy=proxy)
            except (ValueError, httpx.InvalidURL):
                shown = shown_url(proxy)
                checks.append(
                    Check(
                        f"reach {account.name}", "fail", f"its proxy {shown} cannot be used", f"relayctl accounts proxy {account.name} URL"
                    )
                )
                continue
            with via:
                checks.append(reachability(via, account.name, account.base_api, proxy=proxy))
    return checks


def reachability(client: httpx.Client, name: str, base_api: str, *, proxy: str | None = None) -> Check:
    """Any HTTP answer means the base_api is reachable; no credential is sent.

    A base_api the relay cannot send to (stored before it was checked: a password in it, a port
    out of range) fails without being tried, and is shown with any password masked.
    """
    label, shown = f"reach {name}", shown_url(base_api)
    if proxy is not None:
        shown = f"{shown} through {shown_url(proxy)}"
    problem = base_api_problem(base_api)
    if problem:
        return Check(label, "fail", f"{shown}: {problem}", f"relayctl accounts base-api {name} URL")
    try:
        response = client.get(base_api)
    except httpx.TimeoutException:
        return Check(label, "fail", f"{shown}: no answer within {REACHABILITY_TIMEOUT_SECONDS:g} s", "check the URL, DNS and firewall")
    except httpx.HTTPError as error:
        return Check(label, "fail", f"{shown}: {type(error).__name__}", "check the URL, DNS, TLS and firewall")
    return Check(label, "ok", f"{shown} answered HTTP {response.status_code}")


def check_keys(store: Store) -> list[Check]:
    now = time.time()
    active = [k for k in store.list_keys() if k.state(now) == "active"]
    if not active:
        return [Check("relay keys", "warn", "no active relay key", "relayctl keys issue NAME")]
    return [Check("relay keys", "ok", f"{len(active)} active")]


@click.command("doctor")
@database_options
def doctor(db_path: str, as_json: bool) -> None:
    """Check the database, the secret key, every account's base_api and the keys; say what to fix.

    Exits 1 when a check fails. Nothing is changed, and no credential is sent anywhere.

    \b
    Example:
      relayctl doctor
    """
    checks, store = check_database(settings_for(db_path))
    if store is not None:
        secret_checks, box = check_secret(db_path)
        checks += secret_checks
        checks += check_accounts(store, box)
        checks += check_keys(store)
    rows = [asdict(check) for check in checks]
    emit(rows, ["check", "status", "detail", "fix"], as_json=as_json, empty="")
    if any(check.status == "fail" for check in checks):
        raise SystemExit(1)


@click.group("secrets")
def secrets_group() -> None:
    """The key that encrypts upstream credentials at rest."""


@secrets_group.command("generate-key")
@click.option("--json", "as_json", is_flag=True, help='Print {"secret_key": KEY} instead of the bare key.')
def secrets_generate_key(as_json: bool) -> None:
    """Print a new random key for RELAY_SECRET_KEY.

    \b
    Example:
      export RELAY_SECRET_KEY=$(relayctl secrets generate-key)
      relayctl secrets generate-key --json
    """
    key = generate_key()
    if json_wanted(as_json):
        emit_json({"secret_key": key})
    else:
        click.echo(key)


@secrets_group.command("rotate")
@database_options
def secrets_rotate(db_path: str, as_json: bool) -> None:
    """Re-encrypt every credential under a new key while relays keep running.

    With the key file (RELAY_SECRET_KEY unset) a new key is added at the top of the file and
    running relays pick it up by themselves. With RELAY_SECRET_KEY, first set it to
    NEW,OLD on the relays and here (relayctl secrets generate-key makes NEW), then run this.

    \b
    Example:
      relayctl secrets rotate
    """
    settings = settings_for(db_path)
    store, _ = open_db(db_path)
    env_keys = parse_keys(settings.secret_key) if settings.secret_key else None
    count, endpoints = rotate_secret_key(store, env_keys=env_keys, key_file=settings.key_file)
    where = "RELAY_SECRET_KEY's first key" if env_keys else f"a new key at the top of {settings.key_file}"
    if as_json:
        emit_json({"reencrypted": count, "webhook_secrets_reencrypted": endpoints})
    else:
        webhooks = f" and {endpoints} webhook endpoint(s)' signing secrets" if endpoints else ""
        click.echo(f"Re-encrypted {count} credential(s){webhooks} under {where}.")
