"""The background loop that sends webhook deliveries (one per relay process, from the app's lifespan).

Every round it claims the deliveries that are due (a lease in the store, so each is attempted by
one process at a time, across workers and replicas), sends them a few at a time, and records
each attempt with when to try again. An endpoint that answers 410 Gone is disabled at once;
one whose every attempt failed for settings.webhook_disable_after_seconds is disabled too.
A round that fails (the database is away, a bug) is logged and the next one goes on; nothing
logged here carries a secret, a body or an endpoint's URL (which may hold its owner's token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from dataclasses import dataclass

import anyio
import httpx

from ..crypto import SecretBox
from ..logs import fields
from ..records import WebhookDelivery, WebhookEndpoint
from ..state import RelayState, _Retrying
from .schedule import next_attempt_delay
from .sender import GONE, AttemptResult, make_client, send_event

log = logging.getLogger("relay.webhooks")

# A claimed delivery's lease outlives its attempt (the sender's whole timeout) with room to record it.
LEASE_MARGIN_SECONDS = 5.0
DELIVERED = "delivered"

# The event that wakes each running loop (see wake), by the id of the state it serves.
_wakeups: dict[int, asyncio.Event] = {}


@dataclass(frozen=True)
class _Outcome:
    delivery: WebhookDelivery
    endpoint: WebhookEndpoint
    result: AttemptResult
    finished_at: float


def wake(state: RelayState) -> None:
    """Start the next round now rather than at the next interval (call from the event loop's thread,
    e.g. after writing events), so a delivery waits for the network, not for the poll."""
    woken = _wakeups.get(id(state))
    if woken is not None:
        woken.set()


async def run_deliveries(state: RelayState, *, interval: float = 1.0, batch: int = 20, concurrency: int = 8) -> None:
    """Deliver due webhooks until cancelled: a round every `interval` seconds, or at once while
    rounds come back full, or when woken; at most `batch` deliveries a round, `concurrency` at a time."""
    rounds = _Retrying("deliver webhooks (deliveries wait in the database meanwhile)")
    woken = _wakeups.setdefault(id(state), asyncio.Event())
    rng = random.Random()
    try:
        async with make_client() as client:
            while True:
                woken.clear()
                try:
                    claimed = await deliver_due(state, client, batch=batch, concurrency=concurrency, rng=rng)
                except Exception as error:
                    rounds.failed(error)
                    claimed = 0
                else:
                    rounds.succeeded()
                if claimed >= batch:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await woken.wait()
    finally:
        if _wakeups.get(id(state)) is woken:
            del _wakeups[id(state)]


async def deliver_due(state: RelayState, client: httpx.AsyncClient, *, batch: int, concurrency: int, rng: random.Random) -> int:
    """One round: claim, send and record what is due now; returns how many deliveries were claimed."""
    settings = state.settings
    claimed = await state.db(
        state.store.claim_due_deliveries,
        state.holder.owner,
        now=state.clock(),
        lease_seconds=settings.webhook_timeout_seconds * 2 + LEASE_MARGIN_SECONDS,
        limit=batch,
    )
    if not claimed:
        return 0
    outcomes: list[_Outcome] = []
    limiter = anyio.CapacityLimiter(concurrency)
    async with anyio.create_task_group() as tasks:
        for delivery, endpoint in claimed:
            tasks.start_soon(_deliver_one, state, client, delivery, endpoint, limiter, rng, outcomes)
    await _disable_endpoints(state, outcomes)
    return len(claimed)


async def _deliver_one(
    state: RelayState,
    client: httpx.AsyncClient,
    delivery: WebhookDelivery,
    endpoint: WebhookEndpoint,
    limiter: anyio.CapacityLimiter,
    rng: random.Random,
    outcomes: list[_Outcome],
) -> None:
    settings = state.settings
    owner = state.holder.owner
    try:
        async with limiter:
            secrets = signing_secrets(state.box, endpoint, state.clock())
            result = await send_event(
                client,
                url=endpoint.url,
                webhook_id=delivery.id,
                body=delivery.body,
                secrets=secrets,
                timeout=settings.webhook_timeout_seconds,
                allow_private=settings.webhook_allow_private,
                now=state.clock,
            )
        finished_at = state.clock()
        next_attempt_at: float | None = None
        if not result.delivered and result.error != GONE:
            delay = next_attempt_delay(delivery.attempts + 1, settings.webhook_retry_schedule, result.retry_after, rng)
            next_attempt_at = None if delay is None else finished_at + delay
        recorded = await state.db(
            state.store.record_delivery_attempt,
            delivery.id,
            owner,
            status=result.status,
            error=result.error,
            delivered=result.delivered,
            next_attempt_at=next_attempt_at,
            latency_seconds=result.latency_seconds,
            now=finished_at,
        )
    except anyio.get_cancelled_exc_class():
        # Shutting down mid-attempt: give the delivery back, due as it was, for another process.
        # (One whose attempt was recorded already holds no lease, so this changes nothing for it.)
        with anyio.CancelScope(shield=True):
            await _release(state, delivery)
        raise
    except Exception:
        # A bug or the database away: the lease lapses and the delivery is claimed again then.
        log.exception("could not attempt webhook delivery %s", delivery.id, extra=fields(delivery=delivery.id, endpoint=endpoint.id))
        return
    metrics = state.metrics
    metrics.webhook_deliveries.labels(result=DELIVERED if result.delivered else result.error).inc()
    if result.delivered:
        metrics.webhook_delivery_latency.observe(max(finished_at - delivery.created_at, 0.0))
    outcomes.append(_Outcome(delivery, endpoint, result, finished_at))
    _log_attempt(delivery, endpoint, result, next_attempt_at, recorded=recorded)


def signing_secrets(box: SecretBox, endpoint: WebhookEndpoint, now: float) -> list[str]:
    """The endpoint's secrets that sign now, newest first (the previous one during its grace period)."""
    secrets = [box.decrypt(endpoint.secret_encrypted)]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret_encrypted is not None and until is not None and until > now:
        secrets.append(box.decrypt(endpoint.previous_secret_encrypted))
    return secrets


