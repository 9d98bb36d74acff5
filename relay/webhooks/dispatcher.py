"""The background loop that sends webhook deliveries (one per relay process, from the app's lifespan).

It claims the deliveries that are due (a lease in the store, so each is attempted by one process
at a time, across workers and replicas) as attempt slots free up, sends each at once, and
records each attempt with when to try again. Slots are refilled as attempts end, not a round at
a time, so one endpoint that takes its whole timeout to answer holds up nobody else's events.
An endpoint that answers 410 Gone is disabled at once; one whose every attempt failed for
settings.webhook_disable_after_seconds is disabled too. A claim that fails (the database is
away) is logged and retried on the next tick; nothing logged here carries a secret, a body or an
endpoint's URL (which may hold its owner's token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from dataclasses import dataclass

import anyio
import httpx

from ..crypto import SecretBox
from ..logs import fields
from ..records import WebhookDelivery, WebhookEndpoint
from ..state import RelayState, Retrying
from .schedule import next_attempt_delay
from .sender import GONE, AttemptResult, make_client, send_event

log = logging.getLogger("relay.webhooks")

# A claimed delivery's lease outlives its attempt (the sender's whole timeout) with room to record it.
LEASE_MARGIN_SECONDS = 5.0
DELIVERED = "delivered"


def wake(state: RelayState) -> None:
    """Look for due deliveries now rather than at the next tick (call from the event loop's thread,
    e.g. after writing events), so a delivery waits for the network, not for the poll."""
    state.deliveries_due.set()


@dataclass
class _Slots:
    free: int
    # The last claim filled every slot it asked for: more may be due, so a freed slot is refilled at once.
    saturated: bool = False


async def run_deliveries(state: RelayState, *, interval: float = 1.0, batch: int = 20, concurrency: int = 8) -> None:
    """Deliver due webhooks until cancelled: up to `concurrency` attempts at once, claiming at most
    `batch` at a time, every `interval` seconds or sooner when woken or when a slot frees after a
    full claim. Cancelled mid-attempt, a delivery is given back to the store, due as it was."""
    claims = Retrying("claim webhook deliveries (they wait in the database meanwhile)")
    woken = state.deliveries_due
    slots = _Slots(free=concurrency)
    rng = random.Random()

    async def attempt(client: httpx.AsyncClient, delivery: WebhookDelivery, endpoint: WebhookEndpoint) -> None:
        try:
            await _deliver_one(state, client, delivery, endpoint, rng)
        finally:
            slots.free += 1
            if slots.saturated:
                woken.set()

    client: httpx.AsyncClient | None = None
    # The stack closes the client after the task group has ended every attempt.
    async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as tasks:
        while True:
            woken.clear()
            wanted = min(batch, slots.free)
            if wanted > 0:
                try:
                    claimed = await _claim(state, limit=wanted, concurrency=concurrency)
                except Exception as error:
                    claims.failed(error)
                    claimed = []
                else:
                    claims.succeeded()
                slots.saturated = len(claimed) == wanted
                if claimed:
                    if client is None:
                        # Made for the first delivery: loading the CA bundle costs each worker's
                        # start tens of milliseconds of CPU, for nothing on a relay without webhooks.
                        client = await stack.enter_async_context(make_client())
                    for delivery, endpoint in claimed:
                        slots.free -= 1
                        tasks.start_soon(attempt, client, delivery, endpoint)
                if slots.saturated and slots.free > 0:
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await woken.wait()


async def deliver_due(state: RelayState, client: httpx.AsyncClient, *, batch: int, concurrency: int, rng: random.Random) -> int:
    """One round: claim up to `batch` due deliveries, attempt them `concurrency` at a time and wait
    for all; returns how many were claimed. (The loop refills slots instead; tests step with this.)"""
    claimed = await _claim(state, limit=batch, concurrency=concurrency)
    limiter = anyio.CapacityLimiter(concurrency)

    async def attempt(delivery: WebhookDelivery, endpoint: WebhookEndpoint) -> None:
        async with limiter:
            await _deliver_one(state, client, delivery, endpoint, rng)

    async with anyio.create_task_group() as tasks:
        for delivery, endpoint in claimed:
            tasks.start_soon(attempt, delivery, endpoint)
    return len(claimed)


async def _claim(state: RelayState, *, limit: int, concurrency: int) -> list[tuple[WebhookDelivery, WebhookEndpoint]]:
    # The lease covers every attempt's whole timeout, in as many waves as the slots make of the claim
    # (one, in the loop), and recording it: a lease that lapsed would let another process send it too.
    timeout = state.settings.webhook_timeout_seconds
    waves = math.ceil(limit / max(concurrency, 1))
    return await state.db(
        state.store.claim_due_deliveries,
        state.holder.owner,
        now=state.clock(),
        lease_seconds=timeout * (waves + 1) + LEASE_MARGIN_SECONDS,
        limit=limit,
    )


async def _deliver_one(
    state: RelayState, client: httpx.AsyncClient, delivery: WebhookDelivery, endpoint: WebhookEndpoint, rng: random.Random
) -> None:
    settings = state.settings
    owner = state.holder.owner
    try:
        result = await send_event(
            client,
            url=endpoint.url,
            webhook_id=delivery.id,
            body=delivery.body,
            secrets=signing_secrets(state.box, endpoint, state.clock()),
            timeout=settings.webhook_timeout_seconds,
            allow_private=settings.webhook_allow_private,
            now=state.clock,
        )
        finished_at = state.clock()
        next_attempt_at: float | None = None
        if not result.delivered:
            # A 410 too: its endpoint is disabled below, and the delivery waits for it to be enabled again.
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
        # A bug, an undecryptable secret, the database away: the lease lapses and the delivery is claimed again then.
        log.exception("could not attempt webhook delivery %s", delivery.id, extra=fields(delivery=delivery.id, endpoint=endpoint.id))
        return
    metrics = state.metrics
    metrics.webhook_deliveries.labels(result=DELIVERED if result.delivered else result.error).inc()
    if result.delivered:
        metrics.webhook_delivery_latency.observe(max(finished_at - delivery.created_at, 0.0))
    _log_attempt(delivery, endpoint, result, next_attempt_at, recorded=recorded)
    if not result.delivered:
        try:
            await _disable_if_due(state, endpoint, result, finished_at)
        except Exception:
            # The next failure decides again.
            log.exception("could not disable webhook endpoint %s", endpoint.id, extra=fields(endpoint=endpoint.id))


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


async def _disable_if_due(state: RelayState, claimed: WebhookEndpoint, result: AttemptResult, now: float) -> None:
    """Disable the endpoint after a failed attempt if it answered 410, or if it has failed every
    attempt for too long. The endpoint as claimed may be stale (another attempt may have gone
    through since), so the store's current view decides."""
    limit = state.settings.webhook_disable_after_seconds
    if result.error != GONE and (claimed.failing_since is None or now - claimed.failing_since < limit):
        return
    endpoint = await state.db(state.store.webhook_endpoint, claimed.id)
    if endpoint is None or endpoint.disabled_at is not None:
        return
    if result.error == GONE:
        reason, why = "gone", "it answered 410 Gone"
    elif endpoint.failing_since is not None and now - endpoint.failing_since >= limit:
        reason, why = "failing", f"every delivery to it has failed for {now - endpoint.failing_since:.0f} s"
    else:
        return
    if not await state.db(state.store.disable_webhook_endpoint, endpoint.id, reason, now):
        return  # another attempt disabled it first
    state.metrics.webhook_endpoints_disabled.labels(reason=reason).inc()
    log.warning("disabled webhook endpoint %s: %s", endpoint.id, why, extra=fields(endpoint=endpoint.id, key=endpoint.key_name))


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
