"""The Prometheus catalogue: every metric the relay exports, in one place.

Label values come from small closed sets or operator-chosen names (accounts, key names):
never a prompt, an id, a session or a secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .records import ACCOUNT_STATES, Account
from .store.retention import PRUNED_TABLES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# A webhook's first attempt takes milliseconds; retries follow the schedule up to hours later.
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 86400.0, 172800.0)
# The closed label sets of the watcher's and the deliveries' counters: every value is exported
# from the start (at 0), so `increase()` sees the first event after a restart too.
WATCHER_POLL_RESULTS = ("changed", "unchanged", "rate_limited", "error", "not_found", "paused")
WATCHER_STOP_REASONS = ("max_age", "account_removed", "not_found")
WEBHOOK_RESULTS = ("delivered", "http_error", "redirect", "timeout", "connect_error", "unsafe_target", "gone")
WEBHOOK_DISABLE_REASONS = ("gone", "failing")
# The relay's own time per request is milliseconds; the tail matters more than the body.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AccountStateCollector(Collector):
    """`relay_account_state` and cooldowns, read from the database at scrape time.

    The database is the one view every worker shares, so any worker answers a scrape the same.
    """

    def __init__(self, accounts: Callable[[], Iterable[Account]]) -> None:
        self._accounts = accounts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state_family = GaugeMetricFamily(
            "relay_account_state",
            "1 for the account's current state, 0 for the others.",
            labels=["account", "state"],
        )
        cooldown_family = GaugeMetricFamily(
            "relay_account_cooldown_remaining_seconds",
            "Seconds until a rate-limited account is used again by itself (0 when not cooling down).",
            labels=["account"],
        )
        now = time.time()
        for account in self._accounts():
            current = account.effective_state(now)
            for state in ACCOUNT_STATES:
                state_family.add_metric([account.name, state], 1.0 if state == current else 0.0)
            left = (account.state_until or now) - now if current == "rate_limited" else 0.0
            cooldown_family.add_metric([account.name], max(0.0, left))
        yield state_family
        yield cooldown_family


class SessionCollector(Collector):
    """`relay_sticky_sessions`: live session mappings, counted in the database at scrape time."""

    def __init__(self, live_sessions: Callable[[float], int]) -> None:
        self._live_sessions = live_sessions

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "relay_sticky_sessions", "Sticky session mappings that have not expired.", value=self._live_sessions(time.time())
        )


class WorkerFiles(Collector):
    """The workers' metric files summed, as prometheus_client's MultiProcessCollector sums them,
    less the empty ones. A worker creates its file before sizing it; the collector fails on an
    empty file, and with it the whole scrape (prometheus/client_python#1199): at every worker's
    start, and for good after a worker killed in between (uvicorn kills one that misses its
    health check) left one behind. An empty file holds nothing to count."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        files = [str(file) for file in self.path.glob("*.db") if _has_content(file)]
        merged: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)
        return merged


def _has_content(file: Path) -> bool:
    try:
        return file.stat().st_size > 0
    except FileNotFoundError:  # a live gauge's file, removed as its worker exited
        return False


class RelayRegistry(CollectorRegistry):
    """What `/metrics` serves.

    In multiprocess mode (several workers) the instruments below write to shared files, which
    WorkerFiles sums over workers at each scrape; registering them here as well would serve
    this one worker's share beside the sum, so they are left out.
    Scrape-time collectors (database views) register as usual and run once per scrape.
    """

    def __init__(self, multiprocess_dir: Path | None) -> None:
        super().__init__()
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            super().register(WorkerFiles(multiprocess_dir))

    def register(self, collector: Collector) -> None:
        if self.multiprocess_dir is not None and isinstance(collector, MetricWrapperBase):
            return
        super().register(collector)


Labelled = TypeVar("Labelled", Counter, Histogram)


def children_of(metric: Labelled) -> Callable[..., Labelled]:
    """`metric.labels` for the request path: a child, once made, is found in a dict.

    prometheus_client's `labels` checks the values and takes a lock at every call: 3.8 µs
    against 1.5 with the child at hand (measured), four times a request. Children are never
    removed from the relay's metrics, so one kept here is always the one the registry exports.
    """
    made: dict[tuple[str, ...], Labelled] = {}

    def child(*values: str) -> Labelled:
        found = made.get(values)
        if found is None:
            found = made[values] = metric.labels(*values)
        return found

    return child


