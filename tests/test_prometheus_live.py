"""Live: Debian's Prometheus scrapes a 2-worker relay under a workload that hits every error class;
every dashboard query and every alert rule is then asked of Prometheus's HTTP API.

Needs `prometheus` and `promtool` (make test installs Debian's package). Under CI=true their
absence fails the run instead of skipping it.

RELAY_DASHBOARD_PICTURES=DIR renders each dashboard to DIR/<name>.png from the same Prometheus
(see `make dashboard-pictures`); RELAY_LIVE_ROUNDS sets the workload's length (default 3).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_prometheus import (
    ASSERT_WINDOWS,
    LiveStack,
    Workload,
    dump,
    find_prometheus,
    rules_for_a_quick_test,
    start_stack,
    stop,
    substitute,
    wait_until_scraped,
)

from ops import dashboards

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    if find_prometheus() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus/promtool are missing (make test installs Debian's prometheus package)")
        pytest.skip("prometheus/promtool are missing: make test installs Debian's prometheus package")
    workdir = tmp_path_factory.mktemp("live-prometheus")
    rules = rules_for_a_quick_test(ROOT / "dashboards" / "alerts.yml", workdir / "alerts.yml")
    stack = start_stack(workdir, rules)
    try:
        # The first scrape before any traffic, so every counter's increase is seen by rate().
        deadline = time.monotonic() + 15
        while not stack.prometheus.query('up{job="video-relay"} == 1'):
            assert time.monotonic() < deadline, dump(stack)
            time.sleep(0.2)
        workload = Workload(stack)
        workload.set_up()
        workload.run(int(os.environ.get("RELAY_LIVE_ROUNDS", "3")))
        wait_until_scraped(stack)
        pictures = os.environ.get("RELAY_DASHBOARD_PICTURES")
        if pictures:
            from ops.dashboard_pictures import render_all

            render_all(stack.prometheus.url, stack.started_at, time.time(), Path(pictures))
        yield stack
    finally:
        stack.close()


def targets() -> list[Any]:
    cases = []
    for board in dashboards.DASHBOARDS:
        for panel in board.panels:
            for index, target in enumerate(panel.targets):
                cases.append(pytest.param(target.expr, id=f"{board.uid}:{panel.title}:{index}"))
    return cases


@pytest.mark.parametrize("expr", targets())
def test_every_dashboard_query_returns_data(live: LiveStack, expr: str) -> None:
    result = live.prometheus.query(substitute(expr, ASSERT_WINDOWS))
    values = [float(series["value"][1]) for series in result]
    assert values, f"no data for {expr}\n{dump(live)}"
    assert any(not math.isnan(value) for value in values), f"only NaN for {expr}: {result}"
    if "rate(" in expr or "increase(" in expr:
        # The workload repeats every error class each round: something must have moved.
        assert any(value > 0 for value in values), f"nothing moved for {expr}: {result}"


def expect_alerts(live: LiveStack, firing: set[str], inactive: set[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = live.prometheus.alert_states()
        now_firing = {name for name, state in states.items() if state == "firing"}
        if firing <= now_firing and not (inactive & set(states)):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"alerts: {states}; wanted firing {firing}, inactive {inactive}\n{dump(live)}")
        time.sleep(0.3)


def test_alerts_after_the_workload(live: LiveStack) -> None:
    expect_alerts(
        live,
        firing={
            "RelayAccountUnauthorized",
            "RelayUpstream429RateHigh",
            "RelayErrorRatioHigh",
            "RelayWebhookEndpointDisabled",
            "RelayJobsGivenUp",
        },
        inactive={"RelayAllAccountsUnavailable", "RelayDown", "RelayNotScraped", "RelayWebhookBacklogGrowing", "RelayWatcherRateLimited"},
    )
    unauthorized = live.prometheus.query('ALERTS{alertname="RelayAccountUnauthorized", alertstate="firing"}')
    assert {series["metric"]["account"] for series in unauthorized} == {"acct-401", "acct-402"}
    limited = live.prometheus.query('ALERTS{alertname="RelayUpstream429RateHigh", alertstate="firing"}')
    assert "acct-429" in {series["metric"]["account"] for series in limited}
    disabled = live.prometheus.query('ALERTS{alertname="RelayWebhookEndpointDisabled", alertstate="firing"}')
    assert {series["metric"]["reason"] for series in disabled} == {"gone"}
    given_up = live.prometheus.query('ALERTS{alertname="RelayJobsGivenUp", alertstate="firing"}')
    assert {series["metric"]["reason"] for series in given_up} == {"not_found"}


def test_budget_alert_fires(live: LiveStack) -> None:
    expect_alerts(live, firing={"RelayBudgetNearlyExhausted"}, inactive=set(), timeout=3)
    budget = live.prometheus.query('ALERTS{alertname="RelayBudgetNearlyExhausted", alertstate="firing"}')
    assert {series["metric"]["key"] for series in budget} == {"carol"}


def test_all_accounts_unavailable_then_relay_down(live: LiveStack) -> None:
    """Runs last: it takes every account out of rotation, then stops the relay."""
    store = live.store()
    try:
        for account in store.list_accounts():
            store.set_account_enabled(account.name, False)
    finally:
        store.close()
    expect_alerts(live, firing={"RelayAllAccountsUnavailable"}, inactive={"RelayDown"})
    stop(live.relay)
    expect_alerts(live, firing={"RelayDown"}, inactive={"RelayNotScraped"})