async def _release(state: RelayState, delivery: WebhookDelivery) -> None:
    due = delivery.next_attempt_at if delivery.next_attempt_at is not None else state.clock()
    try:
        await state.db(state.store.release_delivery, delivery.id, state.holder.owner, due)
    except Exception:
        log.warning("could not give back webhook delivery %s; its lease lapses on its own", delivery.id, extra=fields(delivery=delivery.id))


async def _disable_endpoints(state: RelayState, outcomes: list[_Outcome]) -> None:
    """After a round: disable the endpoints that answered 410, and those failing for too long
    (unless one of their deliveries just went through)."""
    by_endpoint: dict[str, list[_Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_endpoint[outcome.endpoint.id].append(outcome)
    limit = state.settings.webhook_disable_after_seconds
    for endpoint_id, its in by_endpoint.items():
        failing_since = its[0].endpoint.failing_since
        latest = max(outcome.finished_at for outcome in its)
        if any(outcome.result.error == GONE for outcome in its):
            reason, why = "gone", "it answered 410 Gone"
        elif not any(outcome.result.delivered for outcome in its) and failing_since is not None and latest - failing_since >= limit:
            reason, why = "failing", f"every delivery to it has failed for {latest - failing_since:.0f} s"
        else:
            continue
        await state.db(state.store.disable_webhook_endpoint, endpoint_id, reason, latest)
        state.metrics.webhook_endpoints_disabled.labels(reason=reason).inc()
        log.warning("disabled webhook endpoint %s: %s", endpoint_id, why, extra=fields(endpoint=endpoint_id, key=its[0].endpoint.key_name))


def _log_attempt(
    delivery: WebhookDelivery, endpoint: WebhookEndpoint, result: AttemptResult, next_attempt_at: float | None, *, recorded: bool
) -> None:
    facts = fields(
        delivery=delivery.id,
        endpoint=endpoint.id,
        key=endpoint.key_name,
        event_type=delivery.event_type,
        attempt=delivery.attempts + 1,
        status=result.status,
        error_class=result.error,
        latency_ms=round(result.latency_seconds * 1000),
    )
    if not recorded:
        log.info("webhook delivery %s attempted after its lease was taken over; not recorded", delivery.id, extra=facts)
    elif result.delivered:
        log.info("webhook delivery %s delivered", delivery.id, extra=facts)
    elif next_attempt_at is None:
        log.warning("webhook delivery %s failed for good (%s)", delivery.id, result.error, extra=facts)
    else:
        log.info("webhook delivery %s failed (%s); trying again later", delivery.id, result.error, extra=facts)
