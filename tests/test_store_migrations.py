"""Versioned schema migrations (issue 13): a database made before them upgrades in place with
nothing lost, `relayctl db status` / `db upgrade` report and run them, processes starting
together do not race, and a database newer than the code is refused with one line."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_sql
from test_store_concurrency import race

from relay.config import ConfigError, Settings
from relay.records import Video
from relay.state import open_store
from relay.store import SCHEMA_VERSION, Store, schema
from relay.store.location import parse_location

FIXTURE = Path(__file__).parent / "fixtures" / "relay-v1.sql"


def fixture_value(label: str) -> str:
    """A throwaway value the fixture's header comments name (its secret key, alice's relay key)."""
    prefix = f"-- {label}: "
    return next(line[len(prefix) :] for line in FIXTURE.read_text().splitlines() if line.startswith(prefix))


def load_fixture(path: Path, *also: str) -> None:
    """The database today's release wrote, in a file, with optional statements run after it."""
    conn = sqlite3.connect(path)
    conn.executescript(FIXTURE.read_text())
    for statement in also:
        conn.execute(statement)
    conn.commit()
    conn.close()


def rows(path: Path) -> dict[str, set[tuple[tuple[str, Any], ...]]]:
    """Every row of every table, as sets of (column, value) pairs (columns added later do not hide a row)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: {tuple(sorted(dict(r).items())) for r in conn.execute(f'SELECT * FROM "{t}"')} for t in tables}
    finally:
        conn.close()


def contains_every_row(after: dict[str, set[Any]], before: dict[str, set[Any]]) -> None:
    """Every row of `before` is in `after` (later columns aside); the schema version moves on, of course."""
    before = {**before, "meta": {row for row in before["meta"] if ("key", "schema_version") not in row}}
    for table, table_rows in before.items():
        assert table_rows, f"the fixture has no {table} rows"
        columns = {column for column, _ in next(iter(table_rows))}
        kept = {tuple(pair for pair in row if pair[0] in columns) for row in after[table]}
        assert table_rows <= kept, table


def test_a_database_from_the_release_before_migrations_opens_with_every_row(tmp_path: Path, make_relay: Any) -> None:
    path = tmp_path / "relay.db"
    load_fixture(path)
    before = rows(path)
    settings = Settings(database=parse_location(path), secret_key=fixture_value("secret key"))
    store, box = open_store(settings)  # the relay's start-up: it runs the migrations
    assert store.schema_status().version == SCHEMA_VERSION and store.schema_status().pending == ()
    store.close()
    contains_every_row(rows(path), before)

    relay = make_relay(secret_key=fixture_value("secret key"))
    alice = {"Authorization": f"Bearer {fixture_value('key alice')}"}
    listed = relay.client.get("/openai/v1/videos", headers=alice)
    assert listed.status_code == 200, listed.text
    assert [video["id"] for video in listed.json()["data"]] == ["video_fixture1"]
    assert relay.client.get("/openai/v1/videos", headers={"Authorization": "Bearer rk-0000000000000000-nope"}).status_code == 401
    assert sorted(upstream.name for upstream in relay.state.pool.all()) == ["acct-one", "acct-two"]
    assert relay.state.box.decrypt(relay.state.store.account("acct-one").credential_encrypted) == "sk-fixture-one"
    remix = relay.state.store.video("video_fixture2")
    assert remix is not None and remix.account == "acct-two" and remix.charge_state == "reserved"
    assert relay.state.store.character_owner("char_fixture1") == ("acct-one", "alice")
    assert relay.state.prices.usd_per_second("sora-2-pro", "1792x1024") == 0.5
    # The running totals of charges (step 4) start from the jobs already recorded.
    totals = {
        (row["subject"], row["name"], row["period"]): (row["video_seconds"], row["usd"])
        for row in run_sql(relay.state.store, "SELECT * FROM charge_totals")
    }
    assert totals == {
        ("key", "alice", "day"): (8.0, 0.8),
        ("key", "alice", "month"): (8.0, 0.8),
        ("account", "acct-one", "day"): (8.0, 0.8),
        ("account", "acct-one", "month"): (8.0, 0.8),
        ("key", "bob", "day"): (4.0, 0.4),
        ("key", "bob", "month"): (4.0, 0.4),
        ("account", "acct-two", "day"): (4.0, 0.4),
        ("account", "acct-two", "month"): (4.0, 0.4),
    }


def test_a_version_1_database_missing_later_columns_gets_them_with_its_rows_kept(tmp_path: Path, cli: Any) -> None:
    """Earlier releases recorded version 1 too, before later columns and tables existed."""
    path = tmp_path / "relay.db"
    load_fixture(path, "ALTER TABLE keys DROP COLUMN limits", "ALTER TABLE reservations DROP COLUMN owner", "DROP TABLE holders")
    before = rows(path)

    status = json.loads(cli("db", "status", "--json").output)
    # The fixture's own journal mode: status opens read-only and no longer switches it to WAL.
    assert status == {
        "database": str(path),
        "dialect": "sqlite",
        "version": 1,
        "code_version": SCHEMA_VERSION,
        "journal_mode": "delete",
        "pending": list(range(1, SCHEMA_VERSION + 1)),
    }
    assert rows(path) == before  # status changes nothing

    assert json.loads(cli("db", "upgrade", "--json").output) == {
        "database": str(path),
        "applied": list(range(1, SCHEMA_VERSION + 1)),
        "version": SCHEMA_VERSION,
    }
    assert "nothing to do" in cli("db", "upgrade").output
    assert "pending       none" in cli("db", "status").output
    after = rows(path)
    contains_every_row(after, before)
    assert {("limits", None)} <= set(next(iter(after["keys"])))


def test_step_1s_shape_read_from_its_definitions_is_what_step_1_builds() -> None:
    """The check above compares a database with step 1's shape, read from the tables' definitions
    rather than built in a scratch database at every start: both must agree."""
    conn = sqlite3.connect(":memory:")
    schema._step_1_base_schema(conn, "sqlite")
    built = schema._shape(conn) - {("index", name) for name in schema._STEP_1_INDEXES_DROPPED}
    # SQLite's own indexes for text and composite primary keys come with the tables.
    assert schema._step_1_shape() == {item for item in built if not item[1].startswith("sqlite_autoindex_")}
    conn.close()


def test_db_status_and_upgrade_refuse_a_missing_or_foreign_file(tmp_path: Path, cli: Any) -> None:
    assert "no relay database" in cli("db", "status", code=1).output
    assert not (tmp_path / "relay.db").exists()
    (tmp_path / "relay.db").write_bytes(b"not sqlite at all " * 100)
    assert "is not a relay database" in cli("db", "upgrade", code=1).output


def test_a_database_newer_than_the_code_is_refused_with_one_line(tmp_path: Path, cli: Any) -> None:
    path = tmp_path / "relay.db"
    load_fixture(path, f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    with pytest.raises(ConfigError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this release knows"):
        open_store(Settings(database=parse_location(path), secret_key=fixture_value("secret key")))
    refused = cli("db", "upgrade", code=1).output
    assert refused.count("\n") == 1 and "newer than this release knows" in refused
    status = json.loads(cli("db", "status", "--json").output)
    assert status["version"] == SCHEMA_VERSION + 1 and status["pending"] == []


def test_a_new_step_runs_once_however_many_processes_start_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "relay.db"
    load_fixture(path)

    def step_2(conn: Any, dialect: str) -> None:
        conn.execute("CREATE TABLE step_2_ran (x)")  # fails if it ever runs twice
        conn.execute("INSERT INTO step_2_ran VALUES (1)")

    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step_2))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    stores = [Store(path) for _ in range(6)]
    applied = race(stores, lambda store, _index: store.ensure_schema())
    # The fixture is at version 1: the one that upgrades runs every later step, the new one last.
    assert sorted(applied) == [(), (), (), (), (), tuple(range(2, SCHEMA_VERSION + 2))]
    assert stores[0].schema_status().version == SCHEMA_VERSION + 1
    assert run_sql(stores[0], "SELECT count(*) FROM step_2_ran")[0][0] == 1
    for store in stores:
        store.close()


def test_replicas_starting_together_on_postgresql_run_a_new_step_once(postgres_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Store here has its own connection pool, as separate replicas do; the advisory lock
    every write transaction takes makes them take turns over the upgrade."""
    made = Store(postgres_database_url)
    assert made.ensure_schema() == tuple(range(1, SCHEMA_VERSION + 1))
    assert made.ensure_schema() == ()
    made.close()

    def step_2(conn: Any, dialect: str) -> None:
        assert dialect == "postgresql"
        conn.execute("CREATE TABLE step_2_ran (x integer)")  # fails if it ever runs twice
        conn.execute("INSERT INTO step_2_ran VALUES (1)")

    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step_2))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    stores = [Store(postgres_database_url) for _ in range(6)]
    try:
        applied = race(stores, lambda store, _index: store.ensure_schema())
        assert sorted(applied) == [(), (), (), (), (), (SCHEMA_VERSION + 1,)]
        status = stores[0].schema_status()
        assert (status.dialect, status.version, status.pending) == ("postgresql", SCHEMA_VERSION + 1, ())
        assert run_sql(stores[0], "SELECT count(*) FROM step_2_ran")[0][0] == 1
    finally:
        for store in stores:
            store.close()


