"""The operator audit's findings: each command ends in one `Error:` line, never a traceback; tables
keep every digit of a stored value; watch mode's JSON parses; empty strings and ignored options
are refused; `db prune` takes durations and refuses an old schema as the other commands do."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN

from ops.output import plain_number
from relay.store import Outcome, Store


def add(cli: Any, name: str, *extra: str) -> None:
    cli("accounts", "add", name, "--type", "openai-responses", "--token", TOKEN, "--base-api", "http://127.0.0.1:9/v1", *extra)


def foreign_sqlite(path: Path) -> Path:
    """A SQLite file some other program wrote: no relay tables."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    return path


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


# -- 1. one Error: line, not a traceback ----------------------------------------------------------


def test_a_price_file_that_is_not_utf8_is_one_error(cli: Any, tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_bytes(b"\xff\xfe\x00")
    refused = cli("prices", "load", str(prices), code=1).output
    assert refused.startswith("Error: ") and "prices.csv is not UTF-8 text" in refused and len(refused.splitlines()) == 1
    assert not (tmp_path / "relay.db").exists()  # refused before the database is opened


def test_a_price_file_saved_with_a_byte_order_mark_loads(cli: Any, tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_bytes("model,size,usd_per_second\nacme,*,0.04\n".encode("utf-8-sig"))
    assert "Loaded 1 price(s)" in cli("prices", "load", str(prices)).output


def test_db_copy_into_a_missing_folder_says_so(cli: Any, tmp_path: Path) -> None:
    cli("db", "init")
    target = tmp_path / "missing" / "relay.db"
    refused = cli("db", "copy", "--to", str(target), code=1).output
    assert refused.startswith("Error: ") and f"the folder {target.parent} for the database {target} does not exist" in refused
    assert "--to" in refused and not target.parent.exists()


def test_a_database_under_a_file_is_refused_by_name(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    database = tmp_path / "afile" / "relay.db"
    init = cli("db", "init", "--db", str(database), code=1).output
    assert init.startswith("Error: ") and f"{tmp_path / 'afile'} is a file, not a folder" in init
    # The folder exists, as a file: "does not exist" and "create it with db init" would mislead.
    for command in (
        ["accounts", "add", "x", "--type", "openai-responses", "--token", TOKEN, "--db", str(database)],
        ["accounts", "list", "--db", str(database)],
        ["db", "init", "--db", str(tmp_path / "afile" / "deeper" / "relay.db")],
    ):
        refused = cli(*command, code=1).output
        assert "is a file, not a folder" in refused and "does not exist" not in refused, command
    cli("db", "init")
    assert "is a file, not a folder" in cli("db", "copy", "--to", str(database), code=1).output


# -- 2. tables keep every digit --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.1, "0.1"),
        (0.0881, "0.0881"),
        (0.0004, "0.0004"),
        (1e-05, "0.00001"),
        (4e-05, "0.00004"),
        (-0.00012, "-0.00012"),
        (0.1 + 0.2, "0.3"),  # a sum's binary noise is no digit of the value
        (3.0, "3"),
        (2.5, "2.5"),
        (123456.789, "123456.789"),
        (1e20, "1e+20"),
    ],
)
def test_plain_number(value: float, shown: str) -> None:
    assert plain_number(value) == shown


def test_tables_show_every_digit_of_a_price_or_budget(cli: Any) -> None:
    assert "costs $0.0004 per second" in cli("prices", "set", "zz", "1280x720", "0.0004").output
    assert "costs $0.00004 per second" in cli("prices", "set", "zz", "640x480", "0.00004").output
    listed = json.loads(cli("prices", "list", "--json").output)
    cells = {tuple(line.split()[:2]): line.split()[2] for line in cli("prices", "list").output.splitlines()[2:]}
    assert cells[("zz", "1280x720")] == "0.0004" and cells[("zz", "640x480")] == "0.00004"
    # Defaults too (0.0881 read 0.088): every cell reads back as the stored number.
    assert all(float(cells[(row["model"], row["size"])]) == row["usd_per_second"] for row in listed)
    cli("keys", "issue", "K")
    limits = cli("keys", "limits", "K", "--usd-per-day", "0.0004").output.splitlines()
    assert "usd_per_day               0.0004" in limits and "usd_left_day              0.0004" in limits


# -- 3. watch mode's JSON is JSON Lines ------------------------------------------------------------


def test_cooldowns_watch_json_prints_one_document_per_line(cli: Any, tmp_path: Path) -> None:
    add(cli, "main")
    cli("accounts", "disable", "main")
    for args in (
        ["cooldowns", "--watch", "--count", "2", "--interval", "0.01", "--json"],
        ["--json", "cooldowns", "--watch", "--count", "2"],
    ):
        lines = cli(*args).output.splitlines()
        assert len(lines) == 2, args
        assert all(json.loads(line)[0]["account"] == "main" for line in lines)
    assert "JSON Lines" in cli("cooldowns", "--help").output
    # Without --watch, --json is one indented array as before.
    assert json.loads(cli("cooldowns", "--json").output)[0]["state"] == "disabled"


# -- 4. empty strings ------------------------------------------------------------------------------


def test_an_empty_base_api_is_refused_not_taken_for_the_default(cli: Any, tmp_path: Path) -> None:
    refused = cli("accounts", "add", "x", "--type", "openai-responses", "--token", TOKEN, "--base-api", "", code=1).output
    assert "base_api must be a URL" in refused
    assert not (tmp_path / "relay.db").exists()
    add(cli, "main")
    assert refused == cli("accounts", "base-api", "main", "", code=1).output  # the same words


def test_an_empty_proxy_is_refused_not_taken_for_clear(cli: Any) -> None:
    add(cli, "main", "--proxy", "http://127.0.0.1:3128")
    refused = cli("accounts", "proxy", "main", "", code=2).output
    assert "the proxy URL is empty" in refused and "--clear" in refused
    assert json.loads(cli("accounts", "show", "main", "--json").output)["proxy"] == "http://127.0.0.1:3128"
    cli("accounts", "proxy", "main", "none")
    assert json.loads(cli("accounts", "show", "main", "--json").output)["proxy"] is None


def test_the_sandbox_refuses_an_empty_host(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[str] = []
    # Had it started, it would listen on every interface until stopped.
    monkeypatch.setattr("ops.cli.serve_sandbox", lambda host, *args, **kwargs: served.append(host))
    refused = cli("sandbox", "--host", "", "--port", "0", code=2).output
    assert "'--host'" in refused and "is empty" in refused and served == []
    cli("sandbox", "--port", "0")
    assert served == ["127.0.0.1"]


# -- 5. db prune ---------------------------------------------------------------------------------


def test_db_prune_takes_durations(cli: Any) -> None:
    cli("db", "init")
    assert json.loads(cli("db", "prune", "--outcomes-older-than", "2w", "--deliveries-older-than", "24h", "--dry-run", "--json").output)
    assert "not a duration" in cli("db", "prune", "--outcomes-older-than", "90", code=2).output
    assert "must be at least 1d" in cli("db", "prune", "--outcomes-older-than", "23h", code=2).output
    assert "longest duration, 36500d" in cli("db", "prune", "--deliveries-older-than", "36501d", code=2).output


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_db_prune_refuses_a_database_without_relay_tables_as_reads_do(cli: Any, tmp_path: Path, dry_run: list[str]) -> None:
    database = foreign_sqlite(tmp_path / "other.db")
    mode = journal_mode(database)
    refused = cli("db", "prune", "--db", str(database), "--outcomes-older-than", "90d", *dry_run, code=1).output
    assert refused.startswith("Error: ") and f"run 'relayctl db upgrade --db {database}'" in refused
    assert refused == cli("accounts", "list", "--db", str(database), code=1).output
    assert journal_mode(database) == mode  # left as it was: no switch to WAL


# -- 6. options that were silently ignored -------------------------------------------------------


def test_outcomes_summary_honours_account(cli: Any, tmp_path: Path) -> None:
    add(cli, "a")
    add(cli, "b")
    store = Store(tmp_path / "relay.db")
    now = time.time()
    store.write_batch(
        [
            Outcome(now - 30, "req_a", "alice", "a", "openai-responses", "videos.create", 200, "none", 10.0),
            Outcome(now - 20, "req_b", "alice", "b", "openai-responses", "videos.create", 429, "rate_limited", 20.0),
        ],
        {},
        {},
        {},
    )
    store.close()
    assert {r["account"] for r in json.loads(cli("outcomes", "summary", "--since", "1h", "--json").output)} == {"a", "b"}
    for args in (["outcomes", "--account", "b", "summary", "--since", "1h"], ["outcomes", "summary", "--account", "b", "--since", "1h"]):
        assert [r["account"] for r in json.loads(cli(*args, "--json").output)] == ["b"], args
    # The summary's own --account wins over the group's, as a command's own --db does.
    assert [r["account"] for r in json.loads(cli("outcomes", "--account", "b", "summary", "--account", "a", "--json").output)] == ["a"]
    refused = cli("outcomes", "--limit", "3", "--key", "alice", "summary", code=2).output
    assert "only the listing takes --key, --limit" in refused


@pytest.mark.parametrize("option", [["--count", "2"], ["--interval", "1"]])
def test_cooldowns_refuses_watch_options_without_watch(cli: Any, option: list[str]) -> None:
    cli("db", "init")
    assert f"{option[0]} needs --watch" in cli("cooldowns", *option, code=2).output


# -- 7. doctor ---------------------------------------------------------------------------------


def test_doctor_says_a_database_has_no_relay_tables(cli: Any, tmp_path: Path) -> None:
    database = foreign_sqlite(tmp_path / "other.db")
    rows = json.loads(cli("doctor", "--db", str(database), "--json", code=1).output)
    schema = next(row for row in rows if row["check"] == "schema version")
    assert schema["status"] == "fail" and schema["detail"].startswith("no relay tables") and "None" not in schema["detail"]
    assert "no relay tables" in cli("doctor", "--db", str(database), code=1).output


def test_sessions_evict_names_an_unknown_account_as_list_does(cli: Any) -> None:
    cli("db", "init")
    assert "no account named 'nope'" in cli("sessions", "list", "--account", "nope", code=1).output
    assert "no account named 'nope'" in cli("sessions", "evict", "--account", "nope", code=1).output
