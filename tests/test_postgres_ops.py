"""Operating the relay on PostgreSQL with relayctl (issue 13): moving a SQLite relay over with
`relayctl db copy`, the everyday commands on a postgresql:// URL (given as --db or as
RELAY_DATABASE), the forms RELAY_DATABASE takes, and the database password shown nowhere: not in
any command's output or error, not in doctor, not in a relay's log, not in /metrics."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import psycopg
import pytest
from click.testing import CliRunner, Result
from conftest import BIN, ROOT, Sandbox, free_port, run_sql, stop, wait_until_serving
from postgres_cluster import Cluster, connect
from starlette.datastructures import Headers
from test_store_migrations import load_fixture

from ops.cli import main as relayctl
from relay.accounts import add_account, remove_account, set_daily_cap
from relay.config import ConfigError, Settings, load_settings
from relay.crypto import generate_key
from relay.holders import Holder
from relay.keys import KeyCache, authenticate, issue_key, rotate_key
from relay.records import WebhookEndpoint
from relay.state import open_store
from relay.store import AccountQuota, KeyRecord, Outcome, Store, Video
from relay.store.location import parse_location
from relay.store.postgres import PostgresBackend
from relay.store.schema import SCHEMA_VERSION, TABLE_NAMES
from relay.webhooks.signing import new_secret, secret_hint

# A relay or relayctl that gets no database connection gives up after the pool timeout: the
# default 5 s would only make these tests slow.
POOL_TIMEOUT = {"RELAY_DATABASE_POOL_TIMEOUT_SECONDS": "1"}
# A password no output may ever show, for URLs that never reach a server.
FAKE_PASSWORD = "Fake-Pw-never-SHOWN-41c9"
TERMS_WARNING = "may breach that provider's terms of use"


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}"))


def with_password(url: str, cluster: Cluster, password: str) -> str:
    return url.replace(f":{cluster.password}@", f":{password}@", 1)


def never_shown(text: str, *passwords: str) -> None:
    for password in passwords:
        assert password not in text, f"the password shows in:\n{text}"


@pytest.fixture
def relayctl_runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """relayctl in-process with an environment of its own; every PostgreSQL pool a command opened
    is closed after it, as the end of a real relayctl process would (commands do not close their
    store: the process ends), so that no test leaves connections behind on the shared cluster."""
    opened: list[PostgresBackend] = []
    original_init = PostgresBackend.__init__

    def recording_init(self: PostgresBackend, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(PostgresBackend, "__init__", recording_init)
    runner = CliRunner()

    def run(*args: str, env: dict[str, str], code: int = 0, input: str | None = None) -> Result:
        # CliRunner lays `env` over os.environ: unset the RELAY_ settings `env` does not give.
        overlay: dict[str, str | None] = {**{name: None for name in os.environ if name.startswith("RELAY_")}, **env}
        opened.clear()
        try:
            result = runner.invoke(relayctl, list(args), env=overlay, input=input, catch_exceptions=False)
        finally:
            for backend in opened:
                backend.close()
        assert result.exit_code == code, result.output
        return result

    yield run


def relayctl_process(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """relayctl as an operator types it: its own process, stdout and stderr as the terminal shows them."""
    return subprocess.run([str(BIN / "relayctl"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def clean_env(**values: str) -> dict[str, str]:
    """os.environ without any RELAY_ setting of the caller's, plus `values`."""
    return {**{name: value for name, value in os.environ.items() if not name.startswith("RELAY_")}, **values}


# -- a SQLite relay with rows in every table ---------------------------------------------------------


@dataclass
class Populated:
    path: Path
    secret_key: str
    keys: dict[str, str]  # name -> the relay key as issued
    credentials: dict[str, str]  # account -> its upstream credential
    proxies: dict[str, str]  # account -> its proxy URL
    account_ids: set[int]
    outcome_ids: set[int]


# Bytes no text encoding survives: a NUL, invalid UTF-8, every byte value.
BINARY_BODY = b'{"id": "video_one"}\x00\xff\xfe' + bytes(range(256))