def _indexes_on_videos(store: Store) -> set[str]:
    if store.dialect == "sqlite":
        statement = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'videos'"
    else:
        statement = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'videos'"
    return {row[0] for row in run_sql(store, statement)}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_the_videos_account_index_is_gone_and_lookups_by_account_use_the_one_that_covers_them(database: str) -> None:
    """videos (account) only repeated the leading column of videos (account, charged_at)."""
    store = Store(database)
    try:
        store.ensure_schema()
        indexes = _indexes_on_videos(store)
        assert "idx_videos_account" not in indexes and "idx_videos_account_charged_at" in indexes
        if store.dialect == "sqlite":
            plan = run_sql(store, "EXPLAIN QUERY PLAN SELECT count(*) FROM videos WHERE account = 'a' AND deleted_at IS NULL")
            assert "USING INDEX idx_videos_account_charged_at" in " ".join(str(row["detail"]) for row in plan)
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_the_videos_key_charge_index_is_gone_and_a_keys_charges_are_still_found_by_index(database: str) -> None:
    """Budgets read the running totals; a key's charges since any other time go through videos
    (key_name, created_at), and every job's record writes one index fewer."""
    store = Store(database)
    try:
        store.ensure_schema()
        indexes = _indexes_on_videos(store)
        assert "idx_videos_key_name_charged_at" not in indexes and "idx_videos_key_name_created_at" in indexes
        now = time.time()
        store.insert_video(_charged_job("video_1", now - 30))
        store.insert_video(_charged_job("video_2", now - 10))
        usage = store.key_usage("alice", since=now - 20, now=now)  # not a day's or month's start
        assert (usage.video_seconds, usage.usd) == (4.0, 0.4)
        if store.dialect == "sqlite":
            plan = run_sql(
                store,
                "EXPLAIN QUERY PLAN SELECT sum(usd) FROM videos WHERE key_name = 'alice' AND charged_at >= 0"
                " AND charge_state IN ('reserved', 'settled')",
            )
            assert "USING INDEX idx_videos_key_name_created_at" in " ".join(str(row["detail"]) for row in plan)
    finally:
        store.close()


