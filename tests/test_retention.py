"""Pruning: what always goes (expired rows), what goes after the operator's windows (outcomes,
finished webhook deliveries), what never goes (pending deliveries, jobs), and in batches."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from test_relay import metric_value

from relay.config import ConfigError, load_settings
from relay.store import Store
from relay.store.retention import (
    BATCH_ROWS,
    EXPIRED_RULES,
    OUTCOMES_RULE,
    RetentionPolicy,
    count_prunable,
    prune,
    pruning,
)

BACKENDS = ("sqlite", "postgresql")

NOW = 1_800_000_000.0
DAY = 86400.0


def add_outcomes(store: Store, *times: float) -> None:
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO outcomes (ts, request_id, route, error_class) VALUES (?, ?, 'create', 'none')",
            [(ts, f"req_{n}") for n, ts in enumerate(times)],
        )


def add_delivery(store: Store, delivery_id: str, *, state: str, created_at: float, attempts: int = 2) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, body, state, attempts, created_at)"
            " VALUES (?, 'we_1', ?, 'video.completed', ?, ?, ?, ?)",
            (delivery_id, f"evt_{delivery_id}", b"{}", state, attempts, created_at),
        )
        conn.executemany(
            "INSERT INTO webhook_attempts (delivery_id, ts, status) VALUES (?, ?, 500)",
            [(delivery_id, created_at + n) for n in range(attempts)],
        )


def fill(store: Store) -> None:
    """Two of everything: one past its time, one not; plus a job, which nothing prunes."""
    with store.transaction() as conn:
        for session_hash, expires_at in (("s_expired", NOW - 1), ("s_live", NOW + 3600)):
            conn.execute(
                "INSERT INTO sessions (session_hash, account, created_at, last_used_at, expires_at) VALUES (?, 'acct', ?, ?, ?)",
                (session_hash, NOW - 7200, NOW - 7200, expires_at),
            )
        for idempotency_key, state, expires_at in (
            ("k_expired", "done", NOW - 1),
            ("k_live", "done", NOW + 60),
            ("k_stale", "pending", NOW),
        ):
            conn.execute(
                "INSERT INTO idempotency (key_name, idempotency_key, request_hash, state, created_at, expires_at)"
                " VALUES ('alice', ?, 'h', ?, ?, ?)",
                (idempotency_key, state, NOW - DAY, expires_at),
            )
        conn.executemany("INSERT INTO request_log (key_name, ts, slots) VALUES ('alice', ?, 1)", [(NOW - 2 * DAY,), (NOW - 30,)])
        conn.execute(
            "INSERT INTO videos (id, key_name, account, kind, status, created_at, recorded_at, resource)"
            " VALUES ('video_old', 'alice', 'acct', 'create', 'completed', ?, ?, '{}')",
            (NOW - 400 * DAY, NOW - 400 * DAY),
        )
    add_outcomes(store, NOW - 31 * DAY, NOW - 29 * DAY)
    add_delivery(store, "wd_old_delivered", state="delivered", created_at=NOW - 8 * DAY)
    add_delivery(store, "wd_old_failed", state="failed", created_at=NOW - 8 * DAY)
    add_delivery(store, "wd_old_pending", state="pending", created_at=NOW - 8 * DAY)
    add_delivery(store, "wd_new_delivered", state="delivered", created_at=NOW - 6 * DAY)


def column(store: Store, sql: str) -> list[Any]:
    with store.reading() as conn:
        return sorted(row[0] for row in conn.execute(sql))


def test_expired_rows_go_and_history_stays_without_a_window(store: Store) -> None:
    fill(store)
    policy = RetentionPolicy()

    assert count_prunable(store, policy, NOW) == {"sessions": 1, "idempotency": 2, "request_log": 1}
    assert prune(store, policy, NOW) == {"sessions": 1, "idempotency": 2, "request_log": 1}

    assert column(store, "SELECT session_hash FROM sessions") == ["s_live"]
    # An expired claim is free for the key's next use either way (relay.store.idempotency).
    assert column(store, "SELECT idempotency_key FROM idempotency") == ["k_live"]
    assert column(store, "SELECT ts FROM request_log") == [NOW - 30]
    assert len(column(store, "SELECT id FROM outcomes")) == 2
    assert len(column(store, "SELECT id FROM webhook_deliveries")) == 4
    assert len(column(store, "SELECT delivery_id FROM webhook_attempts")) == 8
    assert prune(store, policy, NOW) == {"sessions": 0, "idempotency": 0, "request_log": 0}


def test_history_goes_after_its_window_and_pending_deliveries_and_jobs_never(store: Store) -> None:
    fill(store)
    policy = RetentionPolicy(outcomes_days=30, webhook_deliveries_days=7)
    expected = {"sessions": 1, "idempotency": 2, "request_log": 1, "outcomes": 1, "webhook_deliveries": 2}

    assert count_prunable(store, policy, NOW) == expected
    assert prune(store, policy, NOW) == expected

    assert column(store, "SELECT ts FROM outcomes") == [NOW - 29 * DAY]
    assert column(store, "SELECT id FROM webhook_deliveries") == ["wd_new_delivered", "wd_old_pending"]
    # A pruned delivery's attempts go with it; the others keep theirs.
    assert column(store, "SELECT DISTINCT delivery_id FROM webhook_attempts") == ["wd_new_delivered", "wd_old_pending"]
    assert column(store, "SELECT id FROM videos") == ["video_old"]


def test_a_large_table_goes_in_batches(store: Store) -> None:
    add_outcomes(store, *([NOW - 100 * DAY] * (2 * BATCH_ROWS + 7)), NOW)

    steps = [step for step in pruning(store, RetentionPolicy(outcomes_days=1), NOW) if step[0] == "outcomes"]

    assert steps == [("outcomes", BATCH_ROWS), ("outcomes", BATCH_ROWS), ("outcomes", 7)]
    assert column(store, "SELECT ts FROM outcomes") == [NOW]


def test_a_row_changed_after_it_was_read_stays(store: Store) -> None:
    fill(store)
    sessions, idempotency = EXPIRED_RULES
    session_keys = store.prunable(sessions, NOW)
    idempotency_keys = store.prunable(idempotency, NOW)
    # Meanwhile the session is used again and the Idempotency-Key claimed anew.
    with store.transaction() as conn:
        conn.execute("UPDATE sessions SET expires_at = ? WHERE session_hash = 's_expired'", (NOW + 3600,))
        conn.execute("UPDATE idempotency SET expires_at = ? WHERE idempotency_key = 'k_expired'", (NOW + DAY,))

    assert store.prune_rows(sessions, NOW, session_keys) == 0
    assert store.prune_rows(idempotency, NOW, idempotency_keys) == 1  # k_stale
    assert column(store, "SELECT session_hash FROM sessions") == ["s_expired", "s_live"]
    assert column(store, "SELECT idempotency_key FROM idempotency") == ["k_expired", "k_live"]


def test_outcomes_are_found_by_their_time_index(tmp_path: Any) -> None:
    store = Store(tmp_path / "relay.db")  # SQLite's plan: PostgreSQL's depends on its statistics
    store.ensure_schema()
    with store.reading() as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM outcomes WHERE {OUTCOMES_RULE.condition} LIMIT 10", (NOW,))
        )
    store.close()
    assert "idx_outcomes_ts" in plan


# -- settings and the CLI ----------------------------------------------------------------------


def test_windows_come_from_the_environment() -> None:
    settings = load_settings({"RELAY_KEEP_OUTCOMES_DAYS": "90", "RELAY_KEEP_WEBHOOK_DELIVERIES_DAYS": "30.5"})
    assert settings.retention == RetentionPolicy(outcomes_days=90.0, webhook_deliveries_days=30.5)
    assert load_settings({}).retention == RetentionPolicy()
    assert load_settings({"RELAY_KEEP_OUTCOMES_DAYS": " "}).retention == RetentionPolicy()


@pytest.mark.parametrize("raw", ["0", "0.5", "-3", "inf", "nan", "ninety"])
def test_a_window_under_a_day_or_not_a_number_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="RELAY_KEEP_OUTCOMES_DAYS must be a number of days >= 1"):
        load_settings({"RELAY_KEEP_OUTCOMES_DAYS": raw})


def test_relayctl_db_prune(cli: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cli("db", "init")
    store = Store(tmp_path / "relay.db")
    now = time.time()
    add_outcomes(store, now - 100 * DAY, now - 100 * DAY, now)
    add_delivery(store, "wd_old", state="delivered", created_at=now - 100 * DAY)

    dry = json.loads(cli("db", "prune", "--outcomes-older-than", "90d", "--dry-run", "--json").output)
    assert {"table": "outcomes", "would_delete": 2} in dry
    assert len(column(store, "SELECT id FROM outcomes")) == 3

    shown = cli("db", "prune", "--outcomes-older-than", "90d").output
    assert shown.splitlines()[:2] == ["table        deleted", "-----------  -------"]
    assert "outcomes     2" in shown
    assert "Kept for good (no window given): webhook deliveries." in shown
    assert len(column(store, "SELECT id FROM outcomes")) == 1

    # The relay's own windows are the defaults.
    monkeypatch.setenv("RELAY_KEEP_WEBHOOK_DELIVERIES_DAYS", "30")
    done = json.loads(cli("db", "prune", "--json").output)
    assert {"table": "webhook_deliveries", "deleted": 1} in done
    assert column(store, "SELECT id FROM webhook_deliveries") == []

    refused = cli("db", "prune", "--deliveries-older-than", "12h", code=2)
    assert "must be at least 1d (one day)" in refused.output
    store.close()


# -- the relay's own pruning -------------------------------------------------------------------


def test_the_relay_prunes_by_itself_and_counts_it(make_relay: Any) -> None:
    relay = make_relay(retention=RetentionPolicy(outcomes_days=1), retention_interval_seconds=1.0)
    now = time.time()
    add_outcomes(relay.state.store, *([now - 2 * DAY] * 5), now)
    outcomes = 'relay_pruned_rows_total{table="outcomes"}'
    deadline = time.monotonic() + 10
    while metric_value(relay, outcomes) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert metric_value(relay, outcomes) == 5
    assert column(relay.state.store, "SELECT ts FROM outcomes") == [now]
    assert metric_value(relay, 'relay_pruned_rows_total{table="webhook_deliveries"}') == 0
