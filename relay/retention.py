"""The relay's background pruning: relay.store.retention's batches, with pauses between them so
that requests waiting for the write lock go first."""

from __future__ import annotations

import logging
import random

import anyio

from .state import RelayState, Retrying
from .store.retention import RetentionPolicy, pruning

log = logging.getLogger("relay.retention")

# Between two batches: requests waiting for the write lock get it first.
PAUSE_BETWEEN_BATCHES_SECONDS = 0.05


async def run_retention(state: RelayState) -> None:
    """Prune every `retention_interval_seconds` until cancelled, starting at a random point of the
    first interval so that replicas started together do not prune together."""
    interval = state.settings.retention_interval_seconds
    policy = state.settings.retention
    attempts = Retrying("prune old rows (the database keeps growing meanwhile)")
    await anyio.sleep(random.uniform(0.0, interval))
    while True:
        try:
            deleted = await _prune_between_requests(state, policy)
        except Exception as error:
            attempts.failed(error)
        else:
            attempts.succeeded()
            if any(deleted.values()):
                log.info("pruned %s", ", ".join(f"{count} {table}" for table, count in deleted.items() if count))
        await anyio.sleep(interval)


async def _prune_between_requests(state: RelayState, policy: RetentionPolicy) -> dict[str, int]:
    now = state.clock()
    deleted = {rule.table: 0 for rule, _ in policy.cutoffs(now)}
    steps = pruning(state.store, policy, now)
    # Each batch runs on a store thread; the generator is only ever advanced by one of them at a time.
    while (step := await state.db(next, steps, None)) is not None:
        table, count = step
        deleted[table] += count
        if count:
            state.metrics.pruned_rows.labels(table).inc(count)
        await anyio.sleep(PAUSE_BETWEEN_BATCHES_SECONDS)
    return deleted