def _charged_job(video_id: str, charged_at: float) -> Video:
    return Video(
        id=video_id, account="a", key_name="alice", kind="create", source_video_id=None, model="sora-2", seconds="4",
        billable_seconds=4.0, size="720x1280", status="queued", progress=0, created_at=charged_at, recorded_at=charged_at,
        finished_at=None, deleted_at=None, resource="{}", usd=0.4, charge_state="reserved", charged_at=charged_at,
        watch_next_at=charged_at + 10,
    )  # fmt: skip


def test_an_upgrade_drops_the_videos_account_index_and_a_repair_of_step_1_keeps_it_dropped(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    load_fixture(path)  # the release before migrations made the index
    store = Store(path)
    try:
        assert {"idx_videos_account", "idx_videos_key_name_charged_at"} <= _indexes_on_videos(store)
        assert {5, 7} <= set(store.ensure_schema())
        assert not {"idx_videos_account", "idx_videos_key_name_charged_at"} & _indexes_on_videos(store)
        assert store.schema_status().pending == ()  # its absence is not a step 1 to repair
    finally:
        store.close()

    # A database at today's version that falls short of step 1 elsewhere: the repair makes the
    # indexes again, and steps 5 and 7 drop them again.
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX idx_videos_key_name_created_at")
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        assert store.schema_status().pending == (1, 5, 7)
        assert store.ensure_schema() == (1, 5, 7)
        indexes = _indexes_on_videos(store)
        assert "idx_videos_key_name_created_at" in indexes
        assert "idx_videos_account" not in indexes and "idx_videos_key_name_charged_at" not in indexes
        assert store.schema_status().pending == () and store.schema_status().version == SCHEMA_VERSION
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_step_6_indexes_the_unfinished_jobs_by_account_and_drops_the_index_by_due_time(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as older:
        older.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:5])
        older.setattr(schema, "SCHEMA_VERSION", 5)
        store = Store(database)
        assert store.ensure_schema() == (1, 2, 3, 4, 5)
    try:
        assert "idx_videos_watch_next_at" in _indexes_on_videos(store)
        run_sql(
            store,
            "INSERT INTO videos (id, account, key_name, kind, status, created_at, recorded_at, resource, watch_next_at)"
            " VALUES ('video_1', 'a', 'alice', 'create', 'queued', 1, 1, '{}', 1)",
        )
        assert store.ensure_schema() == tuple(range(6, SCHEMA_VERSION + 1))
        indexes = _indexes_on_videos(store)
        assert "idx_videos_unfinished" in indexes and "idx_videos_watch_next_at" not in indexes
        claimed = store.claim_jobs_to_watch("worker-1", per_account={"a": 1}, limit=1, now=2, lease_seconds=60, holders_now=2)
        assert [video.id for video in claimed] == ["video_1"]
        assert store.ensure_schema() == ()
    finally:
        store.close()
