"""The Prometheus catalogue: every metric the relay exports, in one place.

Label values come from small closed sets or operator-chosen names (accounts, key names):
never a prompt, an id, a session or a secret.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .pool import Upstream
from .store import ACCOUNT_STATES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class AccountStateCollector(Collector):
    """`relay_account_state`, computed at scrape time from the account snapshot."""

    def __init__(self, upstreams: Callable[[], Iterable[Upstream]]) -> None:
        self._upstreams = upstreams

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "relay_account_state",
            "1 for the account's current state, 0 for the others.",
            labels=["account", "state"],
        )
        now = time.time()
        for upstream in self._upstreams():
            current = upstream.account.effective_state(now)
            for state in ACCOUNT_STATES:
                family.add_metric([upstream.name, state], 1.0 if state == current else 0.0)
        yield family


class Metrics:
    def __init__(self, upstreams: Callable[[], Iterable[Upstream]]) -> None:
        self.registry = CollectorRegistry()
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
        self.registry.register(AccountStateCollector(upstreams))