class Metrics:
    def __init__(
        self,
        accounts: Callable[[], Iterable[Account]],
        live_sessions: Callable[[float], int] | None = None,
        multiprocess_dir: Path | None = None,
    ) -> None:
        # prometheus_client adds a `<name>_created` gauge to every counter and histogram in a
        # single process (not under multiprocess mode): series docs/metrics.md does not list, and
        # one worker would export what two do not. A process-wide switch, the same for every Metrics.
        disable_created_metrics()
        self.registry = RelayRegistry(multiprocess_dir)
        self.requests = Counter(
            "relay_requests_total",
            "Requests the relay answered, by route and HTTP status (scrapes and health checks excluded).",
            ["route", "status"],
            registry=self.registry,
        )
        self.overhead = Histogram(
            "relay_request_overhead_seconds",
            "Time the relay itself added to a request: total minus time waiting on upstreams.",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "relay_requests_in_flight",
            "Requests being handled now (summed over workers).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.upstream_requests = Counter(
            "relay_upstream_requests_total",
            "Upstream attempts by account, route and outcome.",
            ["account", "account_type", "route", "status_class", "error_class"],
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            "relay_upstream_request_duration_seconds",
            "Time from sending an upstream request to having its whole answer.",
            ["account", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "relay_auth_failures_total",
            "Requests refused for their relay key, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.sticky_evictions = Counter(
            "relay_sticky_evictions_total",
            "Sticky session mappings dropped, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.no_account = Counter(
            "relay_no_account_available_total",
            "Requests answered 503 because no upstream account was usable.",
            ["route"],
            registry=self.registry,
        )
        self.failovers = Counter(
            "relay_failovers_total",
            "New work retried on another account, by what went wrong on the first.",
            ["from_error_class"],
            registry=self.registry,
        )
        self.videos = Counter(
            "relay_videos_total",
            "Video jobs that reached a final status, counted once when the relay first sees it.",
            ["status"],
            registry=self.registry,
        )
        self.video_seconds = Counter(
            "relay_video_seconds_total",
            "Seconds of video rendered by completed jobs (key = the relay key's name).",
            ["account", "key", "model"],
            registry=self.registry,
        )
        # Relay-side limits (issue: quotas). `limit` is one of relay.limits.LIMIT_NAMES.
        self.quota_hits = Counter(
            "relay_quota_hits_total",
            "Requests refused by the relay's own per-key limits (not upstream 429s), by key name and limit.",
            ["key", "limit"],
            registry=self.registry,
        )
        self.cost_usd = Counter(
            "relay_cost_usd_total",
            "Estimated USD settled for completed jobs, from the price table (key = the relay key's name).",
            ["account", "key", "model"],
            registry=self.registry,
        )
        # The job watcher (relay.watcher) and webhook deliveries (relay.webhooks).
        self.watcher_polls = Counter(
            "relay_watcher_polls_total",
            "Polls of unfinished jobs by the relay's job watcher, by result (paused: its account is unauthorized, no call made).",
            ["result"],
            registry=self.registry,
        )
        self.watcher_stops = Counter(
            "relay_watcher_stops_total",
            "Unfinished jobs the watcher stopped following, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "relay_webhook_deliveries_total",
            "Webhook delivery attempts by result.",
            ["result"],
            registry=self.registry,
        )
        self.webhook_delivery_latency = Histogram(
            "relay_webhook_delivery_latency_seconds",
            "Time from an event being written to its delivery being accepted by the endpoint.",
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self.webhook_endpoints_disabled = Counter(
            "relay_webhook_endpoints_disabled_total",
            "Webhook endpoints the relay disabled, by reason (gone: it answered 410; failing: every delivery failed for too long).",
            ["reason"],
            registry=self.registry,
        )
        self.pruned_rows = Counter(
            "relay_pruned_rows_total",
            "Rows the relay's pruning deleted, by table (docs/deployment.md, Pruning).",
            ["table"],
            registry=self.registry,
        )
        for counter, values in (
            (self.pruned_rows, PRUNED_TABLES),
            (self.watcher_polls, WATCHER_POLL_RESULTS),
            (self.watcher_stops, WATCHER_STOP_REASONS),
            (self.webhook_deliveries, WEBHOOK_RESULTS),
            (self.webhook_endpoints_disabled, WEBHOOK_DISABLE_REASONS),
        ):
            for value in values:
                counter.labels(value)
        # The four a request updates, by label values (see `children_of`).
        self.requests_by = children_of(self.requests)
        self.overhead_by = children_of(self.overhead)
        self.upstream_requests_by = children_of(self.upstream_requests)
        self.upstream_duration_by = children_of(self.upstream_duration)
        self.registry.register(AccountStateCollector(accounts))
        if live_sessions is not None:
            self.registry.register(SessionCollector(live_sessions))