def populate(path: Path) -> Populated:
    """Every table gets rows, through the relay's own functions, as a running relay writes them."""
    secret_key = generate_key()
    now = time.time()
    store, box = open_store(Settings(database=parse_location(path), secret_key=secret_key))
    try:
        alice = issue_key(store, "alice", ["openai"], note="copied", now=now - 500, limits={"video_seconds_per_day": 500})
        issue_key(store, "bob", ["all"], now=now - 400)
        bob = rotate_key(store, "bob", grace_seconds=3600, now=now - 300)
        credentials = {"acct-one": "sk-copy-one-0123456789", "acct-gone": "sk-copy-gone-0123456789", "acct-two": "sk-copy-two-0123456789"}
        proxies = {"acct-two": "http://user:proxy-pw@proxy.example:3128"}
        add_account(store, box, name="acct-one", type="openai", credential=credentials["acct-one"], now=now - 900)
        # Removed: the ids left have a gap, and the highest is not the count.
        add_account(store, box, name="acct-gone", type="openai-responses", credential=credentials["acct-gone"], now=now - 850)
        add_account(
            store,
            box,
            name="acct-two",
            type="openai-responses",
            credential=credentials["acct-two"],
            proxy=proxies["acct-two"],
            priority=50,
            now=now - 800,
        )
        remove_account(store, "acct-gone", now=now - 700)
        del credentials["acct-gone"]
        set_daily_cap(store, "acct-two", 600.5)
        store.set_account_state("acct-two", "rate_limited", now=now - 10, reason="429", until=now + 50, last_error="slow down")
        store.claim_session("a" * 64, "acct-one", replacing=None, now=now - 5, ttl=3600)
        store.insert_video(
            Video(
                id="video_one",
                account="acct-one",
                key_name="alice",
                kind="create",
                source_video_id=None,
                model="sora-2",
                seconds="8",
                billable_seconds=8.0,
                size="1280x720",
                status="queued",
                progress=0,
                created_at=now - 100,
                recorded_at=now - 99,
                finished_at=None,
                deleted_at=None,
                resource='{"id": "video_one", "object": "video"}',
                usd=0.8,
                charge_state="reserved",
                charged_at=now - 100,
            )
        )
        # alice hears of video_one's completion: the outbox row is written as the job settles.
        secret = new_secret()
        store.create_webhook_endpoint(
            WebhookEndpoint(
                "we_" + "1" * 32,
                "alice",
                "hook",
                "https://hooks.example/in",
                ("video.completed",),
                box.encrypt(secret),
                secret_hint(secret),
                None,
                None,
                now - 30,
                now - 30,
                None,
                None,
                None,
            )
        )
        store.update_video(
            "video_one",
            status="completed",
            progress=100,
            expires_at=now + 86400,
            resource='{"id": "video_one", "status": "completed"}',
            now=now - 20,
        )
        ((delivery, _),) = store.claim_due_deliveries("worker", now=now - 18, lease_seconds=30, limit=1)
        store.record_delivery_attempt(
            delivery.id, "worker", status=204, error=None, delivered=True, next_attempt_at=None, latency_seconds=0.1, now=now - 18
        )
        store.insert_video(
            Video(
                id="video_two",
                account="acct-two",
                key_name="bob",
                kind="remix",
                source_video_id="video_one",
                model="sora-2",
                seconds="4",
                billable_seconds=4.0,
                size="720x1280",
                status="in_progress",
                progress=40,
                created_at=now - 50,
                recorded_at=now - 49,
                finished_at=None,
                deleted_at=None,
                resource="{}",
                usd=0.1 + 0.2,
                charge_state="reserved",
                charged_at=now - 50,
            )
        )
        store.insert_character("char_one", account="acct-one", key_name="alice", now=now - 30)
        holder = Holder(owner="copyowner0000001", host="h", hostname="copy-host", pid=4242, process_started="99")
        store.renew_holder(holder, now=now, lease=10.0, exited=lambda row: False)
        store.reserve(
            "res-1",
            key_name="alice",
            video_seconds=8.0,
            usd=0.8,
            now=now,
            expires_at=now + 600,
            periods=(),
            refuse=lambda current, by_period: None,
            owner=holder.owner,
        )
        for offset in (3, 2, 1):
            store.take_request_slots("alice", now=now - offset, limit=10, window=60)
        store.set_prices([("sora-2", "1280x720", 0.1), ("sora-2-pro", "1792x1024", 1 / 3)], now=now - 600)
        store.write_batch(
            [
                Outcome(
                    ts=now - 20,
                    request_id="req-1",
                    key_name="alice",
                    account="acct-one",
                    account_type="openai",
                    route="videos.create",
                    upstream_status=200,
                    error_class="none",
                    latency_ms=120.5,
                ),
                Outcome(
                    ts=now - 10,
                    request_id="req-2",
                    key_name="bob",
                    account="acct-two",
                    account_type="openai-responses",
                    route="videos.retrieve",
                    upstream_status=429,
                    error_class="rate_limited",
                    latency_ms=30.0,
                    job_status=None,
                ),
            ],
            {alice.record.id: now - 20},
            {"acct-one": now - 20},
            {"a" * 64: (now - 4, now + 3600)},
            [AccountQuota(account="acct-one", observed_at=now - 20, limit_requests=100, remaining_requests=99, resets_at=now + 40)],
        )
        store.claim_idempotency("alice", "idem-1", "hash-1", now=now - 15, ttl=86400, stale_after=60)
        store.finish_idempotency("alice", "idem-1", status=200, content_type="application/json", body=BINARY_BODY)
        account_ids = {account.id for account in store.list_accounts()}
        outcome_ids = {row[0] for row in run_sql(store, "SELECT id FROM outcomes")}
    finally:
        store.close()
    return Populated(path, secret_key, {"alice": alice.key, "bob": bob.key}, credentials, proxies, account_ids, outcome_ids)


