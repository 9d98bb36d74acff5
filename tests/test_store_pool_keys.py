"""Store, scheduler and key rules, without any server."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.datastructures import Headers

from relay.accounts import AccountInputError, add_account, cooldowns, reset_account
from relay.config import Settings
from relay.crypto import SecretBox, SecretKeyError, generate_key
from relay.keys import AuthError, KeyCache, KeyInputError, allows, authenticate, issue_key, key_id_of, matches, rotate_key
from relay.pool import Pool
from relay.state import open_store
from relay.store import AlreadyExists, Store
from relay.store.location import parse_location

NOW = 1_800_000_000.0


@pytest.fixture
def opened(tmp_path: Path) -> tuple[Store, SecretBox]:
    return open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=generate_key()))


def add(store: Store, box: SecretBox, name: str, priority: int = 100) -> None:
    add_account(
        store,
        box,
        name=name,
        type="openai-responses",
        credential=f"sk-{name}-secret",
        base_api="http://127.0.0.1:9/v1",
        priority=priority,
        now=NOW,
    )


def pool_of(store: Store, box: SecretBox) -> Pool:
    pool = Pool()
    pool.load(store.list_accounts(), box.decrypt_or_none)
    return pool


def test_priority_then_least_recently_used(opened: tuple[Store, SecretBox]) -> None:
    store, box = opened
    add(store, box, "a", priority=1)
    add(store, box, "b", priority=1)
    add(store, box, "c", priority=2)
    pool = pool_of(store, box)
    picks = []
    for i in range(4):
        chosen = pool.pick(NOW + i)
        assert chosen is not None
        pool.mark_used(chosen.name, NOW + i)
        picks.append(chosen.name)
    assert picks == ["a", "b", "a", "b"]
    store.set_account_state("a", "rate_limited", now=NOW, until=NOW + 100)
    store.set_account_state("b", "unauthorized", now=NOW)
    pool = pool_of(store, box)
    assert pool.pick(NOW + 10).name == "c"  # type: ignore[union-attr]
    # An expired rate limit counts as active again, without anyone resetting it.
    assert pool.pick(NOW + 101).name == "a"  # type: ignore[union-attr]


def test_disabled_and_no_account(opened: tuple[Store, SecretBox]) -> None:
    store, box = opened
    add(store, box, "a")
    store.set_account_enabled("a", False)
    pool = pool_of(store, box)
    assert pool.pick(NOW) is None
    assert [c.state for c in cooldowns(store, NOW)] == ["disabled"]


def test_rate_limit_repeats_extend_one_cooldown(opened: tuple[Store, SecretBox]) -> None:
    store, box = opened
    add(store, box, "a")
    store.set_account_state("a", "rate_limited", now=NOW, until=NOW + 60, reason="r")
    store.set_account_state("a", "rate_limited", now=NOW + 1, until=NOW + 30, reason="r")
    account = store.account("a")
    assert account.state_since == NOW and account.state_until == NOW + 60
    [cooldown] = cooldowns(store, NOW + 10)
    assert cooldown.seconds_left == 50 and cooldown.state == "rate_limited"
    reset_account(store, "a", now=NOW + 11)
    assert store.account("a").effective_state(NOW + 11) == "active"


def test_state_change_evicts_sessions(opened: tuple[Store, SecretBox]) -> None:
    store, box = opened
    add(store, box, "a")
    add(store, box, "b")
    assert store.claim_session("s1", "a", replacing=None, now=NOW, ttl=60) == "a"
    assert store.claim_session("s2", "a", replacing=None, now=NOW, ttl=60) == "a"
    assert store.claim_session("s3", "b", replacing=None, now=NOW, ttl=60) == "b"
    assert store.set_account_state("a", "unauthorized", now=NOW, evict_sessions=True) == 2
    assert store.session_account("s1", NOW) is None
    assert store.session_account("s3", NOW) == "b"


def test_claim_session_keeps_a_live_mapping_made_elsewhere(opened: tuple[Store, SecretBox]) -> None:
    store, box = opened
    assert store.claim_session("s", "a", replacing=None, now=NOW, ttl=60) == "a"
    # A second worker that did not see the mapping loses the race: the first mapping stands.
    assert store.claim_session("s", "b", replacing=None, now=NOW, ttl=60) == "a"
    # A worker that saw `a` unusable replaces it.
    assert store.claim_session("s", "b", replacing="a", now=NOW, ttl=60) == "b"
    # Expired mappings are gone.
    assert store.session_account("s", NOW + 61) is None


def test_credentials_encrypted_and_wrong_key_fails_loudly(tmp_path: Path) -> None:
    store, box = open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=generate_key()))
    add(store, box, "a")
    store.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("relay.db*"))
    assert b"sk-a-secret" not in raw
    with pytest.raises(SecretKeyError, match="does not match"):
        open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=generate_key()))
    with pytest.raises(SecretKeyError, match="32 url-safe"):
        open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key="too-short"))


def test_key_file_created_once_with_private_mode(tmp_path: Path) -> None:
    settings = Settings(database=parse_location(tmp_path / "relay.db"))
    store, box = open_store(settings)
    assert settings.key_file.stat().st_mode & 0o777 == 0o600
    first = settings.key_file.read_bytes()
    add(store, box, "a")
    store2, box2 = open_store(settings)
    assert settings.key_file.read_bytes() == first
    assert box2.decrypt(store2.account("a").credential_encrypted) == "sk-a-secret"


def test_wal_mode(opened: tuple[Store, SecretBox]) -> None:
    store, _ = opened
    assert sqlite3.connect(store.location.sqlite_path()).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keys_are_hashed_and_checked(opened: tuple[Store, SecretBox]) -> None:
    store, _ = opened
    issued = issue_key(store, "alice", ["openai"], now=NOW)
    record = store.key_by_name("alice")
    assert issued.key not in record.hash and issued.key.split("-", 2)[2] not in record.hash
    assert key_id_of(issued.key) == record.id
    assert matches(record, issued.key, NOW)
    assert not matches(record, issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B"), NOW)
    assert allows(record, "openai") and not allows(record, "other")
    assert allows(issue_key(store, "root", ["all"]).record, "openai")
    with pytest.raises(AlreadyExists):
        issue_key(store, "alice", ["openai"])
    with pytest.raises(KeyInputError, match="unknown permission"):
        issue_key(store, "bob", ["videos"])
    with pytest.raises(KeyInputError, match="name"):
        issue_key(store, "bad name", ["openai"])


def test_a_rotated_key_works_before_the_cache_is_refreshed(opened: tuple[Store, SecretBox]) -> None:
    store, _ = opened
    old = issue_key(store, "alice", ["openai"], now=NOW).key
    cache = KeyCache(store)

    def auth(key: str) -> str:
        return anyio.run(lambda: authenticate(Headers({"authorization": f"Bearer {key}"}), cache, service="openai", now=NOW)).name

    assert auth(old) == "alice"  # now cached
    new = rotate_key(store, "alice", now=NOW).key  # another process rotates it; this cache is not cleared
    assert auth(new) == "alice"
    with pytest.raises(AuthError):
        auth(old)
    with pytest.raises(AuthError):
        auth(new[:-1] + ("A" if new[-1] != "A" else "B"))


@pytest.mark.parametrize("presented", ["", "rk-", "sk-123", "rk-zzzzzzzzzzzzzzzz-abc", "rk-0123456789abcdef_abc", "rk-0123456789abcdef-"])
def test_malformed_keys_have_no_id(presented: str) -> None:
    assert key_id_of(presented) is None


def test_account_input_validation(opened: tuple[Store, SecretBox]) -> None:
    store, box = opened
    with pytest.raises(AccountInputError, match="empty"):
        add_account(store, box, name="x", type="openai-responses", credential="  ")
    with pytest.raises(AccountInputError, match="base_api"):
        add_account(store, box, name="x", type="openai-responses", credential="t", base_api="ftp://h")
    with pytest.raises(AccountInputError, match="type"):
        add_account(store, box, name="x", type="vertex-ai", credential="t")
    chatgpt = add_account(store, box, name="c", type="openai", credential="t")
    api = add_account(store, box, name="k", type="openai-responses", credential="t")
    assert chatgpt.base_api == "https://chatgpt.com/backend-api"
    assert api.base_api == "https://api.openai.com/v1"


def test_concurrent_429s_from_several_workers_make_one_cooldown(tmp_path: Path) -> None:
    settings = Settings(database=parse_location(tmp_path / "relay.db"), secret_key=generate_key())
    store, box = open_store(settings)
    add(store, box, "a")
    add(store, box, "b")
    store.claim_session("s", "a", replacing=None, now=NOW, ttl=600)
    # Eight "workers", each with its own connection, report the same 429 at once.
    workers = [Store(settings.database) for _ in range(8)]
    evicted: list[int] = []
    barrier = threading.Barrier(len(workers))

    def report(worker: Store, index: int) -> None:
        barrier.wait()
        evicted.append(
            worker.set_account_state(
                "a", "rate_limited", now=NOW + index * 0.001, until=NOW + 60 + index, reason="upstream 429", evict_sessions=True
            )
        )

    threads = [threading.Thread(target=report, args=(worker, i)) for i, worker in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    account = store.account("a")
    assert account.state == "rate_limited" and account.state_until == NOW + 60 + 7
    assert NOW <= account.state_since <= NOW + 0.008  # the first report's time, kept by the others
    assert sorted(evicted) == [0] * 7 + [1]  # the session was evicted exactly once
    assert store.account("b").state == "active"


def test_a_cooldown_applied_while_a_reload_reads_survives_the_reload_and_the_next_reads_the_database(
    opened: tuple[Store, SecretBox],
) -> None:
    """A 429 answered while another thread reloads the accounts: the reload read the account
    before the cooldown was stored, and must not put it back in rotation."""
    store, box = opened
    add(store, box, "a")
    add(store, box, "b")
    pool = pool_of(store, box)

    def read_then_cooldown() -> list[Any]:
        read = store.list_accounts()  # the reload's read, before the cooldown below is stored
        store.set_account_state("a", "rate_limited", now=NOW, until=NOW + 60)
        pool.apply_state("a", "rate_limited", now=NOW, reason="upstream 429", until=NOW + 60)
        return read

    assert pool.reload(read_then_cooldown, box.decrypt_or_none) is True  # kept, so the next reload reads again
    assert pool.usable("a", NOW + 1) is None and pool.pick(NOW + 1).name == "b"  # type: ignore[union-attr]
    # The next reload reads the database, which holds the cooldown by then: nothing to keep.
    assert pool.reload(store.list_accounts, box.decrypt_or_none) is False
    assert pool.usable("a", NOW + 1) is None
    # An operator's reset stored after this worker's own change wins at the next reload.
    reset_account(store, "a", now=NOW + 2)
    assert pool.reload(store.list_accounts, box.decrypt_or_none) is False
    assert pool.usable("a", NOW + 3) is not None
