"""The webhook store on both databases: endpoints, events queued with the job's final status,
deliveries claimed under a lease by one owner at a time, attempts recorded, and schema step 3
(webhook tables, and the job watcher's columns with the unfinished jobs of older releases watched)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_sql
from test_store_concurrency import race

from relay.store import (
    SCHEMA_VERSION,
    EndpointLimitReached,
    NotFound,
    Store,
    WebhookDelivery,
    WebhookEndpoint,
    enqueue_video_event,
    schema,
)
from relay.store.copy import copy_database
from relay.store.location import parse_location

BACKENDS = ("sqlite", "postgresql")

T0 = 1_800_000_000.0
DAY = 86400.0


def endpoint(
    number: int, *, key: str = "alice", events: tuple[str, ...] = ("video.completed", "video.failed"), at: float = T0
) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=f"we_{number:032x}",
        key_name=key,
        name=f"hook {number}",
        url=f"https://hooks{number}.example/in",
        event_types=events,
        secret_encrypted=f"encrypted-{number}",
        secret_hint=f"whsec_...{number:04d}",
        previous_secret_encrypted=None,
        previous_secret_until=None,
        created_at=at,
        updated_at=at,
        disabled_at=None,
        disabled_reason=None,
        failing_since=None,
    )


def enqueue(store: Store, video_id: str, event_type: str = "video.completed", *, key: str = "alice", now: float = T0) -> int:
    with store.transaction() as conn:
        return enqueue_video_event(conn, key_name=key, video_id=video_id, event_type=event_type, now=now)


def only_delivery(store: Store, endpoint_id: str) -> WebhookDelivery:
    (delivery,) = store.list_webhook_deliveries(endpoint_id=endpoint_id)
    return delivery


def failed(store: Store, delivery_id: str, owner: str, *, now: float, retry_at: float | None) -> bool:
    return store.record_delivery_attempt(
        delivery_id, owner, status=500, error="http_error", delivered=False, next_attempt_at=retry_at, latency_seconds=0.2, now=now
    )


def delivered(store: Store, delivery_id: str, owner: str, *, now: float) -> bool:
    return store.record_delivery_attempt(
        delivery_id, owner, status=204, error=None, delivered=True, next_attempt_at=None, latency_seconds=0.1, now=now
    )


# -- endpoints ----------------------------------------------------------------------------------------


def test_endpoints_are_stored_listed_newest_first_per_key_and_paged(store: Store) -> None:
    for number in range(5):
        store.create_webhook_endpoint(endpoint(number, at=T0 + number))
    store.create_webhook_endpoint(endpoint(9, key="bob", at=T0 + 2.5))
    assert store.webhook_endpoint(endpoint(3).id) == endpoint(3, at=T0 + 3)
    assert store.webhook_endpoint("we_nope") is None

    page, more = store.list_webhook_endpoints("alice", limit=2)
    assert [e.id for e in page] == [endpoint(4).id, endpoint(3).id] and more
    page, more = store.list_webhook_endpoints("alice", after=page[-1].id, limit=2)
    assert [e.id for e in page] == [endpoint(2).id, endpoint(1).id] and more
    page, more = store.list_webhook_endpoints("alice", after=page[-1].id, limit=2)
    assert [e.id for e in page] == [endpoint(0).id] and not more
    # Another key's id is no cursor into alice's endpoints.
    assert store.list_webhook_endpoints("alice", after=endpoint(9).id) == ([], False)
    everyone, _ = store.list_webhook_endpoints(None)
    assert [e.key_name for e in everyone] == ["alice", "alice", "bob", "alice", "alice", "alice"]


def test_a_key_gets_no_more_endpoints_than_its_cap(store: Store) -> None:
    for number in range(3):
        store.create_webhook_endpoint(endpoint(number), max_per_key=3)
    with pytest.raises(EndpointLimitReached):
        store.create_webhook_endpoint(endpoint(3), max_per_key=3)
    store.create_webhook_endpoint(endpoint(4, key="bob"), max_per_key=3)
    assert len(store.list_webhook_endpoints("alice")[0]) == 3


def test_update_moves_updated_at_only_for_a_change_and_enables_again(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    same = store.update_webhook_endpoint(endpoint(1).id, name="hook 1", url=None, event_types=None, now=T0 + 10)
    assert same == endpoint(1)
    changed = store.update_webhook_endpoint(endpoint(1).id, name="renamed", url=None, event_types=("video.failed",), now=T0 + 20)
    assert (changed.name, changed.url, changed.event_types, changed.updated_at) == ("renamed", endpoint(1).url, ("video.failed",), T0 + 20)

    store.disable_webhook_endpoint(endpoint(1).id, "failing", T0 + 30)
    disabled = store.webhook_endpoint(endpoint(1).id)
    assert disabled is not None and (disabled.status, disabled.disabled_at, disabled.disabled_reason) == ("disabled", T0 + 30, "failing")
    enabled = store.update_webhook_endpoint(endpoint(1).id, name=None, url=None, event_types=None, now=T0 + 40)
    assert (enabled.status, enabled.disabled_reason, enabled.failing_since, enabled.updated_at) == ("enabled", None, None, T0 + 20)
    with pytest.raises(NotFound):
        store.update_webhook_endpoint("we_nope", name="x", url=None, event_types=None, now=T0)


def test_rotation_keeps_the_old_secret_only_for_a_grace(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    kept = store.rotate_webhook_secret(
        endpoint(1).id, secret_encrypted="new", secret_hint="whsec_...wxyz", keep_previous_until=T0 + DAY, now=T0 + 5
    )
    assert (kept.secret_encrypted, kept.previous_secret_encrypted, kept.previous_secret_until) == ("new", "encrypted-1", T0 + DAY)
    assert (kept.secret_hint, kept.updated_at) == ("whsec_...wxyz", T0 + 5)
    dropped = store.rotate_webhook_secret(
        endpoint(1).id, secret_encrypted="newer", secret_hint="whsec_...abcd", keep_previous_until=None, now=T0 + 6
    )
    assert (dropped.secret_encrypted, dropped.previous_secret_encrypted, dropped.previous_secret_until) == ("newer", None, None)
    with pytest.raises(NotFound):
        store.rotate_webhook_secret("we_nope", secret_encrypted="x", secret_hint="x", keep_previous_until=None, now=T0)


# -- events and deliveries ------------------------------------------------------------------------


def test_an_event_goes_to_each_enabled_subscribed_endpoint_of_the_key_with_one_body(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    store.create_webhook_endpoint(endpoint(2, events=("video.completed",)))
    store.create_webhook_endpoint(endpoint(3, events=("video.failed",)))
    store.create_webhook_endpoint(endpoint(4))
    store.create_webhook_endpoint(endpoint(5, key="bob"))
    store.disable_webhook_endpoint(endpoint(4).id, "operator", T0)

    assert enqueue(store, "video_abc", now=T0 + 0.75) == 2
    first, second = store.list_webhook_deliveries(endpoint_id=endpoint(1).id), store.list_webhook_deliveries(endpoint_id=endpoint(2).id)
    (one,), (two,) = first, second
    assert one.event_id == two.event_id and one.body == two.body and one.id != two.id
    assert one.id.startswith("wh_") and len(one.id) == 35 and one.event_id.startswith("evt_") and len(one.event_id) == 36
    assert (
        one.body
        == json.dumps(
            {"id": one.event_id, "object": "event", "created_at": int(T0), "type": "video.completed", "data": {"id": "video_abc"}},
            separators=(",", ":"),
        ).encode()
    )
    assert (one.state, one.attempts, one.next_attempt_at, one.video_id, one.event_type) == (
        "pending",
        0,
        T0 + 0.75,
        "video_abc",
        "video.completed",
    )
    # The disabled endpoint, the one not subscribed and bob's get nothing.
    for other in (3, 4, 5):
        assert store.list_webhook_deliveries(endpoint_id=endpoint(other).id) == []

    assert enqueue(store, "video_abc", "video.failed") == 2  # endpoints 1 and 3
    assert enqueue(store, "video_abc", key="carol") == 0
    with pytest.raises(ValueError, match="unknown webhook event type"):
        enqueue(store, "video_abc", "batch.completed")


def test_an_event_written_in_a_transaction_that_fails_is_not_queued(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    with pytest.raises(RuntimeError), store.transaction() as conn:
        enqueue_video_event(conn, key_name="alice", video_id="video_x", event_type="video.completed", now=T0)
        raise RuntimeError("the job's settlement failed")
    assert store.list_webhook_deliveries() == []


def test_a_claim_is_exclusive_across_owners(database: str, store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    store.create_webhook_endpoint(endpoint(2))
    for number in range(20):
        enqueue(store, f"video_{number}", now=T0 + number)
    stores = [Store(database) for _ in range(4)]
    try:
        claims = race(
            stores,
            lambda s, index: [d.id for d, _ in s.claim_due_deliveries(f"owner-{index}", now=T0 + 100, lease_seconds=60, limit=7)],
            per_store=2,
        )
    finally:
        for opened in stores:
            opened.close()
    claimed = [delivery_id for claim in claims for delivery_id in claim]
    assert len(claimed) == len(set(claimed)) == 40
    assert store.claim_due_deliveries("late", now=T0 + 100, lease_seconds=60, limit=100) == []


def test_a_lapsed_lease_lets_another_owner_take_over_and_the_first_is_ignored(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    enqueue(store, "video_1")
    ((delivery, owner_endpoint),) = store.claim_due_deliveries("a", now=T0, lease_seconds=30, limit=10)
    assert owner_endpoint == endpoint(1) and delivery.attempts == 0
    assert store.claim_due_deliveries("b", now=T0 + 29, lease_seconds=30, limit=10) == []
    ((taken, _),) = store.claim_due_deliveries("b", now=T0 + 31, lease_seconds=30, limit=10)
    assert taken.id == delivery.id

    assert not delivered(store, delivery.id, "a", now=T0 + 32)  # a's lease is b's now
    assert not store.release_delivery(delivery.id, "a", T0 + 100)
    assert only_delivery(store, endpoint(1).id).state == "pending" and store.webhook_attempts(delivery.id) == []
    assert delivered(store, delivery.id, "b", now=T0 + 33)
    done = only_delivery(store, endpoint(1).id)
    assert (done.state, done.attempts, done.delivered_at, done.last_status, done.next_attempt_at) == ("delivered", 1, T0 + 33, 204, None)
    assert not delivered(store, delivery.id, "b", now=T0 + 34)  # recorded once


def test_attempts_schedule_the_next_one_fail_for_good_and_are_kept(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    enqueue(store, "video_1")
    ((delivery, _),) = store.claim_due_deliveries("w", now=T0, lease_seconds=30, limit=1)
    assert failed(store, delivery.id, "w", now=T0 + 1, retry_at=T0 + 6)
    waiting = only_delivery(store, endpoint(1).id)
    assert (waiting.state, waiting.attempts, waiting.next_attempt_at, waiting.last_error) == ("pending", 1, T0 + 6, "http_error")
    assert store.claim_due_deliveries("w", now=T0 + 5, lease_seconds=30, limit=1) == []
    # A worker stopping hands its claim back unattempted.
    ((again, _),) = store.claim_due_deliveries("w", now=T0 + 6, lease_seconds=30, limit=1)
    assert store.release_delivery(again.id, "w", T0 + 7)
    assert only_delivery(store, endpoint(1).id).attempts == 1
    store.claim_due_deliveries("w", now=T0 + 7, lease_seconds=30, limit=1)
    assert failed(store, delivery.id, "w", now=T0 + 8, retry_at=None)
    gave_up = only_delivery(store, endpoint(1).id)
    assert (gave_up.state, gave_up.attempts, gave_up.next_attempt_at) == ("failed", 2, None)
    assert store.webhook_attempts(delivery.id) == [
        {"ts": T0 + 1, "status": 500, "error": "http_error", "latency_seconds": 0.2},
        {"ts": T0 + 8, "status": 500, "error": "http_error", "latency_seconds": 0.2},
    ]
    assert store.claim_due_deliveries("w", now=T0 + DAY, lease_seconds=30, limit=1) == []


def test_failing_since_is_the_first_failure_since_the_last_success(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))

    def attempt(video: str, at: float, ok: bool) -> None:
        enqueue(store, video, now=at)
        ((delivery, _),) = store.claim_due_deliveries("w", now=at, lease_seconds=30, limit=1)
        assert delivered(store, delivery.id, "w", now=at) if ok else failed(store, delivery.id, "w", now=at, retry_at=None)

    def failing_since() -> float | None:
        found = store.webhook_endpoint(endpoint(1).id)
        assert found is not None
        return found.failing_since

    attempt("video_1", T0, ok=False)
    for day in range(1, 6):
        attempt(f"video_d{day}", T0 + day * DAY, ok=False)
    assert failing_since() == T0  # five days of failures: the dispatcher's cue to disable it
    attempt("video_ok", T0 + 5 * DAY + 1, ok=True)
    assert failing_since() is None
    attempt("video_2", T0 + 6 * DAY, ok=False)
    assert failing_since() == T0 + 6 * DAY
    store.enable_webhook_endpoint(endpoint(1).id, T0 + 6 * DAY)
    assert failing_since() is None


def test_redeliver_keeps_the_id_and_the_bytes_and_starts_the_schedule_over(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    enqueue(store, "video_1")
    ((delivery, _),) = store.claim_due_deliveries("w", now=T0, lease_seconds=30, limit=1)
    failed(store, delivery.id, "w", now=T0 + 1, retry_at=None)
    again = store.redeliver(delivery.id, T0 + 100)
    assert (again.id, again.body, again.event_id) == (delivery.id, delivery.body, delivery.event_id)
    assert (again.state, again.attempts, again.next_attempt_at, again.delivered_at) == ("pending", 0, T0 + 100, None)
    ((claimed, _),) = store.claim_due_deliveries("w", now=T0 + 100, lease_seconds=30, limit=1)
    assert claimed.body == delivery.body
    delivered(store, delivery.id, "w", now=T0 + 101)
    assert store.redeliver(delivery.id, T0 + 200).state == "pending"  # a delivered one goes out again too
    assert len(store.webhook_attempts(delivery.id)) == 2
    with pytest.raises(NotFound):
        store.redeliver("wh_nope", T0)


def test_deleting_an_endpoint_cancels_its_pending_deliveries_and_keeps_history(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    store.create_webhook_endpoint(endpoint(2))
    enqueue(store, "video_1")
    ((done, _), (_, _)) = store.claim_due_deliveries("w", now=T0, lease_seconds=30, limit=2)
    delivered(store, done.id, "w", now=T0 + 1)
    enqueue(store, "video_2", now=T0 + 2)
    gone = done.endpoint_id
    assert store.delete_webhook_endpoint(gone)
    assert not store.delete_webhook_endpoint(gone)
    assert store.webhook_endpoint(gone) is None
    states = sorted(d.state for d in store.list_webhook_deliveries(endpoint_id=gone))
    assert states == ["cancelled", "delivered"]
    assert {d.state for d in store.list_webhook_deliveries() if d.endpoint_id != gone} == {"pending"}
    with pytest.raises(NotFound, match="nowhere to send it"):
        store.redeliver(done.id, T0 + 3)
    assert enqueue(store, "video_3") == 1


def test_a_disabled_endpoint_gets_no_events_and_its_pending_deliveries_wait(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    enqueue(store, "video_1")
    assert store.disable_webhook_endpoint(endpoint(1).id, "operator", T0 + 1) is True
    assert enqueue(store, "video_2", now=T0 + 2) == 0
    assert store.claim_due_deliveries("w", now=T0 + DAY, lease_seconds=30, limit=10) == []
    assert only_delivery(store, endpoint(1).id).state == "pending"
    assert store.webhook_backlog(T0 + 10) == {"pending": 1, "oldest_pending_seconds": 10.0, "disabled_endpoints": 1}
    # A second disable keeps the first reason and time, and says it changed nothing.
    assert store.disable_webhook_endpoint(endpoint(1).id, "failing", T0 + 5) is False
    found = store.webhook_endpoint(endpoint(1).id)
    assert found is not None and (found.disabled_at, found.disabled_reason) == (T0 + 1, "operator")
    with pytest.raises(ValueError, match="unknown reason"):
        store.disable_webhook_endpoint(endpoint(1).id, "bored", T0)
    with pytest.raises(NotFound):
        store.disable_webhook_endpoint("we_nope", "operator", T0)

    store.enable_webhook_endpoint(endpoint(1).id, T0 + 20)
    ((waited, _),) = store.claim_due_deliveries("w", now=T0 + 20, lease_seconds=30, limit=10)
    assert waited.video_id == "video_1"
    assert store.webhook_backlog(T0 + 20)["disabled_endpoints"] == 0


def test_a_waiting_delivery_is_due_at_once_when_its_endpoint_is_enabled(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    enqueue(store, "video_1")
    store.claim_due_deliveries("w", now=T0, lease_seconds=30, limit=1)
    failed(store, only_delivery(store, endpoint(1).id).id, "w", now=T0 + 1, retry_at=T0 + 36000)
    store.disable_webhook_endpoint(endpoint(1).id, "failing", T0 + 2)
    store.update_webhook_endpoint(endpoint(1).id, name=None, url=None, event_types=None, now=T0 + 3)
    assert only_delivery(store, endpoint(1).id).next_attempt_at == T0 + 3


def test_gone_disables_and_the_pending_deliveries_wait_for_the_endpoint(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    enqueue(store, "video_1")
    enqueue(store, "video_2", now=T0 + 1)
    store.disable_webhook_endpoint(endpoint(1).id, "gone", T0 + 2)
    waiting = store.list_webhook_deliveries(endpoint_id=endpoint(1).id)
    assert [d.state for d in waiting] == ["pending"] * 2
    assert store.claim_due_deliveries("w", now=T0 + DAY, lease_seconds=30, limit=10) == []
    assert store.webhook_delivery_counts([endpoint(1).id, "we_none"]) == {endpoint(1).id: {"pending": 2}}
    assert store.webhook_backlog(T0 + 3) == {"pending": 2, "oldest_pending_seconds": 3.0, "disabled_endpoints": 1}
    # The key holder fixes the URL: both go out.
    store.update_webhook_endpoint(endpoint(1).id, name=None, url="https://hooks.example.com/new", event_types=None, now=T0 + 4)
    assert len(store.claim_due_deliveries("w", now=T0 + 4, lease_seconds=30, limit=10)) == 2


def test_deliveries_list_newest_first_filtered_and_bounded(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    store.create_webhook_endpoint(endpoint(2))
    for number in range(3):
        enqueue(store, f"video_{number}", now=T0 + number)
    newest = store.list_webhook_deliveries(limit=4)
    assert [d.video_id for d in newest] == ["video_2", "video_2", "video_1", "video_1"]
    assert [d.video_id for d in store.list_webhook_deliveries(endpoint_id=endpoint(2).id)] == ["video_2", "video_1", "video_0"]
    assert store.list_webhook_deliveries(state="delivered") == []
    assert store.webhook_delivery(newest[0].id) == newest[0]
    assert store.webhook_delivery("wh_nope") is None


# -- schema step 3 -------------------------------------------------------------------------------------


def insert_video(store: Store, video_id: str, status: str, *, recorded_at: float, deleted_at: float | None = None) -> None:
    run_sql(
        store,
        "INSERT INTO videos (id, account, key_name, kind, status, created_at, recorded_at, deleted_at, resource)"
        " VALUES (?, 'acct', 'alice', 'create', ?, ?, ?, ?, '{}')",
        (video_id, status, recorded_at - 1, recorded_at, deleted_at),
    )


def test_a_version_2_database_upgrades_to_3_with_its_unfinished_jobs_watched(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SCHEMA_VERSION >= 3
    with monkeypatch.context() as older:
        older.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
        older.setattr(schema, "SCHEMA_VERSION", 2)
        store = Store(database)
        assert store.ensure_schema() == (1, 2)
    try:
        insert_video(store, "video_queued", "queued", recorded_at=T0 + 1)
        insert_video(store, "video_rendering", "in_progress", recorded_at=T0 + 2)
        insert_video(store, "video_done", "completed", recorded_at=T0 + 3)
        insert_video(store, "video_broken", "failed", recorded_at=T0 + 4)
        insert_video(store, "video_deleted", "in_progress", recorded_at=T0 + 5, deleted_at=T0 + 6)

        assert store.ensure_schema() == tuple(range(3, SCHEMA_VERSION + 1))
        watched = {
            row["id"]: (row["watch_next_at"], row["watch_owner"], row["watch_until"], row["watch_stopped"], row["watch_polls"])
            for row in run_sql(store, "SELECT * FROM videos")
        }
        assert watched == {
            "video_queued": (T0 + 1, None, None, None, 0),
            "video_rendering": (T0 + 2, None, None, None, 0),
            "video_done": (None, None, None, None, 0),
            "video_broken": (None, None, None, None, 0),
            "video_deleted": (None, None, None, None, 0),
        }
        # The new tables work at once, and a job recorded later gets the default poll count.
        store.create_webhook_endpoint(endpoint(1))
        assert enqueue(store, "video_queued") == 1
        insert_video(store, "video_new", "queued", recorded_at=T0 + 7)
        assert run_sql(store, "SELECT watch_polls FROM videos WHERE id = 'video_new'")[0][0] == 0
        assert store.ensure_schema() == ()
    finally:
        store.close()


def test_the_indexes_that_claim_and_list_deliveries_and_jobs(store: Store) -> None:
    if store.dialect == "sqlite":
        names = {row[0] for row in run_sql(store, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    else:
        names = {row[0] for row in run_sql(store, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    assert {
        "idx_webhook_deliveries_state_next_attempt_at",
        "idx_webhook_deliveries_endpoint_id_created_at",
        "idx_webhook_endpoints_key_name_created_at",
        "idx_webhook_attempts_delivery_id_ts",
        "idx_videos_unfinished",
    } <= names


def test_db_copy_carries_the_webhook_tables(tmp_path: Path, postgres_database_url: str) -> None:
    """`relayctl db copy` copies the tables TABLE_NAMES lists: the webhook ones too, bodies as bytes."""
    source = Store(tmp_path / "relay.db")
    source.ensure_schema()
    try:
        store_endpoint = endpoint(1)
        source.create_webhook_endpoint(store_endpoint)
        enqueue(source, "video_1")
        ((delivery, _),) = source.claim_due_deliveries("w", now=T0, lease_seconds=30, limit=1)
        failed(source, delivery.id, "w", now=T0 + 1, retry_at=T0 + 5)
        copied = copy_database(source, parse_location(postgres_database_url))
    finally:
        source.close()
    assert {"webhook_endpoints": 1, "webhook_deliveries": 1, "webhook_attempts": 1}.items() <= copied.items()
    target = Store(postgres_database_url)
    try:
        assert target.webhook_endpoint(store_endpoint.id) == WebhookEndpoint(**{**store_endpoint.__dict__, "failing_since": T0 + 1})
        assert target.webhook_delivery(delivery.id) == WebhookDelivery(
            **{
                **delivery.__dict__,
                "attempts": 1,
                "last_attempt_at": T0 + 1,
                "last_status": 500,
                "last_error": "http_error",
                "next_attempt_at": T0 + 5,
            }
        )
        assert len(target.webhook_attempts(delivery.id)) == 1
    finally:
        target.close()


def test_bodies_come_back_as_the_bytes_written(store: Store) -> None:
    store.create_webhook_endpoint(endpoint(1))
    enqueue(store, "video_ü\u2028")
    delivery = only_delivery(store, endpoint(1).id)
    assert isinstance(delivery.body, bytes)
    parsed: dict[str, Any] = json.loads(delivery.body)
    assert parsed["data"] == {"id": "video_ü\u2028"}