def authenticated(store: Store, key: str) -> KeyRecord:
    """The relay's own check of a presented key (relay.keys.authenticate), on this store."""
    headers = Headers({"authorization": f"Bearer {key}"})
    return anyio.run(functools.partial(authenticate, headers, KeyCache(store), service="openai", now=time.time()))


def table_rows(location: str | Path) -> dict[str, set[tuple[tuple[str, Any], ...]]]:
    """Every table's rows as sets of (column, value) pairs. PostgreSQL's own row_id of request_log
    (SQLite's is the hidden rowid) is the target's to number, not copied: left out."""
    store = Store(parse_location(location), read_only=True)
    try:
        tables = {}
        for table in TABLE_NAMES:
            rows = run_sql(store, f"SELECT * FROM {table}")
            # Rows iterate over their values: the names are keys().
            named = ({name: row[name] for name in row.keys() if name != "row_id"} for row in rows)  # noqa: SIM118
            tables[table] = {tuple(sorted(values.items())) for values in named}
        return tables
    finally:
        store.close()


def columns_of(rows: set[tuple[tuple[str, Any], ...]]) -> set[str]:
    return {name for row in rows for name, _ in row}


@pytest.fixture
def populated(tmp_path: Path) -> Populated:
    return populate(tmp_path / "relay.db")


