"""Gauges read from the database at scrape time: right however many workers serve the relay.

`relay_key_budget_remaining_usd{key,period}` for keys with a USD budget, and the upstream's
own request quota per account (`relay_account_ratelimit_remaining` / `_limit`), as last seen
in its x-ratelimit-*-requests headers by any worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .limits import PERIODS, Limits, period_bounds
from .pool import Upstream
from .store import Store


class UsageCollector(Collector):
    def __init__(self, store: Store, upstreams: Callable[[], Iterable[Upstream]], clock: Callable[[], float]) -> None:
        self._store = store
        self._upstreams = upstreams
        self._clock = clock

    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = self._clock()
        budget = GaugeMetricFamily(
            "relay_key_budget_remaining_usd",
            "USD left in a key's budget for the current UTC day or month (budget minus reserved and settled).",
            labels=["key", "period"],
        )
        for key in self._store.list_keys():
            limits = Limits.from_json(key.limits_json)
            if key.state(now) != "active" or not limits.has_budget:
                continue
            for period in PERIODS:
                allowed = limits.budget(period)
                if allowed is None:
                    continue
                used = self._store.key_usage(key.name, since=period_bounds(period, now)[0], now=now)
                budget.add_metric([key.name, period], round(max(0.0, allowed - used.usd), 6))
        yield budget

        remaining = GaugeMetricFamily(
            "relay_account_ratelimit_remaining",
            "Upstream requests left for an account, from its last x-ratelimit-remaining-requests header.",
            labels=["account"],
        )
        limit = GaugeMetricFamily(
            "relay_account_ratelimit_limit",
            "An account's upstream request quota, from its last x-ratelimit-limit-requests header.",
            labels=["account"],
        )
        names = {upstream.name for upstream in self._upstreams()}
        for quota in self._store.account_quotas():
            if quota.account not in names:
                continue
            if quota.remaining_requests is not None:
                remaining.add_metric([quota.account], float(quota.remaining_requests))
            if quota.limit_requests is not None:
                limit.add_metric([quota.account], float(quota.limit_requests))
        yield remaining
        yield limit
