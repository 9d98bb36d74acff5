"""relayctl as an operator uses it: tables, --json, clear errors, and no secret in any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN

from relay.accounts import CONSUMER_BACKEND_WARNING
from relay.crypto import generate_key
from relay.store import Store


def test_keys_issue_list_revoke(cli: Any, tmp_path: Path) -> None:
    issued = json.loads(cli("keys", "issue", "alice", "--json").output)
    assert issued["name"] == "alice" and issued["permissions"] == ["openai"]
    key = issued["key"]
    assert key.startswith("rk-")
    shown = cli("keys", "issue", "ops", "-p", "all", "--expires-in", "30d", "--note", "for the ops team").output
    assert "Copy it now" in shown and "rk-" in shown
    table = cli("keys", "list").output
    assert table.splitlines()[0].split() == ["name", "permissions", "state", "created", "last_used", "expires", "note"]
    assert "alice" in table and "ops" in table and key not in table
    listed = json.loads(cli("keys", "list", "--json").output)
    assert [k["name"] for k in listed] == ["alice", "ops"]
    assert listed[1]["expires"] is not None and listed[1]["permissions"] == ["all"]
    assert key not in json.dumps(listed)
    cli("keys", "revoke", "alice")
    assert json.loads(cli("keys", "list", "--json").output)[0]["state"] == "revoked"
    raw = (tmp_path / "relay.db").read_bytes()
    assert key.encode() not in raw and key.split("-", 2)[2].encode() not in raw


def test_key_errors(cli: Any) -> None:
    cli("keys", "issue", "alice")
    assert "exists already" in cli("keys", "issue", "alice", code=1).output
    assert "not one of" in cli("keys", "issue", "bob", "-p", "videos", code=2).output
    assert "duration" in cli("keys", "issue", "bob", "--expires-in", "soon", code=2).output
    assert "no key named 'nobody'" in cli("keys", "revoke", "nobody", code=1).output


def test_accounts_add_list_reset(cli: Any, tmp_path: Path) -> None:
    cli("accounts", "add", "main", "--type", "openai-responses", "--token-stdin", input=TOKEN + "\n")
    cli("accounts", "add", "gw", "--type", "openai-responses", "--token", TOKEN, "--base-api", "http://127.0.0.1:9/v1/", "--priority", "5")
    rows = json.loads(cli("accounts", "list", "--json").output)
    assert [(r["name"], r["base_api"], r["priority"], r["state"]) for r in rows] == [
        ("gw", "http://127.0.0.1:9/v1", 5, "active"),
        ("main", "https://api.openai.com/v1", 100, "active"),
    ]
    table = cli("accounts", "list").output
    assert table.splitlines()[0].split() == [
        "name",
        "type",
        "base_api",
        "priority",
        "models",
        "state",
        "until",
        "last_used",
        "error_rate_1h",
    ]
    assert "All accounts are active." in cli("cooldowns").output
    cli("accounts", "disable", "gw")
    cooldowns = json.loads(cli("cooldowns", "--json").output)
    assert cooldowns[0]["account"] == "gw" and cooldowns[0]["state"] == "disabled"
    assert "gw" in cli("cooldowns").output
    cli("accounts", "enable", "gw")
    cli("accounts", "reset", "gw")
    assert json.loads(cli("cooldowns", "--json").output) == []
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("relay.db"))
    assert TOKEN.encode() not in raw


def test_account_errors(cli: Any) -> None:
    cli("accounts", "add", "main", "--type", "openai-responses", "--token", TOKEN)
    assert "exists already" in cli("accounts", "add", "main", "--type", "openai-responses", "--token", TOKEN, code=1).output
    assert "empty" in cli("accounts", "add", "x", "--type", "openai-responses", "--token-stdin", input="\n", code=1).output
    assert "base_api" in cli("accounts", "add", "x", "--type", "openai-responses", "--token", "t", "--base-api", "nope", code=1).output
    assert "not one of" in cli("accounts", "add", "x", "--type", "vertex-ai", "--token", "t", code=2).output
    assert "not both" in cli("accounts", "add", "x", "--type", "openai-responses", "--token", "t", "--token-stdin", code=2).output
    assert "no account named 'ghost'" in cli("accounts", "reset", "ghost", code=1).output


def test_consumer_backend_type_warns_plainly(cli: Any) -> None:
    result = cli("accounts", "add", "chat", "--type", "openai", "--token-stdin", input=TOKEN)
    assert CONSUMER_BACKEND_WARNING in result.output
    assert "terms" in CONSUMER_BACKEND_WARNING and "risk" in CONSUMER_BACKEND_WARNING
    assert json.loads(cli("accounts", "list", "--json").output)[0]["base_api"] == "https://chatgpt.com/backend-api"
    assert "terms" in cli("accounts", "add", "--help").output


def test_wrong_secret_key_is_one_clear_line(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cli("accounts", "add", "main", "--type", "openai-responses", "--token", TOKEN)
    monkeypatch.setenv("RELAY_SECRET_KEY", generate_key())
    result = cli("accounts", "list", code=1)
    assert "does not match" in result.output
    monkeypatch.setenv("RELAY_SECRET_KEY", "short")
    assert "32 url-safe" in cli("accounts", "list", code=1).output


def test_every_command_has_help_with_an_example(cli: Any) -> None:
    commands = [
        ("keys", "issue"),
        ("keys", "list"),
        ("keys", "show"),
        ("keys", "revoke"),
        ("keys", "rotate"),
        ("keys", "permissions"),
        ("accounts", "add"),
        ("accounts", "list"),
        ("accounts", "show"),
        ("accounts", "reset"),
        ("accounts", "enable"),
        ("accounts", "disable"),
        ("accounts", "priority"),
        ("accounts", "rotate"),
        ("accounts", "remove"),
        ("cooldowns",),
        ("cooldowns", "clear"),
        ("sessions", "list"),
        ("sessions", "evict"),
        ("outcomes",),
        ("outcomes", "summary"),
        ("doctor",),
        ("secrets", "generate-key"),
        ("secrets", "rotate"),
        ("sandbox",),
    ]
    for command in commands:
        assert "Example" in cli(*command, "--help").output, command


def test_db_option_overrides_environment(cli: Any, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    cli("keys", "issue", "alice", "--db", str(other))
    assert other.exists()
    assert os.environ["RELAY_DATABASE"] != str(other)
    # The environment's database was never created, and listing does not create it.
    assert "no relay database at" in cli("keys", "list", "--json", code=1).output
    assert not Path(os.environ["RELAY_DATABASE"]).exists()


def test_operator_slips_get_one_clear_line(cli: Any, tmp_path: Path) -> None:
    not_a_database = tmp_path / "prices.csv"
    not_a_database.write_text("model,size,usd_per_second\n")
    assert "is not a relay database" in cli("accounts", "list", "--db", str(not_a_database), code=1).output
    assert "is not a relay database" in cli("doctor", "--db", str(not_a_database), code=1).output
    assert "no relay database at" in cli("sessions", "list", "--db", str(tmp_path / "typo" / "relay.db"), code=1).output
    assert (
        "no relay database at"
        in cli("accounts", "rotate", "main", "--token", TOKEN, "--db", str(tmp_path / "typo" / "relay.db"), code=1).output
    )
    assert not (tmp_path / "typo").exists()

    cli("accounts", "add", "main", "--type", "openai-responses", "--token", TOKEN)
    assert "-1" in cli("cooldowns", "--watch", "--interval", "-1", "--count", "2", code=2).output
    assert "no account named 'nobody'" in cli("sessions", "list", "--account", "nobody", code=1).output
    cli("accounts", "priority", "main", "-1")  # negative priorities are allowed, so this is a number
    assert json.loads(cli("accounts", "list", "--json").output)[0]["priority"] == -1
    cli("accounts", "proxy", "main", "http://127.0.0.1:3128")
    cli("accounts", "proxy", "main", "none")
    assert json.loads(cli("accounts", "show", "main", "--json").output)["proxy"] is None

    cli("keys", "issue", "alice")
    assert "WIDTHxHEIGHT" in cli("keys", "limits", "alice", "--sizes", "foo", code=1).output
    assert "Revoked key 'alice'." in cli("keys", "revoke", "alice").output
    assert "already revoked" in cli("keys", "revoke", "alice").output


def test_relayctl_and_a_relay_on_sqlite_load_neither_the_postgresql_driver_nor_the_server(tmp_path: Path) -> None:
    # Operators and scripts run relayctl many times a day, and each relay worker starts anew:
    # what only PostgreSQL users, `relayctl sandbox` or a schema change need loads when they do.
    database = tmp_path / "relay.db"
    made = Store(database)
    made.ensure_schema()
    made.close()
    probe = (
        "import sys, ops.cli, relay.app, relay.store\n"
        "store = relay.store.Store(sys.argv[1]); store.ensure_schema(); store.schema_status(); store.close()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'psycopg', 'psycopg_pool', 'uvicorn', 'sqlite_utils'}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('relay.sandbox')))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(database)], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.splitlines() == ["[]", "[]"]