def public_tables(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert row is not None
    return int(row[0])


# -- relayctl db copy ------------------------------------------------------------------------------


def test_db_copy_moves_every_row_of_every_table_and_the_relay_works_on_the_copy(
    populated: Populated, postgres_database_url: str, postgres_cluster: Cluster, relayctl_runner: Any
) -> None:
    url, password = postgres_database_url, postgres_cluster.password
    env = clean_env(RELAY_SECRET_KEY=populated.secret_key)
    source = table_rows(populated.path)
    assert all(source[table] for table in TABLE_NAMES), [table for table in TABLE_NAMES if not source[table]]
    assert {"secret_check", "schema_version", "config_version"} <= {dict(row)["key"] for row in source["meta"]}

    copied = relayctl_runner("db", "copy", "--db", str(populated.path), "--to", url, "--json", env=env)
    never_shown(copied.output, password)
    answer = json.loads(copied.output)
    assert answer == {
        "from": str(populated.path),
        "to": str(parse_location(url)),
        "rows": {table: len(source[table]) for table in TABLE_NAMES},
    }
    assert answer["to"].startswith("postgresql://relay:***@127.0.0.1:")

    target = table_rows(url)
    for table in TABLE_NAMES:
        assert columns_of(target[table]) == columns_of(source[table]), table
        assert target[table] == source[table], table
    (stored,) = target["idempotency"]
    body = dict(stored)["body"]
    assert type(body) is bytes and body == BINARY_BODY

    # The relay's own start-up on the copy: the same key decrypts, the keys authenticate.
    store, box = open_store(Settings(database=parse_location(url), secret_key=populated.secret_key))
    try:
        for account in store.list_accounts():
            assert box.decrypt(account.credential_encrypted) == populated.credentials[account.name]
            expected_proxy = populated.proxies.get(account.name)
            assert (box.decrypt(account.proxy_encrypted) if account.proxy_encrypted else None) == expected_proxy
        for name, key in populated.keys.items():
            record = authenticated(store, key)
            assert record.name == name
        # PostgreSQL numbers new rows past the copied ones: the identity counters moved.
        added = add_account(store, box, name="acct-new", type="openai-responses", credential="sk-new-0123456789")
        assert added.id > max(populated.account_ids)
        store.write_batch(
            [
                Outcome(
                    ts=time.time(),
                    request_id="req-new",
                    key_name="alice",
                    account="acct-new",
                    account_type="openai-responses",
                    route="videos.list",
                    upstream_status=200,
                    error_class="none",
                    latency_ms=1.0,
                )
            ],
            {},
            {},
            {},
            [],
        )
        outcome_ids = {row[0] for row in run_sql(store, "SELECT id FROM outcomes")}
        assert populated.outcome_ids < outcome_ids and min(outcome_ids - populated.outcome_ids) > max(populated.outcome_ids)
        store.take_request_slots("alice", now=time.time(), limit=10, window=60)
    finally:
        store.close()


def test_db_copy_lists_each_table_refuses_a_non_empty_target_and_force_replaces_it(
    populated: Populated, postgres_database_url: str, postgres_cluster: Cluster, relayctl_runner: Any
) -> None:
    url, password = postgres_database_url, postgres_cluster.password
    env = clean_env(RELAY_SECRET_KEY=populated.secret_key)
    source = table_rows(populated.path)

    copied = relayctl_runner("db", "copy", "--db", str(populated.path), "--to", url, env=env)
    never_shown(copied.output, password)
    for table in TABLE_NAMES:
        assert re.search(rf"^{table}\s+{len(source[table])}\s*$", copied.output, re.MULTILINE), (table, copied.output)
    total = sum(len(rows) for rows in source.values())
    assert copied.output.rstrip().splitlines()[-1] == (
        f"Copied {total} rows from {populated.path} to {parse_location(url)}; every table's count matches."
    )
    first = table_rows(url)

    # The source moves on; a second copy must not touch the target at all.
    store, _ = open_store(Settings(database=parse_location(populated.path), secret_key=populated.secret_key))
    issue_key(store, "carol", ["openai"])
    store.close()
    refused = relayctl_runner("db", "copy", "--db", str(populated.path), "--to", url, env=env, code=1)
    never_shown(refused.output, password)
    assert refused.output.count("\n") == 1, refused.output
    assert refused.output.startswith(f"Error: {parse_location(url)} holds relay data already (")
    assert refused.output.rstrip().endswith("pass --force to replace it")
    assert table_rows(url) == first

    forced = relayctl_runner("db", "copy", "--db", str(populated.path), "--to", url, "--force", "--json", env=env)
    never_shown(forced.output, password)
    assert json.loads(forced.output)["rows"]["keys"] == len(source["keys"]) + 1
    assert table_rows(url) == table_rows(populated.path)


def test_db_copy_of_a_database_behind_the_schema_asks_for_db_upgrade_first(
    tmp_path: Path, postgres_database_url: str, postgres_cluster: Cluster, relayctl_runner: Any
) -> None:
    url = postgres_database_url
    path = tmp_path / "old.db"
    load_fixture(path, "ALTER TABLE keys DROP COLUMN limits")
    env = clean_env(RELAY_SECRET_KEY=generate_key())
    refused = relayctl_runner("db", "copy", "--db", str(path), "--to", url, env=env, code=1)
    assert refused.output == f"Error: {path} needs 'relayctl db upgrade' before it can be copied\n"
    assert public_tables(url) == 0  # the target was not touched

    relayctl_runner("db", "upgrade", "--db", str(path), env=env)
    copied = json.loads(relayctl_runner("db", "copy", "--db", str(path), "--to", url, "--json", env=env).output)
    assert copied["rows"]["videos"] == 2 and copied["rows"]["keys"] == 2
    assert table_rows(url) == table_rows(path)


def test_db_copy_errors_name_the_side_at_fault_without_its_password(
    populated: Populated, postgres_database_url: str, postgres_cluster: Cluster, relayctl_runner: Any
) -> None:
    env = clean_env(RELAY_SECRET_KEY=populated.secret_key, **POOL_TIMEOUT)
    for target in (
        "postgresql://relay:" + FAKE_PASSWORD + "@127.0.0.1:notaport/relay",
        "postgres://relay:" + FAKE_PASSWORD + "@[::1/relay",
    ):
        refused = relayctl_runner("db", "copy", "--db", str(populated.path), "--to", target, env=env, code=2)
        never_shown(refused.output, FAKE_PASSWORD)
        assert "--to" in refused.output and "cannot be parsed" in refused.output

    unreachable = with_port(with_password(postgres_database_url, postgres_cluster, FAKE_PASSWORD), free_port())
    refused = relayctl_runner("db", "copy", "--db", str(populated.path), "--to", unreachable, env=env, code=1)
    never_shown(refused.output, FAKE_PASSWORD)
    # The target is at fault, not the SQLite source.
    assert refused.output == f"Error: {parse_location(unreachable)} cannot be opened or written (the database server cannot be reached)\n"


# -- relayctl's commands on PostgreSQL -------------------------------------------------------------


@pytest.mark.parametrize("given_as", ["--db", "RELAY_DATABASE"])
def test_relayctl_runs_a_relay_on_postgresql(
    given_as: str, postgres_database_url: str, postgres_cluster: Cluster, relayctl_runner: Any, sandbox: Sandbox
) -> None:
    url, password = postgres_database_url, postgres_cluster.password
    shown = str(parse_location(url))
    env = clean_env(RELAY_SECRET_KEY=generate_key())
    database: tuple[str, ...] = ("--db", url)
    if given_as == "RELAY_DATABASE":
        env["RELAY_DATABASE"], database = url, ()
    outputs = []

    def run(*args: str, code: int = 0, input: str | None = None) -> Result:
        result: Result = relayctl_runner(*args, *database, env=env, code=code, input=input)
        outputs.append(result.output)
        return result

    status = json.loads(run("db", "status", "--json").output)
    assert status["dialect"] == "postgresql" and status["version"] is None and status["pending"] == list(range(1, SCHEMA_VERSION + 1))
    assert run("db", "init").output == f"Created the relay's tables in {shown}.\n"
    assert run("db", "init").output == f"{shown} is already set up; nothing changed.\n"
    status = json.loads(run("db", "status", "--json").output)
    assert status["database"] == shown and status["dialect"] == "postgresql"
    assert status["version"] == status["code_version"] == SCHEMA_VERSION and status["pending"] == []
    assert run("db", "upgrade").output == f"{shown} is at schema version {SCHEMA_VERSION}; nothing to do.\n"

    issued = run("keys", "issue", "alice", "--permission", "openai", "--json")
    key = json.loads(issued.output)["key"]
    listed = json.loads(run("keys", "list", "--json").output)
    assert [(row["name"], row["state"], row["permissions"]) for row in listed] == [("alice", "active", ["openai"])]

    added = run(
        "accounts", "add", "main", "--type", "openai", "--token-stdin", "--base-api", sandbox.base_api(), input="tok-main-0123456789\n"
    )
    assert TERMS_WARNING in added.output and "Added account 'main' (openai," in added.output
    assert re.search(r"^main\s+openai\s+http://127\.0\.0\.1:\d+/v1\s+100\s+active", run("accounts", "list").output, re.MULTILINE)

    doctor = run("doctor")
    assert re.search(rf"^database\s+ok\s+PostgreSQL \S+.* reachable at {re.escape(shown)}", doctor.output, re.MULTILINE), doctor.output
    for check in ("schema version", "secret key", "credentials", "accounts", "reach main", "relay keys"):
        assert re.search(rf"^{check}\s+ok\s", doctor.output, re.MULTILINE), (check, doctor.output)

    # The group's own --db, before the command, as the help shows it.
    before = relayctl_runner("--db", url, "keys", "list", env={k: v for k, v in env.items() if k != "RELAY_DATABASE"})
    assert "alice" in before.output
    outputs.append(before.output)

    store = Store(parse_location(url), read_only=True)
    try:
        record = authenticated(store, key)
        assert record.name == "alice"
    finally:
        store.close()
    for output in outputs:
        never_shown(output, password)


def test_relayctl_as_an_operator_types_it_on_postgresql(
    postgres_database_url: str, postgres_cluster: Cluster, tmp_path: Path, sandbox: Sandbox
) -> None:
    env = clean_env(RELAY_DATABASE=postgres_database_url, RELAY_SECRET_KEY=generate_key())
    steps = [
        ("db", "init"),
        ("keys", "issue", "alice", "--permission", "openai"),
        ("accounts", "add", "main", "--type", "openai-responses", "--token", "sk-typed-0123456789", "--base-api", sandbox.base_api()),
        ("doctor",),
    ]
    for args in steps:
        done = relayctl_process(*args, env=env, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        never_shown(done.stdout + done.stderr, postgres_cluster.password)
    assert not list(tmp_path.iterdir())  # nothing written where the operator stands


# -- the password, shown nowhere -------------------------------------------------------------------


def one_failing_check(output: str) -> str:
    """doctor's table when the database check fails: a header, its rule and one row, nothing else."""
    lines = output.rstrip("\n").splitlines()
    assert len(lines) == 3 and lines[0].startswith("check") and set(lines[1]) <= {"-", " "}, output
    assert re.match(r"^database\s+fail\s", lines[2]), output
    return lines[2]


@pytest.mark.parametrize("fault", ["unreachable", "wrong password", "no such database"])
def test_doctor_and_db_status_on_a_database_they_cannot_use_say_one_line_without_the_password(
    fault: str, postgres_database_url: str, postgres_cluster: Cluster, tmp_path: Path
) -> None:
    if fault == "unreachable":
        url = with_port(postgres_database_url, free_port())  # nothing listens there
        reason = "cannot be reached"
    elif fault == "wrong password":
        url = with_password(postgres_database_url, postgres_cluster, FAKE_PASSWORD)
        reason = "refused the user name or password"
    else:
        url = postgres_database_url.rsplit("/", 1)[0] + "/no_such_database"
        reason = "the database does not exist"
    env = clean_env(RELAY_DATABASE=url, RELAY_SECRET_KEY=generate_key(), **POOL_TIMEOUT)
    doctor = relayctl_process("doctor", env=env, cwd=tmp_path)
    assert doctor.returncode == 1
    never_shown(doctor.stdout + doctor.stderr, FAKE_PASSWORD, postgres_cluster.password)
    assert doctor.stderr == ""
    row = one_failing_check(doctor.stdout)
    assert str(parse_location(url)) in row and reason in row, row

    status = relayctl_process("db", "status", env=env, cwd=tmp_path)
    assert status.returncode == 1 and status.stdout == ""
    never_shown(status.stderr, FAKE_PASSWORD, postgres_cluster.password)
    assert status.stderr.count("\n") == 1 and reason in status.stderr, status.stderr


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://relay:{FAKE_PASSWORD}@127.0.0.1:notaport/relay",
        f"postgres://relay:{FAKE_PASSWORD}@[::1/relay",
        f"postgresql://relay:{FAKE_PASSWORD}@127.0.0.1:99999/relay",
        f"postgresql://relay@127.0.0.1/relay?password={FAKE_PASSWORD}&no_such_option=1",
        f"postgresql://relay:{FAKE_PASSWORD}@127.0.0.1/relay#{FAKE_PASSWORD}",
        # libpq's keyword form is no URL: it must not be taken for a SQLite file's name.
        f"host=127.0.0.1 user=relay password={FAKE_PASSWORD} dbname=relay",
    ],
)
def test_a_malformed_url_is_refused_in_one_line_without_the_password(
    url: str, relayctl_runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = clean_env(RELAY_SECRET_KEY=generate_key())
    for args in (("db", "status"), ("doctor",), ("keys", "list"), ("db", "init")):
        refused = relayctl_runner(*args, "--db", url, env=env, code=1)
        never_shown(refused.output, FAKE_PASSWORD)
        assert refused.output.count("\n") == 1 and refused.output.startswith("Error: "), refused.output
    with pytest.raises(ConfigError) as error:
        load_settings({"RELAY_DATABASE": url})
    never_shown(str(error.value), FAKE_PASSWORD)
    assert not list(tmp_path.iterdir())  # nothing was created where relayctl ran


def test_a_password_given_as_a_query_option_is_masked(postgres_database_url: str, postgres_cluster: Cluster, relayctl_runner: Any) -> None:
    password = postgres_cluster.password
    parts = urlsplit(postgres_database_url)
    url = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", "@"), query=f"sslmode=disable&password={password}"))
    assert password in url and f":{password}@" not in url
    env = clean_env(RELAY_SECRET_KEY=generate_key())
    relayctl_runner("db", "init", "--db", url, env=env)
    status = json.loads(relayctl_runner("db", "status", "--json", "--db", url, env=env).output)
    assert status["database"].endswith("?sslmode=disable&password=***") and status["version"] == SCHEMA_VERSION
    for args in (("db", "status"), ("db", "upgrade"), ("keys", "issue", "alice", "--permission", "openai"), ("doctor",)):
        never_shown(relayctl_runner(*args, "--db", url, env=env, code=1 if args == ("doctor",) else 0).output, password)
    assert password not in repr(parse_location(url)) and password not in str(parse_location(url))


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_relay(tmp_path: Path) -> Iterator[Any]:
    """A real relay process (uvicorn with the relay's log configuration, as the Procfile runs it)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(database: str, *, secret_key: str | None = None, serving: bool = True) -> Started:
        port = free_port()
        log = tmp_path / f"relay-{port}.log"
        env = clean_env(RELAY_DATABASE=database, RELAY_SECRET_KEY=secret_key or generate_key(), RELAY_LOG_FORMAT="text", **POOL_TIMEOUT)
        command = [
            str(BIN / "uvicorn"),
            "relay.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-config",
            str(ROOT / "relay" / "uvicorn-logging.json"),
        ]
        with log.open("wb") as output:
            process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        if serving:
            wait_until_serving(f"{url}/healthz", process)
        return Started(process, url, log)

    yield start
    for process in started:
        stop(process)


def test_a_relay_that_cannot_reach_its_database_says_so_without_the_password(
    postgres_database_url: str, postgres_cluster: Cluster, start_relay: Any
) -> None:
    unreachable = with_port(with_password(postgres_database_url, postgres_cluster, FAKE_PASSWORD), free_port())
    wrong_password = with_password(postgres_database_url, postgres_cluster, FAKE_PASSWORD)
    for url, reason in ((unreachable, "cannot be reached"), (wrong_password, "refused the user name or password")):
        started = start_relay(url, serving=False)
        assert started.process.wait(30) != 0
        text = started.text()
        never_shown(text, FAKE_PASSWORD, postgres_cluster.password)
        assert "Traceback" not in text
        refusals = [line for line in text.splitlines() if "cannot start" in line]
        assert len(refusals) == 1 and str(parse_location(url)) in refusals[0] and reason in refusals[0], text


def test_a_running_relay_on_postgresql_shows_the_password_nowhere(
    postgres_database_url: str, postgres_cluster: Cluster, start_relay: Any, sandbox: Sandbox, relayctl_runner: Any
) -> None:
    password = postgres_cluster.password
    url = postgres_database_url + "?sslmode=disable"  # libpq's options pass through
    secret_key = generate_key()
    started = start_relay(url, secret_key=secret_key)
    env = clean_env(RELAY_DATABASE=url, RELAY_SECRET_KEY=secret_key)
    relayctl_runner(
        "accounts", "add", "main", "--type", "openai-responses", "--token", "sk-run-0123456789", "--base-api", sandbox.base_api(), env=env
    )
    key = json.loads(relayctl_runner("keys", "issue", "alice", "--permission", "openai", "--json", env=env).output)["key"]
    alice = {"Authorization": f"Bearer {key}"}
    created = httpx.post(f"{started.url}/openai/v1/videos", json={"prompt": "a lighthouse", "model": "sora-2"}, headers=alice, timeout=10)
    assert created.status_code == 200, created.text
    listed = httpx.get(f"{started.url}/openai/v1/videos", headers=alice, timeout=10)
    assert [video["id"] for video in listed.json()["data"]] == [created.json()["id"]]
    assert httpx.get(f"{started.url}/openai/v1/videos", headers={"Authorization": "Bearer rk-0000000000000000-nope"}).status_code == 401
    metrics = httpx.get(f"{started.url}/metrics")
    assert metrics.status_code == 200 and "relay_" in metrics.text
    never_shown(metrics.text, password)
    started.process.terminate()
    started.process.wait(15)  # uvicorn ends by re-raising SIGTERM: its exit status is the signal's
    text = started.text()
    assert "Application startup complete" in text and "Application shutdown complete" in text and "Traceback" not in text
    never_shown(text, password)


# -- the forms RELAY_DATABASE takes ----------------------------------------------------------------


def test_relay_database_forms_name_the_same_files_relayctl_uses(
    tmp_path: Path, relayctl_runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = tmp_path / "abs" / "path.db"
    forms = {
        "sqlite:///relative.db": Path("relative.db"),
        f"sqlite:///{absolute}": absolute,  # four slashes: sqlite:////abs/path.db
        str(tmp_path / "plain.db"): tmp_path / "plain.db",
        "plain-relative.db": Path("plain-relative.db"),
    }
    assert f"sqlite:///{absolute}".startswith("sqlite:////")
    absolute.parent.mkdir()
    for given, path in forms.items():
        location = load_settings({"RELAY_DATABASE": given}).database
        assert location.dialect == "sqlite" and location.path == path, given
        env = clean_env(RELAY_DATABASE=given, RELAY_SECRET_KEY=generate_key())
        relayctl_runner("db", "init", env=env)
        assert (tmp_path / path).is_file(), given
        assert json.loads(relayctl_runner("db", "status", "--json", env=env).output)["dialect"] == "sqlite"
    for refused in ("sqlite://relative.db", "sqlite:///"):
        with pytest.raises(ConfigError, match="sqlite:///relative/path or sqlite:////absolute/path"):
            load_settings({"RELAY_DATABASE": refused})


def test_postgres_scheme_and_libpq_options_are_accepted(postgres_database_url: str, relayctl_runner: Any) -> None:
    env = clean_env(RELAY_SECRET_KEY=generate_key())
    for url in (postgres_database_url.replace("postgresql://", "postgres://", 1), postgres_database_url + "?sslmode=disable"):
        location = load_settings({"RELAY_DATABASE": url}).database
        assert location.dialect == "postgresql" and location.raw == url and location.path is None
        relayctl_runner("db", "init", "--db", url, env=env)
        assert json.loads(relayctl_runner("db", "status", "--json", "--db", url, env=env).output)["version"] == SCHEMA_VERSION


def test_an_unknown_scheme_is_refused_at_start_up_in_one_line(
    start_relay: Any, relayctl_runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"mysql://relay:{FAKE_PASSWORD}@127.0.0.1/relay"
    with pytest.raises(ConfigError, match="scheme 'mysql' is not supported"):
        load_settings({"RELAY_DATABASE": url})
    started = start_relay(url, serving=False)
    assert started.process.wait(30) != 0
    text = started.text()
    never_shown(text, FAKE_PASSWORD)
    assert "Traceback" not in text
    assert sum("scheme 'mysql' is not supported" in line for line in text.splitlines()) == 1, text
    refused = relayctl_runner("keys", "list", env=clean_env(RELAY_DATABASE=url, RELAY_SECRET_KEY=generate_key()), code=1)
    assert refused.output.count("\n") == 1 and "scheme 'mysql' is not supported" in refused.output
    never_shown(refused.output, FAKE_PASSWORD)
    assert [path.name for path in tmp_path.iterdir()] == [started.log.name]  # no file named like the URL


def test_db_init_then_db_copy_the_way_the_deployment_page_moves_a_relay(
    populated: Populated, postgres_database_url: str, relayctl_runner: Any
) -> None:
    """`db init` first (it records a secret check) must not make the copy call the target non-empty,
    and `db init` says what it created on a database the server made empty."""
    url = postgres_database_url
    env = clean_env(RELAY_SECRET_KEY=populated.secret_key)
    made = relayctl_runner("db", "init", "--db", url, env=env)
    assert made.output == f"Created the relay's tables in {parse_location(url)}.\n"
    assert relayctl_runner("db", "init", "--db", url, env=env).output.endswith("is already set up; nothing changed.\n")

    copied = relayctl_runner("db", "copy", "--db", str(populated.path), "--to", url, "--json", env=env)
    assert json.loads(copied.output)["rows"]["keys"] == len(table_rows(populated.path)["keys"])
    assert table_rows(url) == table_rows(populated.path)


def test_a_command_that_changes_the_database_refuses_one_without_relay_tables(
    postgres_database_url: str, relayctl_runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PostgreSQL side of the guard against a mistyped --db: no schema, no key file appears."""
    monkeypatch.chdir(tmp_path)
    env = clean_env()
    for args in (("keys", "revoke", "alice"), ("keys", "list"), ("accounts", "list"), ("sessions", "evict", "--all")):
        refused = relayctl_runner(*args, "--db", postgres_database_url, env=env, code=1)
        assert refused.output.startswith(f"Error: no relay database at {parse_location(postgres_database_url)}"), refused.output
    with psycopg.connect(postgres_database_url) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()").fetchone()
    assert tables == (0,)
    assert not list(tmp_path.iterdir())
