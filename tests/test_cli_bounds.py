"""relayctl's numbers, durations and names are bounded; stored values no date can show list anyway.

Issue 18: `keys issue --expires-in 99999999999d` stored a key and crashed before showing it,
after which every `keys list` crashed too. Every duration and number is bounded now, with one
clear error and nothing written, and rows older versions wrote list, show and authenticate.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BIN, Relay, stop

from relay.crypto import parse_keys


def key_columns(db: Path, name: str) -> tuple[Any, ...]:
    with sqlite3.connect(db) as conn:
        return tuple(
            conn.execute("SELECT salt, hash, expires_at, previous_valid_until, limits FROM keys WHERE name = ?", (name,)).fetchone()
        )


def write_key_columns(db: Path, name: str, **values: Any) -> None:
    """As an older relayctl would have left the row."""
    with sqlite3.connect(db) as conn:
        assignments = ", ".join(f"{column} = ?" for column in values)
        conn.execute(f"UPDATE keys SET {assignments} WHERE name = ?", (*values.values(), name))


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("duration", ["99999999999d", "36501d", "5215w", "1000000000d", "9" * 5000 + "s"])
def test_a_duration_past_100_years_is_refused_and_nothing_is_written(cli: Any, tmp_path: Path, duration: str) -> None:
    refused = cli("keys", "issue", "x", "--expires-in", duration, code=2).output
    assert "longest duration, 36500d" in refused and len(refused.splitlines()[-1]) < 200
    assert not (tmp_path / "relay.db").exists()  # the usage error comes before the database opens

    cli("keys", "issue", "k")
    before = key_columns(tmp_path / "relay.db", "k")
    assert "longest duration" in cli("keys", "rotate", "k", "--grace", duration, code=2).output
    assert key_columns(tmp_path / "relay.db", "k") == before
    for command in (["usage", "--since"], ["outcomes", "--since"], ["outcomes", "summary", "--since"]):
        assert "longest duration" in cli(*command, duration, code=2).output


def test_the_longest_duration_is_accepted_and_shown(cli: Any) -> None:
    issued = json.loads(cli("keys", "issue", "x", "--expires-in", "36500d", "--json").output)
    assert issued["expires"] > "2120"
    rotated = cli("keys", "rotate", "x", "--grace", "5214w").output
    assert "The old secret keeps working until 21" in rotated
    assert json.loads(cli("keys", "show", "x", "--json").output)["old_secret_valid_until"] > "2120"
    cli("usage", "--since", "36500d")


# -- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--requests-per-minute", "99999999999"),
        ("--requests-per-minute", "1000001"),
        ("--max-concurrent-creates", "100001"),
        ("--video-seconds-per-day", "1e10"),
        ("--video-seconds-per-month", "inf"),
        ("--usd-per-day", "1e400"),
        ("--usd-per-month", "nan"),
        ("--usd-per-month", "-inf"),
    ],
)
def test_key_limits_are_bounded_and_nothing_is_written(cli: Any, tmp_path: Path, option: str, value: str) -> None:
    assert "<=" in cli("keys", "issue", "x", option, value, code=1).output
    assert not (tmp_path / "relay.db").exists()
    cli("keys", "issue", "k", "--usd-per-day", "5")
    before = key_columns(tmp_path / "relay.db", "k")
    refused = cli("keys", "limits", "k", option, value, code=1).output
    assert refused.startswith("Error:") and len(refused.splitlines()) == 1
    assert key_columns(tmp_path / "relay.db", "k") == before


def test_the_largest_limits_are_accepted(cli: Any) -> None:
    cli("keys", "issue", "k")
    shown = json.loads(
        cli(
            "keys",
            "limits",
            "k",
            "--requests-per-minute",
            "1000000",
            "--max-concurrent-creates",
            "100000",
            "--usd-per-month",
            "1e9",
            "--video-seconds-per-day",
            "1000000000",
            "--json",
        ).output
    )
    assert shown["requests_per_minute"] == 1_000_000 and shown["usd_per_month"] == 1e9


@pytest.mark.parametrize(
    "args",
    [
        ["cooldowns", "--watch", "--interval", "nan", "--count", "1"],
        ["cooldowns", "--watch", "--interval", "inf", "--count", "1"],
        ["cooldowns", "--watch", "--interval", "1", "--count", "99999999999"],
        ["outcomes", "--status", "99999999999999999999999"],
        ["outcomes", "--limit", "100001"],
        ["sandbox", "--complete-after", "nan"],
        ["sandbox", "--complete-after", "1e400"],
        ["sandbox", "--port", "70000"],
    ],
)
def test_out_of_range_options_are_usage_errors(cli: Any, args: list[str]) -> None:
    cli("keys", "issue", "k")
    assert "Invalid value for" in cli(*args, code=2).output


@pytest.mark.parametrize("price", ["1e308", "1001", "inf", "nan"])
def test_prices_are_bounded(cli: Any, price: str) -> None:
    refused = cli("prices", "set", "sora-2", "720x1280", price, code=1).output
    assert "finite number >= 0 and <= 1,000" in refused


def test_price_files_are_bounded_too(cli: Any, tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"sora-2": {"*": 1e300}}))
    assert "<= 1,000" in cli("prices", "load", str(prices), code=1).output


# -- rows older versions wrote ----------------------------------------------------------------------


OUT_OF_RANGE_ROWS = {
    "far": {"expires_at": 1e20, "previous_valid_until": 1e18},
    "forever": {"expires_at": float("inf"), "last_used_at": 1e300},
    "past": {"expires_at": -1e20, "created_at": -1e15},
    "nan": {"expires_at": float("nan"), "rotated_at": float("-inf")},  # SQLite keeps NaN as NULL
}


def test_listings_survive_any_stored_time(cli: Any, tmp_path: Path) -> None:
    for name, values in OUT_OF_RANGE_ROWS.items():
        cli("keys", "issue", name)
        write_key_columns(tmp_path / "relay.db", name, **values)
    table = cli("keys", "list").output
    assert "1e+20" in table and "-1e+20" in table and "inf" in table
    listed = {row["name"]: row for row in json.loads(cli("keys", "list", "--json").output)}
    assert listed["far"]["expires"] == "1e+20" and listed["far"]["state"] == "active"
    assert listed["forever"]["state"] == "active" and listed["forever"]["last_used"] == "1e+300"
    assert listed["past"]["state"] == "expired"
    assert listed["nan"]["expires"] is None and listed["nan"]["state"] == "active"
    for name in OUT_OF_RANGE_ROWS:
        cli("keys", "show", name)
        json.loads(cli("keys", "show", name, "--json").output)
    assert json.loads(cli("keys", "show", "far", "--json").output)["old_secret_valid_until"] == "1e+18"
    # And the key can be repaired: rotated (shown once) and revoked.
    assert "Copy it now" in cli("keys", "rotate", "far").output
    cli("keys", "revoke", "forever")
    assert "already revoked" in cli("keys", "revoke", "forever").output


def test_the_relay_authenticates_keys_with_far_stored_times(relay: Relay) -> None:
    far = relay.issue_key("far")
    old = relay.issue_key("rotated")
    current = relay.issue_key("old-version-rotated")
    past = relay.issue_key("past")
    db = relay.settings.database.sqlite_path()
    write_key_columns(db, "far", expires_at=1e20, last_used_at=1e300)
    write_key_columns(db, "past", expires_at=-1e20)
    # "rotated" gets a new secret whose grace period runs to 1e18; its old secret keeps working.
    with sqlite3.connect(db) as conn:
        salt, hash_ = conn.execute("SELECT salt, hash FROM keys WHERE name = 'old-version-rotated'").fetchone()
        conn.execute(
            "UPDATE keys SET previous_salt = salt, previous_hash = hash, salt = ?, hash = ?, previous_valid_until = 1e18"
            " WHERE name = 'rotated'",
            (salt, hash_),
        )
    relay.state.reload()

    def status(key: str) -> int:
        return relay.client.get("/openai/v1/videos/video_unknown", headers={"Authorization": f"Bearer {key}"}).status_code

    # 404: the key was accepted and the video looked up.
    assert status(far) == 404
    assert status(old) == 404
    assert status(current) == 404
    assert status(past) == 401


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["аlice", "ａlice", "alice\u200b", "ali ce", "-alice", ".alice", "a" * 65, "ß"])
def test_names_are_plain_ascii(cli: Any, tmp_path: Path, name: str) -> None:
    assert "ASCII letters" in cli("keys", "issue", "--", name, code=1).output
    assert not (tmp_path / "relay.db").exists()
    assert "ASCII letters" in cli("accounts", "add", "--type", "openai-responses", "--token", "sk-x", "--", name, code=1).output


def test_names_an_older_version_allowed_stay_usable(cli: Any, tmp_path: Path) -> None:
    cli("keys", "issue", "placeholder")
    with sqlite3.connect(tmp_path / "relay.db") as conn:
        conn.execute("UPDATE keys SET name = 'аlice' WHERE name = 'placeholder'")
    assert [k["name"] for k in json.loads(cli("keys", "list", "--json").output)] == ["аlice"]
    cli("keys", "show", "аlice")
    cli("keys", "limits", "аlice", "--usd-per-day", "3")
    assert "Copy it now" in cli("keys", "rotate", "аlice").output
    cli("keys", "revoke", "аlice")


# -- --db and --json before the command -------------------------------------------------------------


def test_db_and_json_work_before_and_after_the_command(cli: Any, tmp_path: Path) -> None:
    cli("keys", "issue", "from-env")  # $RELAY_DATABASE (the fixture's)
    other = tmp_path / "other.db"
    cli("--db", str(other), "keys", "issue", "before")
    cli("keys", "issue", "after", "--db", str(other))

    def names(*args: str) -> list[str]:
        return [k["name"] for k in json.loads(cli(*args).output)]

    assert names("--db", str(other), "keys", "list", "--json") == ["after", "before"]
    assert names("keys", "list", "--db", str(other), "--json") == ["after", "before"]
    assert names("--json", "keys", "list") == ["from-env"]
    # The command's own --db wins over the one before it.
    assert names("--db", str(other), "--json", "keys", "list", "--db", str(tmp_path / "relay.db")) == ["from-env"]
    assert "no relay database at" in cli("--db", str(tmp_path / "typo.db"), "keys", "list", code=1).output
    # Groups with their own options pass them on too.
    assert "no account named 'x'" in cli("--db", str(other), "cooldowns", "clear", "x", code=1).output
    assert "no relay database" in cli("cooldowns", "--db", str(tmp_path / "typo.db"), "clear", "x", code=1).output
    help_text = " ".join(cli("--help").output.split())
    assert "--db postgresql://... (before or after the command)" in help_text and "Add --json (before or after the command)" in help_text


# -- --json on secrets generate-key and sandbox ---------------------------------------------------


def test_secrets_generate_key_json(cli: Any) -> None:
    for args in (["secrets", "generate-key", "--json"], ["--json", "secrets", "generate-key"]):
        key = json.loads(cli(*args).output)["secret_key"]
        assert parse_keys(key)
    bare = cli("secrets", "generate-key").output.strip()
    assert parse_keys(bare) and not bare.startswith("{")


def test_sandbox_json_says_where_it_listens() -> None:
    process = subprocess.Popen(
        [str(BIN / "relayctl"), "sandbox", "--port", "0", "--json", "--complete-after", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
        assert announced["host"] == "127.0.0.1" and announced["port"] > 0
        assert announced["base_api"] == f"http://127.0.0.1:{announced['port']}/v1" == announced["url"] + "/v1"
        created = httpx.post(f"{announced['base_api']}/videos", json={"prompt": "a cat"}, headers={"Authorization": "Bearer t"})
        assert created.status_code == 200, created.text
        bases = announced["base_apis"]
        assert bases["openai"] == announced["base_api"]
        azure = httpx.post(f"{bases['azure-openai']}/videos", json={"prompt": "a cat"}, headers={"api-key": "k"})
        assert azure.status_code == 200, azure.text
        veo = httpx.post(
            f"{bases['gemini']}/models/veo-3.0-generate-001:predictLongRunning",
            json={"instances": [{"prompt": "a cat"}]},
            headers={"x-goog-api-key": "k"},
        )
        assert veo.status_code == 200 and veo.json()["name"].startswith("models/veo-3.0-generate-001/operations/"), veo.text
    finally:
        stop(process)  # type: ignore[arg-type]


def test_a_key_note_is_a_line_not_a_document(cli: Any) -> None:
    assert "at most 500 characters" in cli("keys", "issue", "long", "--note", "n" * 501, code=1).output
    assert json.loads(cli("keys", "list", "--json").output) == []  # nothing written
    cli("keys", "issue", "short", "--note", "n" * 500)


def test_the_sandbox_on_a_port_in_use_says_so_in_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run([str(BIN / "relayctl"), "sandbox", "--port", str(port)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{port} (Address already in use)"


@pytest.mark.parametrize(
    "command",
    [["keys", "issue", "zz"], ["db", "init"], ["db", "upgrade"], ["accounts", "add", "a", "--type", "openai-responses", "--token", "t"]],
)
def test_another_applications_sqlite_file_is_left_as_it_is(cli: Any, tmp_path: Path, command: list[str]) -> None:
    """A mistyped --db naming another application's SQLite file got the relay's tables and WAL mode."""
    foreign = tmp_path / "crm.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE customers (id integer)")
        conn.commit()
    output = cli(*command, "--db", str(foreign), code=1).output
    assert "holds another application's tables (customers) and no relay schema" in output
    with closing(sqlite3.connect(foreign)) as conn:
        assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master")] == ["customers"]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("crm")) == ["crm.db"]


def test_a_rotation_grace_ends_with_the_key(cli: Any) -> None:
    """It promised the old secret for 100 years on a key that expired in two weeks."""
    issued = json.loads(cli("keys", "issue", "soon", "--expires-in", "14d", "--json").output)
    cli("keys", "rotate", "soon", "--grace", "36500d")
    shown = json.loads(cli("keys", "show", "soon", "--json").output)
    assert shown["old_secret_valid_until"] == shown["expires"] == issued["expires"]


def test_a_negative_zero_is_zero(cli: Any) -> None:
    cli("keys", "issue", "z", "--usd-per-day", "-0", "--video-seconds-per-month", "-0.0")
    shown = cli("keys", "limits", "z").output
    assert "-0" not in shown
    limits = json.loads(cli("keys", "show", "z", "--json").output)
    assert str(limits["usd_per_day"]) == "0.0" and str(limits["video_seconds_per_month"]) == "0.0"
