"""One service layer: relayctl changes go through the relay's library functions, the account cap
reads as admission decides it, a multi-write operation is one transaction, and read-only
commands leave the database (and everything beside it) untouched."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.accounts import add_account, daily_cap_status, set_daily_cap
from relay.crypto import SecretBox, generate_key
from relay.limits import DEFAULT_SECONDS, period_bounds
from relay.store import Store, StoreBug
from tests.conftest import BIN, TOKEN, run_sql

BACKENDS = ("sqlite", "postgresql")


BOX = SecretBox([generate_key().encode()])


def claim(store: Store, reservation: str, seconds: float, cap: float, now: float) -> bool:
    return store.claim_account_capacity(
        reservation,
        key_name="k",
        account="a",
        video_seconds=seconds,
        usd=0.0,
        cap=cap,
        day_start=period_bounds("day", now)[0],
        now=now,
        expires_at=now + 600,
    )


@pytest.mark.parametrize("used", [0.0, 594.0, 597.0, 600.0])
def test_capped_says_what_admission_does(store: Store, used: float) -> None:
    """`accounts show/limits` said capped only at used >= cap, while admission refused any create
    that would go over: with 3 s left it printed capped false and every create was refused."""
    now = time.time()
    add_account(store, BOX, name="a", type="openai-responses", credential=TOKEN, base_api="http://127.0.0.1:9/v1")
    set_daily_cap(store, "a", 600)
    if used:
        assert claim(store, "res_used", used, 600, now)
    status = daily_cap_status(store, store.account("a"), now)
    admitted = claim(store, "res_probe", DEFAULT_SECONDS, 600, now)
    assert status["capped"] is (not admitted)
    assert status["video_seconds_today"] == used


def test_add_account_with_proxy_is_one_transaction(store: Store) -> None:
    """The account and its proxy were two transactions: when the second failed, the account
    stayed, sending straight to the upstream without the proxy it was given."""
    if store.dialect == "sqlite":
        for event in ("INSERT", "UPDATE OF proxy"):
            run_sql(
                store,
                f"CREATE TRIGGER no_proxy_{event.split()[0].lower()} BEFORE {event} ON accounts WHEN NEW.proxy IS NOT NULL"
                " BEGIN SELECT RAISE(ABORT, 'proxy refused'); END",
            )
    else:
        run_sql(
            store,
            "CREATE FUNCTION no_proxy() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE integrity_constraint_violation USING MESSAGE = 'proxy refused'; END $$",
        )
        run_sql(
            store,
            "CREATE TRIGGER no_proxy BEFORE INSERT OR UPDATE OF proxy ON accounts FOR EACH ROW"
            " WHEN (NEW.proxy IS NOT NULL) EXECUTE FUNCTION no_proxy()",
        )
    with pytest.raises(StoreBug, match="Integrity"):
        add_account(
            store,
            BOX,
            name="a",
            type="openai-responses",
            credential=TOKEN,
            base_api="http://127.0.0.1:9/v1",
            proxy="http://127.0.0.1:3128",
        )
    assert store.list_accounts() == []
    before = store.config_version()
    add_account(store, BOX, name="b", type="openai-responses", credential=TOKEN, base_api="http://127.0.0.1:9/v1")
    assert store.config_version() == before + 1


# -- read-only commands ---------------------------------------------------------------------------

READ_ONLY_COMMANDS = [
    ["accounts", "list"],
    ["accounts", "show", "main"],
    ["accounts", "limits", "main"],
    ["keys", "list"],
    ["keys", "show", "alice"],
    ["keys", "limits", "alice"],
    ["keys", "permissions", "alice"],
    ["cooldowns"],
    ["sessions", "list"],
    ["outcomes"],
    ["outcomes", "summary"],
    ["usage"],
    ["prices", "list"],
    ["db", "status"],
    ["doctor"],
]


def relayctl(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "relayctl"), *args], env=env, input=input, capture_output=True, text=True, timeout=60)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every file's mtime and bytes. The -shm file is SQLite's shared lock memory, which every reader
    maps and marks (mode=ro included), not database content: only its presence counts."""
    return {
        path.name: None if path.name.endswith("-shm") else (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(folder.iterdir())
    }


def set_up(folder: Path, env: dict[str, str]) -> None:
    for args, stdin in (
        (["accounts", "add", "main", "--type", "openai-responses", "--token-stdin", "--base-api", "http://127.0.0.1:9/v1"], TOKEN),
        (["keys", "issue", "alice", "--usd-per-day", "5"], None),
        (["prices", "set", "acme", "*", "0.1"], None),
    ):
        done = relayctl(env, *args, input=stdin)
        assert done.returncode == 0, done.stderr
    # A relay killed with frames still in its WAL: a writing connection closing would copy them into the file.
    script = (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " c.execute('PRAGMA wal_autocheckpoint=0');"
        " c.execute(\"INSERT INTO outcomes (ts, request_id, route, error_class, account) VALUES (1, 'r', 'create', 'none', 'main')\");"
        " os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, env["RELAY_DATABASE"]], check=True)
    assert (folder / "relay.db-wal").stat().st_size > 0


def run_all_read_only(env: dict[str, str]) -> None:
    for args in READ_ONLY_COMMANDS:
        done = relayctl(env, *args)
        # doctor fails the unreachable account; everything else succeeds.
        assert done.returncode == (1 if args == ["doctor"] else 0), (args, done.stderr)
        assert "Traceback" not in done.stderr


@pytest.fixture
def world() -> Iterator[tuple[Path, dict[str, str]]]:
    parent = Path(tempfile.mkdtemp(prefix="relay-readonly-"))
    parent.chmod(0o755)
    folder = parent / "data"
    folder.mkdir()
    env = {**os.environ, "RELAY_DATABASE": str(folder / "relay.db")}
    env.pop("RELAY_SECRET_KEY", None)
    try:
        yield folder, env
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_read_only_commands_change_nothing(world: tuple[Path, dict[str, str]]) -> None:
    folder, env = world
    set_up(folder, env)
    before = snapshot(folder)
    run_all_read_only(env)
    assert snapshot(folder) == before


def test_read_only_commands_create_no_key_file(world: tuple[Path, dict[str, str]]) -> None:
    """A database no key was ever written for (made by `db upgrade`, say): reading it makes none."""
    folder, env = world
    store = Store(folder / "relay.db")
    store.ensure_schema()
    store.close()
    before = snapshot(folder)
    for args in (["keys", "list"], ["accounts", "list"], ["prices", "list"], ["usage"], ["db", "status"]):
        done = relayctl(env, *args)
        assert done.returncode == 0, (args, done.stderr)
    after = snapshot(folder)
    # With no WAL beside it, SQLite gives a mode=ro reader an empty one and the lock memory (its
    # documented read protocol for WAL databases); nothing else appears, and the file is as it was.
    wal = after.pop("relay.db-wal", None)
    assert wal is None or wal[1] == b""
    assert {name for name in after if name not in before} <= {"relay.db-shm"}
    assert after["relay.db"] == before["relay.db"]


def test_read_only_commands_work_on_a_read_only_database(world: tuple[Path, dict[str, str]]) -> None:
    folder, env = world
    set_up(folder, env)
    for path in folder.iterdir():
        path.chmod(0o444 if path.name.startswith("relay.db") else 0o400)
    folder.chmod(0o555)
    # As root the modes bind nothing (the interpreter here is not runnable by an unprivileged
    # user); the snapshot still shows nothing was written, and mode=ro never asks to write.
    before = snapshot(folder)
    run_all_read_only(env)
    assert snapshot(folder) == before


def test_an_older_schema_is_refused_in_one_line(world: tuple[Path, dict[str, str]]) -> None:
    folder, env = world
    set_up(folder, env)
    conn = sqlite3.connect(folder / "relay.db")
    conn.execute("ALTER TABLE accounts DROP COLUMN proxy")  # as a release before proxies left it
    conn.commit()
    conn.close()
    done = relayctl(env, "accounts", "list")
    assert done.returncode == 1
    assert "relayctl db upgrade" in done.stderr and len(done.stderr.strip().splitlines()) == 1
