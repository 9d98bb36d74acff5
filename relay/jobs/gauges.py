"""Gauges of the relay's background work, read from the database at scrape time (so any worker
answers a scrape the same): jobs in flight, the webhook outbox, disabled endpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..store import Store

# Always present, at 0 when empty, so alert rules and panels see a series.
_IN_FLIGHT_STATUSES = ("queued", "in_progress", "unwatched")


class BackgroundWorkCollector(Collector):
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterable[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            "relay_jobs_in_flight",
            "Unfinished jobs by last known status; `unwatched` for those the watcher gave up (too old, account removed, gone upstream).",
            labels=["status"],
        )
        counts = self._store.jobs_in_flight()
        for status in _IN_FLIGHT_STATUSES:
            in_flight.add_metric([status], counts.get(status, 0))
        # Statuses outside the contract's: an upstream may report anything, counted apart.
        other = sum(n for status, n in counts.items() if status not in _IN_FLIGHT_STATUSES)
        in_flight.add_metric(["other"], other)
        yield in_flight
        backlog = self._store.webhook_backlog(self._clock())
        yield GaugeMetricFamily(
            "relay_webhook_outbox_pending", "Webhook deliveries waiting for their next attempt.", value=backlog["pending"]
        )
        yield GaugeMetricFamily(
            "relay_webhook_outbox_oldest_seconds",
            "Age of the oldest webhook delivery still pending (0 when none is).",
            value=backlog["oldest_pending_seconds"],
        )
        yield GaugeMetricFamily(
            "relay_webhook_disabled_endpoints",
            "Webhook endpoints disabled (gone, failing, or by an operator).",
            value=backlog["disabled_endpoints"],
        )
