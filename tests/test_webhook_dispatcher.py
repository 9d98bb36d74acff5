"""The webhook dispatcher against a real HTTP receiver on 127.0.0.1 and an in-memory store that
keeps the store's contract (claim with a lease, record an attempt, disable, release): delivery,
retries with the same id and bytes, 410 and failing-too-long disabling, a spent schedule, the
loop surviving a database outage, and giving deliveries back at shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import openai
import pytest
from conftest import ManualClock
from test_webhook_sender import Receiver, running_receiver

from relay import holders
from relay.config import Settings
from relay.crypto import SecretBox, generate_key
from relay.metrics import Metrics
from relay.records import StoreUnavailable, WebhookDelivery, WebhookEndpoint
from relay.state import RelayState
from relay.store import Store, enqueue_video_event
from relay.webhooks.dispatcher import deliver_due, run_deliveries, signing_secrets, wake
from relay.webhooks.sender import make_client
from relay.webhooks.signing import new_secret, secret_hint

T = TypeVar("T")
DAY = 24 * 3600.0


def real_time_clock() -> ManualClock:
    """The relay's clock, moved by the tests; it starts at the real time so the SDK's replay window accepts timestamps."""
    return ManualClock(float(int(time.time())))


@dataclass
class FakeStore:
    """What the dispatcher needs of relay.store.webhooks.Webhooks, in memory."""

    endpoints: dict[str, WebhookEndpoint] = field(default_factory=dict)
    deliveries: dict[str, WebhookDelivery] = field(default_factory=dict)
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    disabled: list[tuple[str, str]] = field(default_factory=list)
    claims: int = 0
    # Claims that fail (the database away) before claims work.
    unavailable_claims: int = 0

    def claim_due_deliveries(
        self, owner: str, *, now: float, lease_seconds: float, limit: int
    ) -> list[tuple[WebhookDelivery, WebhookEndpoint]]:
        self.claims += 1
        if self.unavailable_claims:
            self.unavailable_claims -= 1
            raise StoreUnavailable("locked")
        due = sorted(
            (
                delivery
                for delivery in self.deliveries.values()
                if delivery.state == "pending"
                and delivery.next_attempt_at is not None
                and delivery.next_attempt_at <= now
                and (delivery.id not in self.leases or self.leases[delivery.id][1] <= now)
                and self.endpoints[delivery.endpoint_id].disabled_at is None
            ),
            key=lambda delivery: (delivery.next_attempt_at, delivery.id),
        )[:limit]
        for delivery in due:
            self.leases[delivery.id] = (owner, now + lease_seconds)
        return [(delivery, self.endpoints[delivery.endpoint_id]) for delivery in due]

    def record_delivery_attempt(
        self,
        delivery_id: str,
        owner: str,
        *,
        status: int | None,
        error: str | None,
        delivered: bool,
        next_attempt_at: float | None,
        latency_seconds: float,
        now: float,
    ) -> bool:
        delivery = self.deliveries[delivery_id]
        if self.leases.get(delivery_id, ("", 0.0))[0] != owner or delivery.state != "pending":
            return False
        del self.leases[delivery_id]
        state = "delivered" if delivered else "pending" if next_attempt_at is not None else "failed"
        self.deliveries[delivery_id] = dataclasses.replace(
            delivery,
            state=state,
            attempts=delivery.attempts + 1,
            next_attempt_at=None if delivered else next_attempt_at,
            last_attempt_at=now,
            last_status=status,
            last_error=error,
            delivered_at=now if delivered else None,
        )
        endpoint = self.endpoints[delivery.endpoint_id]
        failing_since = None if delivered else (endpoint.failing_since if endpoint.failing_since is not None else now)
        self.endpoints[endpoint.id] = dataclasses.replace(endpoint, failing_since=failing_since)
        self.attempts.append({"delivery_id": delivery_id, "ts": now, "status": status, "error": error})
        return True

    def webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        return self.endpoints.get(endpoint_id)

    def disable_webhook_endpoint(self, endpoint_id: str, reason: str, now: float) -> bool:
        if self.endpoints[endpoint_id].disabled_at is not None:
            return False
        self.disabled.append((endpoint_id, reason))
        self.endpoints[endpoint_id] = dataclasses.replace(self.endpoints[endpoint_id], disabled_at=now, disabled_reason=reason)
        return True

    def release_delivery(self, delivery_id: str, owner: str, next_attempt_at: float) -> bool:
        if self.leases.get(delivery_id, ("", 0.0))[0] != owner:
            return False
        del self.leases[delivery_id]
        self.deliveries[delivery_id] = dataclasses.replace(self.deliveries[delivery_id], next_attempt_at=next_attempt_at)
        return True


def new_endpoint(box: SecretBox, endpoint_id: str, url: str, secret: str, now: float, **changes: Any) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        key_name="alice",
        name="hooks",
        url=url,
        event_types=("video.completed", "video.failed"),
        secret_encrypted=box.encrypt(secret),
        secret_hint=secret_hint(secret),
        previous_secret_encrypted=None,
        previous_secret_until=None,
        created_at=now,
        updated_at=now,
        disabled_at=None,
        disabled_reason=None,
        failing_since=None,
    )
    return dataclasses.replace(endpoint, **changes)


@dataclass
class FakeState:
    """The parts of RelayState the dispatcher uses."""

    # A FakeStore, or a real Store for the test that runs against one.
    store: Any
    settings: Settings
    clock: ManualClock = field(default_factory=real_time_clock)
    box: SecretBox = field(default_factory=lambda: SecretBox([generate_key().encode()]))
    metrics: Metrics = field(default_factory=lambda: Metrics(lambda: []))
    holder: holders.Holder = field(default_factory=holders.this_process)
    deliveries_due: asyncio.Event = field(default_factory=asyncio.Event)

    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return function(*args, **kwargs)

    def add_endpoint(self, url: str, secret: str, **changes: Any) -> WebhookEndpoint:
        endpoint = new_endpoint(self.box, f"we_{len(self.store.endpoints):032x}", url, secret, self.clock(), **changes)
        self.store.endpoints[endpoint.id] = endpoint
        return endpoint

    def add_delivery(self, endpoint: WebhookEndpoint, **changes: Any) -> WebhookDelivery:
        number = len(self.store.deliveries)
        event = {
            "id": f"evt_{number:032x}",
            "object": "event",
            "created_at": int(self.clock()),
            "type": "video.completed",
            "data": {"id": f"video_{number}"},
        }
        delivery = WebhookDelivery(
            id=f"wh_{number:032x}",
            endpoint_id=endpoint.id,
            event_id=str(event["id"]),
            event_type="video.completed",
            video_id=f"video_{number}",
            body=json.dumps(event, separators=(",", ":")).encode(),
            state="pending",
            attempts=0,
            created_at=self.clock(),
            next_attempt_at=self.clock(),
            last_attempt_at=None,
            last_status=None,
            last_error=None,
            delivered_at=None,
        )
        delivery = dataclasses.replace(delivery, **changes)
        self.store.deliveries[delivery.id] = delivery
        return delivery

    def delivery(self, delivery_id: str) -> WebhookDelivery:
        delivery: WebhookDelivery = self.store.deliveries[delivery_id]
        return delivery

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def fake_state(store: Any = None, **settings: Any) -> FakeState:
    return FakeState(
        store=store or FakeStore(), settings=Settings(**{"webhook_allow_private": True, "webhook_timeout_seconds": 2.0, **settings})
    )


def as_relay_state(state: FakeState) -> RelayState:
    return cast(RelayState, state)


def one_round(state: FakeState, *, batch: int = 20, concurrency: int = 4) -> int:
    async def run() -> int:
        async with make_client() as client:
            return await deliver_due(as_relay_state(state), client, batch=batch, concurrency=concurrency, rng=random.Random(1))

    return asyncio.run(run())


def verify(received_body: bytes, headers: dict[str, str], secret: str) -> None:
    openai.OpenAI(api_key="x").webhooks.verify_signature(received_body, headers, secret=secret)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def test_a_due_delivery_is_sent_signed_and_recorded(receiver: Receiver) -> None:
    state = fake_state()
    secret = new_secret()
    endpoint = state.add_endpoint(receiver.url("/ok"), secret)
    delivery = state.add_delivery(endpoint)
    state.clock.now += 3
    assert one_round(state) == 1
    [received] = receiver.received
    assert received.body == delivery.body and received.headers["webhook-id"] == delivery.id
    verify(received.body, received.headers, secret)
    done = state.delivery(delivery.id)
    assert (done.state, done.attempts, done.last_status, done.delivered_at) == ("delivered", 1, 200, state.clock.now)
    assert state.store.leases == {}
    assert state.sample("relay_webhook_deliveries_total", result="delivered") == 1
    assert state.sample("relay_webhook_delivery_latency_seconds_count") == 1
    assert state.sample("relay_webhook_delivery_latency_seconds_sum") == 3
    # Nothing is due any more.
    assert one_round(state) == 0 and len(receiver.received) == 1


def test_a_failed_attempt_is_retried_on_schedule_with_the_same_id_and_bytes(receiver: Receiver) -> None:
    state = fake_state()
    secret = new_secret()
    endpoint = state.add_endpoint(receiver.url("/script"), secret)
    delivery = state.add_delivery(endpoint)
    receiver.script = [500]
    one_round(state)
    failed = state.delivery(delivery.id)
    assert (failed.state, failed.attempts, failed.last_status, failed.last_error) == ("pending", 1, 500, "http_error")
    assert failed.next_attempt_at is not None
    # Settings' schedule: 5 s (+-10 %) after the first failure.
    assert 4.5 <= failed.next_attempt_at - state.clock.now <= 5.5
    assert state.store.endpoints[endpoint.id].failing_since == state.clock.now
    assert one_round(state) == 0
    state.clock.now += 5.6
    assert one_round(state) == 1
    first, second = receiver.received
    assert first.body == second.body == delivery.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.id
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    verify(second.body, second.headers, secret)
    done = state.delivery(delivery.id)
    assert (done.state, done.attempts) == ("delivered", 2)
    assert state.store.endpoints[endpoint.id].failing_since is None
    assert state.sample("relay_webhook_deliveries_total", result="http_error") == 1
    assert state.sample("relay_webhook_deliveries_total", result="delivered") == 1


def test_retry_after_stretches_the_wait(receiver: Receiver) -> None:
    state = fake_state()
    delivery = state.add_delivery(state.add_endpoint(receiver.url("/status/429?retry_after=600"), new_secret()))
    one_round(state)
    waiting = state.delivery(delivery.id)
    assert waiting.next_attempt_at == state.clock.now + 600 and waiting.last_status == 429


def test_410_disables_the_endpoint_and_its_deliveries_wait(receiver: Receiver) -> None:
    state = fake_state()
    endpoint = state.add_endpoint(receiver.url("/status/410"), new_secret())
    gone = state.add_delivery(endpoint)
    later = state.add_delivery(endpoint, next_attempt_at=state.clock.now + 60)
    one_round(state)
    assert (state.delivery(gone.id).state, state.delivery(gone.id).last_error) == ("pending", "gone")
    assert state.store.disabled == [(endpoint.id, "gone")]
    assert state.store.endpoints[endpoint.id].disabled_reason == "gone"
    assert state.delivery(later.id).state == "pending"
    assert state.sample("relay_webhook_endpoints_disabled_total", reason="gone") == 1
    assert state.sample("relay_webhook_deliveries_total", result="gone") == 1
    state.clock.now += 120
    assert one_round(state) == 0 and len(receiver.received) == 1


def test_an_endpoint_failing_for_too_long_is_disabled(receiver: Receiver) -> None:
    state = fake_state(webhook_disable_after_seconds=5 * DAY)
    old = state.add_endpoint(receiver.url("/status/500"), new_secret(), failing_since=state.clock.now - 5 * DAY - 1)
    recent = state.add_endpoint(receiver.url("/status/500"), new_secret(), failing_since=state.clock.now - 4 * DAY)
    state.add_delivery(old)
    state.add_delivery(recent)
    one_round(state)
    assert state.store.disabled == [(old.id, "failing")]
    assert state.store.endpoints[old.id].disabled_reason == "failing"
    assert state.store.endpoints[recent.id].disabled_at is None
    assert state.sample("relay_webhook_endpoints_disabled_total", reason="failing") == 1


def test_an_endpoint_that_just_took_a_delivery_is_not_disabled_for_failing(receiver: Receiver) -> None:
    state = fake_state(webhook_disable_after_seconds=DAY)
    endpoint = state.add_endpoint(receiver.url("/script"), new_secret(), failing_since=state.clock.now - 2 * DAY)
    receiver.script = [200, 500]
    state.add_delivery(endpoint)
    state.add_delivery(endpoint)
    # One at a time: the second attempt fails after the first went through, which the endpoint
    # as claimed (failing for two days) does not show yet.
    one_round(state, concurrency=1)
    assert len(receiver.received) == 2
    assert sorted(str(delivery.last_status) for delivery in state.store.deliveries.values()) == ["200", "500"]
    assert state.store.disabled == [] and state.store.endpoints[endpoint.id].failing_since == state.clock.now


def test_an_endpoint_disabled_already_is_not_disabled_again(receiver: Receiver) -> None:
    state = fake_state()
    endpoint = state.add_endpoint(receiver.url("/status/410"), new_secret())
    for _ in range(3):
        state.add_delivery(endpoint)
    one_round(state)
    assert len(receiver.received) == 3
    assert state.store.disabled == [(endpoint.id, "gone")]
    assert state.sample("relay_webhook_endpoints_disabled_total", reason="gone") == 1


def test_a_spent_schedule_fails_the_delivery_for_good(receiver: Receiver) -> None:
    state = fake_state(webhook_retry_schedule=(0.0, 10.0, 20.0))
    delivery = state.add_delivery(state.add_endpoint(receiver.url("/status/503"), new_secret()))
    for _ in range(3):
        assert one_round(state) == 1
        state.clock.now += 30
    failed = state.delivery(delivery.id)
    assert (failed.state, failed.attempts, failed.next_attempt_at, failed.last_error) == ("failed", 3, None, "http_error")
    assert one_round(state) == 0 and len(receiver.received) == 3


def test_an_unsafe_target_is_not_contacted(receiver: Receiver) -> None:
    state = fake_state(webhook_allow_private=False)
    delivery = state.add_delivery(state.add_endpoint(receiver.url("/ok"), new_secret()))
    one_round(state)
    assert receiver.received == []
    refused = state.delivery(delivery.id)
    assert (refused.state, refused.last_error, refused.last_status) == ("pending", "unsafe_target", None)
    assert state.sample("relay_webhook_deliveries_total", result="unsafe_target") == 1


def test_the_previous_secret_signs_only_during_its_grace_period(receiver: Receiver) -> None:
    state = fake_state()
    new, old = new_secret(), new_secret()
    endpoint = state.add_endpoint(
        receiver.url("/ok"), new, previous_secret_encrypted=state.box.encrypt(old), previous_secret_until=state.clock.now + 60
    )
    assert signing_secrets(state.box, endpoint, state.clock.now) == [new, old]
    assert signing_secrets(state.box, endpoint, state.clock.now + 60) == [new]
    state.add_delivery(endpoint)
    one_round(state)
    [received] = receiver.received
    verify(received.body, received.headers, old)
    verify(received.body, received.headers, new)


def test_a_batch_takes_at_most_its_size(receiver: Receiver) -> None:
    state = fake_state()
    endpoint = state.add_endpoint(receiver.url("/ok"), new_secret())
    for _ in range(5):
        state.add_delivery(endpoint)
    assert one_round(state, batch=3) == 3
    assert one_round(state, batch=3) == 2
    assert len(receiver.received) == 5 and {delivery.state for delivery in state.store.deliveries.values()} == {"delivered"}


def test_neither_the_secret_nor_the_body_nor_the_url_is_logged(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="relay")
    state = fake_state()
    secret = new_secret()
    ok = state.add_delivery(state.add_endpoint(receiver.url("/ok?token=hush"), secret))
    failing = state.add_delivery(state.add_endpoint(receiver.url("/status/500?token=hush"), secret))
    one_round(state)
    # The relay's own lines, with their structured fields (httpx's are below the level the relay runs its root logger at).
    logged = "\n".join(
        f"{record.getMessage()} {getattr(record, 'fields', '')}" for record in caplog.records if record.name.startswith("relay")
    )
    assert ok.id in logged and failing.id in logged and "http_error" in logged
    for private in (secret, secret[len("whsec_") :], ok.body.decode(), failing.body.decode(), "hush"):
        assert private not in logged


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


def run_loop(state: FakeState, scenario: Callable[[asyncio.Task[None]], Coroutine[Any, Any, None]], **options: Any) -> None:
    async def run() -> None:
        loop = asyncio.create_task(run_deliveries(as_relay_state(state), **options))
        try:
            await scenario(loop)
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop

    asyncio.run(run())


def test_the_loop_delivers_and_goes_on_after_a_database_outage(receiver: Receiver) -> None:
    state = fake_state()
    state.store.unavailable_claims = 2
    delivery = state.add_delivery(state.add_endpoint(receiver.url("/ok"), new_secret()))

    async def scenario(loop: asyncio.Task[None]) -> None:
        await until(lambda: state.delivery(delivery.id).state == "delivered")
        assert state.store.claims >= 3 and not loop.done()

    run_loop(state, scenario, interval=0.01)


def test_wake_starts_a_round_before_the_interval(receiver: Receiver) -> None:
    state = fake_state()
    endpoint = state.add_endpoint(receiver.url("/ok"), new_secret())

    async def scenario(loop: asyncio.Task[None]) -> None:
        await until(lambda: state.store.claims == 1)
        delivery = state.add_delivery(endpoint)
        wake(as_relay_state(state))
        # The interval is an hour: only the wake-up can have started this round.
        await until(lambda: state.delivery(delivery.id).state == "delivered")

    run_loop(state, scenario, interval=3600.0)


def test_a_delivery_cut_by_shutdown_is_given_back(receiver: Receiver) -> None:
    state = fake_state(webhook_timeout_seconds=30.0)
    delivery = state.add_delivery(state.add_endpoint(receiver.url("/hang"), new_secret()))

    async def scenario(loop: asyncio.Task[None]) -> None:
        await until(lambda: len(receiver.received) == 1)

    run_loop(state, scenario, interval=3600.0)
    given_back = state.delivery(delivery.id)
    assert delivery.id not in state.store.leases
    assert (given_back.state, given_back.attempts, given_back.next_attempt_at) == ("pending", 0, delivery.next_attempt_at)
    assert state.store.attempts == []


def test_against_a_real_store_a_retried_delivery_keeps_its_id_and_bytes(receiver: Receiver, tmp_path: Path) -> None:
    store = Store(str(tmp_path / "relay.db"))
    store.ensure_schema()
    try:
        state = fake_state(store)
        secret = new_secret()
        retried = new_endpoint(
            state.box, "we_" + "1" * 32, receiver.url("/script"), secret, state.clock(), event_types=("video.completed",)
        )
        gone = new_endpoint(state.box, "we_" + "2" * 32, receiver.url("/status/410"), secret, state.clock(), event_types=("video.failed",))
        store.create_webhook_endpoint(retried)
        store.create_webhook_endpoint(gone)
        with store.transaction() as conn:
            assert enqueue_video_event(conn, key_name="alice", video_id="video_1", event_type="video.completed", now=state.clock()) == 1
            assert enqueue_video_event(conn, key_name="alice", video_id="video_2", event_type="video.failed", now=state.clock()) == 1
        receiver.script = [500]
        assert one_round(state) == 2
        [queued] = store.list_webhook_deliveries(endpoint_id=retried.id, state="pending")
        assert (queued.attempts, queued.last_status, queued.last_error) == (1, 500, "http_error")
        failing = store.webhook_endpoint(retried.id)
        assert failing is not None and failing.failing_since == state.clock.now
        disabled = store.webhook_endpoint(gone.id)
        assert disabled is not None and disabled.disabled_reason == "gone"
        state.clock.now += 6
        assert one_round(state) == 1
        done = store.webhook_delivery(queued.id)
        assert done is not None and (done.state, done.attempts) == ("delivered", 2)
        assert len(store.webhook_attempts(queued.id)) == 2
        first, second = [received for received in receiver.received if received.path == "/script"]
        assert first.body == second.body == done.body
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == done.id
        verify(second.body, second.headers, secret)
        assert json.loads(done.body)["data"] == {"id": "video_1"}
        assert one_round(state) == 0
    finally:
        store.close()


def test_in_the_loop_attempts_are_bounded_by_the_slots(receiver: Receiver) -> None:
    state = fake_state(webhook_timeout_seconds=30.0)
    hanging = [state.add_delivery(state.add_endpoint(receiver.url("/hang"), new_secret())) for _ in range(2)]
    quick = state.add_endpoint(receiver.url("/ok"), new_secret())

    async def scenario(loop: asyncio.Task[None]) -> None:
        await until(lambda: len(receiver.received) == 2)
        waiting = state.add_delivery(quick)
        # Both slots are busy until the hanging attempts time out (30 s): nothing more is claimed.
        wake(as_relay_state(state))
        await asyncio.sleep(0.1)
        assert waiting.id not in state.store.leases and len(receiver.received) == 2
        receiver.release.set()
        # The hanging endpoints close without answering: their slots free up, and the waiting delivery goes.
        await until(lambda: state.delivery(waiting.id).state == "delivered")
        assert {state.delivery(delivery.id).last_error for delivery in hanging} == {"connect_error"}

    run_loop(state, scenario, interval=3600.0, concurrency=2)


def test_in_the_loop_a_slow_endpoint_does_not_delay_the_others(receiver: Receiver) -> None:
    state = fake_state(webhook_timeout_seconds=30.0)
    slow = state.add_delivery(state.add_endpoint(receiver.url("/hang"), new_secret()))
    quick = state.add_endpoint(receiver.url("/ok"), new_secret())

    async def scenario(loop: asyncio.Task[None]) -> None:
        await until(lambda: len(receiver.received) == 1)
        waiting = state.add_delivery(quick)
        wake(as_relay_state(state))
        # Well before the slow attempt's 30 s run out.
        await until(lambda: state.delivery(waiting.id).state == "delivered")
        assert slow.id in state.store.leases

    run_loop(state, scenario, interval=3600.0, concurrency=4)
