"""relayctl's operator commands beyond the basics: rotation, removal, sessions, outcomes, doctor, secrets."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN, free_port

from ops.observe_cmd import percentile, summarize
from relay.config import Settings
from relay.crypto import SecretBox, generate_key, read_key_file
from relay.keys import key_id_of, matches
from relay.records import WebhookEndpoint
from relay.sessions import session_hash
from relay.state import open_store
from relay.store import Outcome, Video
from relay.store.location import parse_location

NOW = time.time()


def store_of(tmp_path: Path) -> Any:
    store, _ = open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=os.environ["RELAY_SECRET_KEY"]))
    return store


def add(cli: Any, name: str, base_api: str = "http://127.0.0.1:9/v1") -> None:
    cli("accounts", "add", name, "--type", "openai-responses", "--token", TOKEN, "--base-api", base_api)


def test_keys_show_rotate_permissions(cli: Any, tmp_path: Path) -> None:
    first = json.loads(cli("keys", "issue", "alice", "--json").output)["key"]
    shown = json.loads(cli("keys", "show", "alice", "--json").output)
    assert shown["name"] == "alice" and shown["state"] == "active" and first not in json.dumps(shown)
    assert "alice" in cli("keys", "show", "alice").output
    rotated = json.loads(cli("keys", "rotate", "alice", "--grace", "1h", "--json").output)["key"]
    assert rotated != first and key_id_of(rotated) == key_id_of(first)
    record = store_of(tmp_path).key_by_name("alice")
    assert matches(record, rotated, time.time()) and matches(record, first, time.time())
    assert not matches(record, first, time.time() + 3601)
    again = json.loads(cli("keys", "rotate", "alice", "--json").output)["key"]
    record = store_of(tmp_path).key_by_name("alice")
    assert matches(record, again, time.time()) and not matches(record, rotated, time.time())
    assert "Copy it now" in cli("keys", "rotate", "alice", "--grace", "10m").output
    assert json.loads(cli("keys", "permissions", "alice", "--add", "all", "--json").output)["permissions"] == ["all", "openai"]
    assert json.loads(cli("keys", "permissions", "alice", "--remove", "openai", "--json").output)["permissions"] == ["all"]
    assert "no permission left" in cli("keys", "permissions", "alice", "--remove", "all", code=1).output
    assert "not one of" in cli("keys", "permissions", "alice", "--add", "nope", code=2).output
    cli("keys", "revoke", "alice")
    assert "revoked" in cli("keys", "rotate", "alice", code=1).output
    assert "duration" in cli("keys", "rotate", "nobody", "--grace", "forever", code=2).output
    assert "no key named 'nobody'" in cli("keys", "show", "nobody", code=1).output


def test_accounts_show_priority_rotate_remove(cli: Any, tmp_path: Path) -> None:
    add(cli, "main")
    shown = json.loads(cli("accounts", "show", "main", "--json").output)
    assert shown["credential"] == "stored encrypted" and shown["live_videos"] == 0 and shown["priority"] == 100
    cli("accounts", "priority", "main", "7")
    assert json.loads(cli("accounts", "show", "main", "--json").output)["priority"] == 7
    assert "Invalid value" in cli("accounts", "priority", "main", "high", code=2).output
    store = store_of(tmp_path)
    store.set_account_state("main", "unauthorized", now=time.time(), reason="upstream 401")
    cli("accounts", "rotate", "main", "--token-stdin", input="sk-new-credential-value\n")
    account = store.account("main")
    assert account.state == "active" and account.credential_rotated_at is not None
    _, box = open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=os.environ["RELAY_SECRET_KEY"]))
    assert box.decrypt(account.credential_encrypted) == "sk-new-credential-value"
    assert "empty" in cli("accounts", "rotate", "main", "--token-stdin", input="\n", code=1).output
    store.insert_video(
        Video(
            id="video_1",
            account="main",
            key_name="alice",
            kind="create",
            source_video_id=None,
            model="sora-2",
            seconds="4",
            billable_seconds=4.0,
            size="720x1280",
            status="queued",
            progress=0,
            created_at=NOW,
            recorded_at=NOW,
            finished_at=None,
            deleted_at=None,
            resource="{}",
        )
    )
    refused = cli("accounts", "remove", "main", code=1).output
    assert "owns 1 video" in refused and "--force" in refused
    cli("accounts", "remove", "main", "--force")
    assert json.loads(cli("accounts", "list", "--json").output) == []
    assert "no account named 'main'" in cli("accounts", "remove", "main", code=1).output
    # Its video still names it: a new account under the name would be sent its follow-ups.
    assert "removed account named 'main'" in cli("accounts", "add", "main", "--type", "openai-responses", "--token", "sk-x", code=1).output
    cli("accounts", "add", "main2", "--type", "openai-responses", "--token", "sk-x")


def test_remove_allowed_once_videos_expired(cli: Any, tmp_path: Path) -> None:
    add(cli, "old")
    store = store_of(tmp_path)
    store.insert_video(
        Video(
            id="video_2",
            account="old",
            key_name="alice",
            kind="create",
            source_video_id=None,
            model="sora-2",
            seconds="4",
            billable_seconds=4.0,
            size="720x1280",
            status="queued",
            progress=0,
            created_at=NOW,
            recorded_at=NOW,
            finished_at=None,
            deleted_at=None,
            resource="{}",
        )
    )
    store.update_video("video_2", status="completed", progress=100, expires_at=time.time() - 10, resource="{}", now=time.time())
    cli("accounts", "remove", "old")


def test_characters_keep_an_account_like_videos(cli: Any, tmp_path: Path) -> None:
    add(cli, "d")
    store_of(tmp_path).insert_character("char_1", account="d", key_name="alice", now=NOW)
    assert "1 character(s)" in cli("accounts", "remove", "d", code=1).output
    cli("accounts", "remove", "d", "--force")
    assert "removed account named 'd'" in cli("accounts", "add", "d", "--type", "openai-responses", "--token", "sk-x", code=1).output


def test_cooldowns_clear_and_watch(cli: Any, tmp_path: Path) -> None:
    add(cli, "main")
    store = store_of(tmp_path)
    store.set_account_state(
        "main", "rate_limited", now=time.time(), until=time.time() + 120, reason="upstream 429", last_error="Rate limit reached"
    )
    rows = json.loads(cli("cooldowns", "--json").output)
    assert rows[0]["account"] == "main" and 110 < rows[0]["seconds_left"] <= 120 and rows[0]["last_error"] == "Rate limit reached"
    watched = cli("cooldowns", "--watch", "--interval", "0.05", "--count", "2").output
    assert watched.count("rate_limited") == 2 and "Ctrl-C" in watched
    cli("cooldowns", "clear", "main")
    assert json.loads(cli("cooldowns", "--json").output) == []
    assert "no account named 'x'" in cli("cooldowns", "clear", "x", code=1).output


def test_upstream_words_cannot_forge_table_rows(cli: Any, tmp_path: Path) -> None:
    # An upstream's error message is stored as it came; printed, it must stay inside its cell.
    add(cli, "main")
    forged = "line1\nmain2    active   FORGED\x07 \u202eesrever"
    store_of(tmp_path).set_account_state(
        "main", "rate_limited", now=time.time(), until=time.time() + 120, reason="upstream 429", last_error=forged
    )
    for output in (cli("cooldowns").output, cli("accounts", "show", "main").output):
        assert "FORGED" in output
        assert not any(line.startswith("main2") for line in output.splitlines())
        assert "\x07" not in output and "\u202e" not in output and "\\n" in output
    assert json.loads(cli("cooldowns", "--json").output)[0]["last_error"] == forged


def test_sessions_list_and_evict(cli: Any, tmp_path: Path) -> None:
    add(cli, "a")
    add(cli, "b")
    store = store_of(tmp_path)
    for session, account in [("s1", "a"), ("s2", "a"), ("s3", "b")]:
        store.claim_session(session_hash(session), account, replacing=None, now=time.time(), ttl=600)
    rows = json.loads(cli("sessions", "list", "--json").output)
    assert sorted(r["account"] for r in rows) == ["a", "a", "b"]
    assert all(len(r["session"]) == 16 and r["session"] != "s1" for r in rows)
    assert "account" in cli("sessions", "list").output
    assert json.loads(cli("sessions", "evict", session_hash("s3")[:16], "--json").output) == {"evicted": 1}
    assert json.loads(cli("sessions", "evict", "--account", "a", "--json").output) == {"evicted": 2}
    assert "exactly one" in cli("sessions", "evict", code=2).output
    assert "exactly one" in cli("sessions", "evict", "--all", "--account", "a", code=2).output
    assert "No sticky sessions." in cli("sessions", "list").output


def test_outcomes_filters_and_summary(cli: Any, tmp_path: Path) -> None:
    add(cli, "a")
    store = store_of(tmp_path)
    now = time.time()
    rows = [
        Outcome(now - 7200, "req_old", "alice", "a", "openai-responses", "videos.create", 200, "none", 10.0),
        *[
            Outcome(now - 60 + i, f"req_{i}", "alice", "a", "openai-responses", "videos.create", 200, "none", float(i))
            for i in range(1, 19)
        ],
        Outcome(now - 30, "req_429", "bob", "a", "openai-responses", "videos.create", 429, "rate_limited", 100.0),
        Outcome(now - 20, "req_500", "bob", "b", "openai-responses", "videos.retrieve", 500, "server_error", 200.0),
    ]
    store.write_batch(rows, {}, {}, {})
    limited = json.loads(cli("outcomes", "--status", "429", "--json").output)
    assert [r["request_id"] for r in limited] == ["req_429"]
    assert [r["request_id"] for r in json.loads(cli("outcomes", "--key", "bob", "--account", "b", "--json").output)] == ["req_500"]
    assert len(json.loads(cli("outcomes", "--since", "1h", "--limit", "100", "--json").output)) == 20
    assert len(json.loads(cli("outcomes", "--limit", "3", "--json").output)) == 3
    assert "req_429" in cli("outcomes", "--error-class", "rate_limited").output
    summary = {r["account"]: r for r in json.loads(cli("outcomes", "summary", "--since", "1h", "--json").output)}
    # Account a in the last hour: latencies 1..18 and 100 ms (19 attempts), one 429. Nearest rank:
    # p50 is the ceil(0.5 * 19) = 10th value, p95 the ceil(0.95 * 19) = 19th.
    assert summary["a"]["requests"] == 19 and summary["a"]["errors"] == 1
    assert summary["a"]["error_classes"] == {"rate_limited": 1}
    assert summary["a"]["p50_ms"] == 10.0 and summary["a"]["p95_ms"] == 100.0
    assert summary["b"]["error_classes"] == {"server_error": 1}
    assert "p95_ms" in cli("outcomes", "summary").output
    assert "duration" in cli("outcomes", "--since", "yesterday", code=2).output


def test_percentile_and_summarize() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile(list(map(float, range(1, 101))), 0.95) == 95.0
    assert summarize([]) == []


def test_doctor(cli: Any, tmp_path: Path, sandbox_process: Any) -> None:
    missing = cli("doctor", "--db", str(tmp_path / "absent.db"), code=1).output
    assert "does not exist" in missing
    cli("keys", "issue", "alice")
    assert "no upstream account" in cli("doctor", code=1).output
    add(cli, "good", sandbox_process.base_api())
    checks = {c["check"]: c for c in json.loads(cli("doctor", "--json").output)}
    assert checks["reach good"]["status"] == "ok" and checks["secret key"]["status"] == "ok"
    assert checks["database integrity"]["detail"] == "ok" and checks["database journal"]["detail"] == "wal"
    add(cli, "dead", f"http://127.0.0.1:{free_port()}/v1")
    result = cli("doctor", code=1)
    assert "reach dead" in result.output and "ConnectError" in result.output
    assert TOKEN not in result.output


def test_doctor_reaches_an_account_through_its_proxy(cli: Any, sandbox_process: Any) -> None:
    """It said 'ok' for an account whose proxy was down, while every create on it failed."""
    add(cli, "viaproxy", sandbox_process.base_api())
    cli("accounts", "proxy", "viaproxy", f"http://user:pw-SECRET@127.0.0.1:{free_port()}")
    result = cli("doctor", "--json", code=1)
    check = {c["check"]: c for c in json.loads(result.output)}["reach viaproxy"]
    assert check["status"] == "fail" and "through http://***@127.0.0.1:" in check["detail"], check
    assert "pw-SECRET" not in result.output and TOKEN not in result.output
    cli("accounts", "proxy", "viaproxy", "--clear")
    assert {c["check"]: c for c in json.loads(cli("doctor", "--json").output)}["reach viaproxy"]["status"] == "ok"


def test_doctor_reports_wrong_key(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    add(cli, "main")
    monkeypatch.setenv("RELAY_SECRET_KEY", generate_key())
    checks = {c["check"]: c for c in json.loads(cli("doctor", "--json", code=1).output)}
    assert checks["secret key"]["status"] == "fail" and "does not match" in checks["secret key"]["detail"]


def test_secrets_rotate_with_key_file(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_SECRET_KEY")
    add(cli, "main")
    key_file = tmp_path / "relay.db.key"
    before = read_key_file(key_file)
    assert json.loads(cli("secrets", "rotate", "--json").output) == {"reencrypted": 1, "webhook_secrets_reencrypted": 0}
    after = read_key_file(key_file)
    assert len(after) == 2 and after[1:] == before and key_file.stat().st_mode & 0o777 == 0o600
    store, _ = open_store(Settings(database=parse_location(tmp_path / "relay.db")))
    credential = store.account("main").credential_encrypted
    assert SecretBox(after[:1]).decrypt(credential) == TOKEN  # the new key alone reads it
    assert SecretBox(before).decrypt_or_none(credential) is None
    assert "Re-encrypted 1 credential" in cli("secrets", "rotate").output
    assert TOKEN in SecretBox(read_key_file(key_file)[:1]).decrypt(store.account("main").credential_encrypted)


def test_secrets_rotate_reencrypts_webhook_signing_secrets(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_SECRET_KEY")
    add(cli, "main")
    key_file = tmp_path / "relay.db.key"
    store, _ = open_store(Settings(database=parse_location(tmp_path / "relay.db")))
    old = SecretBox(read_key_file(key_file))
    secret, previous = "whsec_" + "A" * 44, "whsec_" + "B" * 44
    now = time.time()
    endpoint = WebhookEndpoint(
        id="we_" + "0" * 32,
        key_name="alice",
        name="hooks",
        url="https://hooks.example.com/",
        event_types=("video.completed",),
        secret_encrypted=old.encrypt(secret),
        secret_hint="whsec_...AAAA",
        previous_secret_encrypted=old.encrypt(previous),
        previous_secret_until=now + 3600,
        created_at=now,
        updated_at=now,
        disabled_at=None,
        disabled_reason=None,
        failing_since=None,
    )
    store.create_webhook_endpoint(endpoint)
    assert "Re-encrypted 1 credential(s) and 1 webhook endpoint(s)' signing secrets under" in cli("secrets", "rotate").output
    new = SecretBox(read_key_file(key_file)[:1])  # the new key alone reads both secrets
    stored = store.webhook_endpoint(endpoint.id)
    assert stored is not None and stored.previous_secret_encrypted is not None
    assert new.decrypt(stored.secret_encrypted) == secret and new.decrypt(stored.previous_secret_encrypted) == previous


def test_secrets_rotate_with_env_key(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add(cli, "main")
    old = os.environ["RELAY_SECRET_KEY"]
    assert "holds one key" in cli("secrets", "rotate", code=1).output
    new = generate_key()
    monkeypatch.setenv("RELAY_SECRET_KEY", f"{new},{old}")
    cli("secrets", "rotate")
    monkeypatch.setenv("RELAY_SECRET_KEY", new)
    assert json.loads(cli("accounts", "list", "--json").output)[0]["name"] == "main"
    store, box = open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=new))
    assert box.decrypt(store.account("main").credential_encrypted) == TOKEN
