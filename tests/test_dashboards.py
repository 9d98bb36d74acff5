"""The metric catalogue, its documentation, the dashboards and the alert rules stay in sync."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from ops import dashboards
from relay.jobs.gauges import BackgroundWorkCollector
from relay.keys import issue_key
from relay.metrics import Metrics
from relay.pool import Upstream
from relay.store import Account, AccountQuota, Store
from relay.usage_metrics import UsageCollector

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "metrics.md"
ALERTS = ROOT / "dashboards" / "alerts.yml"
METRIC_NAME = re.compile(r"\brelay_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def fake_account(name: str) -> Account:
    now = time.time()
    return Account(
        id=1,
        name=name,
        type="openai-responses",
        base_api="http://127.0.0.1:9/v1",
        priority=1,
        enabled=True,
        state="rate_limited",
        state_reason="test",
        state_since=now,
        state_until=now + 30,
        last_error=None,
        last_used_at=None,
        created_at=now,
        credential_encrypted="x",
    )


def exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every metric the relay exports: name -> (type, label names), read from the code."""
    return {name: (kind, labels) for name, (kind, labels, _) in catalogue().items()}


def sources() -> dict[str, str]:
    """Every metric the relay exports -> `process` (an instrument each relay process keeps, so
    N instances export N shares) or `database` (read from the database at scrape time, so every
    instance exports the same value)."""
    return {name: source for name, (_, _, source) in catalogue().items()}


def catalogue() -> dict[str, tuple[str, tuple[str, ...], str]]:
    metrics = Metrics(lambda: [fake_account("a")], lambda now: 0)
    found: dict[str, tuple[str, tuple[str, ...], str]] = {}
    instruments = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    names = set()
    for instrument in instruments:
        kind = str(instrument._type)
        name = instrument._name + ("_total" if kind == "counter" else "")
        found[name] = (kind, tuple(instrument._labelnames), "process")
        names.add(instrument._name)
    # Everything else comes from a scrape-time collector, and those read the database.
    for family in [*metrics.registry.collect(), *usage_families()]:
        if family.name in names:
            continue
        labels = tuple(sorted({label for sample in family.samples for label in sample.labels}))
        found[family.name + ("_total" if family.type == "counter" else "")] = (family.type, labels, "database")
    # The watcher's and the outbox's gauges, database reads too.
    for family in background_families():
        labels = tuple(sorted({label for sample in family.samples for label in sample.labels}))
        found[family.name] = (family.type, labels, "database")
    return found


def usage_families() -> list[Any]:
    """What the database-backed usage collector exports, from a database with one of everything."""
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "relay.db")
        store.ensure_schema()
        issue_key(store, "k", ["openai"], limits={"usd_per_day": 1.0, "usd_per_month": 2.0})
        store.write_batch([], {}, {}, {}, [AccountQuota("a", time.time(), 100, 50, None)])
        families = list(UsageCollector(store, lambda: [Upstream(fake_account("a"), "x")], time.time).collect())
        store.close()
    assert all(family.samples for family in families)
    return families


def background_families() -> list[Any]:
    """What the database-backed gauges of the watcher and the webhook outbox export (every one
    has a series even on an empty database)."""
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "relay.db")
        store.ensure_schema()
        families = list(BackgroundWorkCollector(store, time.time).collect())
        store.close()
    assert all(family.samples for family in families)
    return families


def documented() -> dict[str, dict[str, Any]]:
    """The catalogue table in docs/metrics.md: name -> type, labels, source, used-by entries."""
    rows: dict[str, dict[str, Any]] = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[0].startswith("`relay_"):
            continue
        name = cells[0].strip("`")
        labels = tuple(sorted(re.findall(r"`([a-z_]+)`", cells[2])))
        used_by = {entry.strip() for entry in cells[5].split(";") if entry.strip() and entry.strip() != "—"}
        source = cells[4].split(":")[0].strip()
        rows[name] = {"type": cells[1].split()[0], "labels": labels, "source": source, "used_by": used_by}
    return rows


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def metrics_in(expr: str, histograms: set[str]) -> set[str]:
    names = set()
    for name in METRIC_NAME.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def users() -> dict[str, set[str]]:
    """metric -> the panels ('Dashboard: panel title') and alerts ('alert Name') that query it."""
    histograms = {name for name, (kind, _) in exported().items() if kind == "histogram"}
    used: dict[str, set[str]] = {}
    for board in dashboards.DASHBOARDS:
        short = board.title.split(" / ", 1)[1]
        for panel in board.panels:
            for target in panel.targets:
                for name in metrics_in(target.expr, histograms):
                    used.setdefault(name, set()).add(f"{short}: {panel.title}")
    for rule in alert_rules():
        for name in metrics_in(rule["expr"], histograms):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    return used


def queries() -> list[tuple[str, str]]:
    """(where, expression) for every panel target and alert rule."""
    found = []
    for board in dashboards.DASHBOARDS:
        for panel in board.panels:
            found += [(f"{board.title}: {panel.title}", target.expr) for target in panel.targets]
    found += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return found


@dataclass(frozen=True)
class Call:
    """A function or aggregation around a metric: `max by (account) (...)` is
    Call("max", "by", ("account",))."""

    name: str
    grouping: str = ""
    labels: tuple[str, ...] = ()


CALL_BEFORE_PAREN = re.compile(r"([a-z_]*)\s*(?:(by|without)\s*\(([^()]*)\)\s*)?$")
METRIC_AT = re.compile(r"relay_[a-z0-9_]+\b(?!\s*\()")


def metric_uses(expr: str) -> list[tuple[str, list[Call]]]:
    """Each relay metric an expression reads, with the calls around it, innermost first.

    Enough of PromQL for the relay's own expressions: label matchers, ranges and strings are
    skipped; `agg by (labels) (...)` is one call (the grouping written before the argument).
    """
    uses: list[tuple[str, list[Call]]] = []
    stack: list[Call] = []
    closing = {"{": "}", "[": "]", '"': '"'}
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in closing:
            i = expr.index(closing[char], i + 1) + 1
            continue
        if char == "(":
            before = expr[:i]
            if re.search(r"\b(by|without)\s*$", before):
                i = expr.index(")", i) + 1  # the grouping's label list, part of the call that follows
                continue
            match = CALL_BEFORE_PAREN.search(before)
            assert match is not None
            labels = tuple(label.strip() for label in (match.group(3) or "").split(",") if label.strip())
            stack.append(Call(match.group(1), match.group(2) or "", labels))
        elif char == ")":
            stack.pop()
        elif (match := METRIC_AT.match(expr, i)) and (i == 0 or not re.match(r"[a-z0-9_]", expr[i - 1])):
            uses.append((match.group(0), list(reversed(stack))))
            i = match.end()
            continue
        i += 1
    return uses


def aggregation_problems(expr: str, kinds: dict[str, str], sources: dict[str, str]) -> list[str]:
    """What in `expr` would read wrong with several relay instances (replicas) scraped.

    A gauge read from the database is the same on every instance: summing it counts it once per
    instance, so it must be taken with max or min (by labels other than `instance`). A process's
    own numbers are shares of the whole: counters and histograms are summed after rate/increase,
    process gauges are summed.
    """
    problems = []
    histograms = {name for name, kind in kinds.items() if kind == "histogram"}
    for name, calls in metric_uses(expr):
        name = next(iter(metrics_in(name, histograms)))
        names = [call.name for call in calls]
        if sources.get(name) == "database":
            innermost = calls[0] if calls else None
            if innermost is None or innermost.name not in ("max", "min"):
                problems.append(f"{name} is the same on every instance: take max or min, not {names[:1] or 'it bare'}")
            elif innermost.grouping and (innermost.grouping == "by") == ("instance" in innermost.labels):
                problems.append(f"{name} must be taken across instances, not per instance")
        elif kinds.get(name) == "gauge":
            if names[:1] != ["sum"]:
                problems.append(f"{name} is a per-process share: sum it, not {names[:1] or 'it bare'}")
        elif name in kinds and (names[:1] not in (["rate"], ["increase"]) or names[1:2] != ["sum"]):
            problems.append(f"{name} is a per-process counter: sum its rate or increase, not {names[:2] or 'it bare'}")
    return problems


def test_the_aggregation_check_catches_what_would_double_count() -> None:
    kinds = {name: kind for name, (kind, _) in exported().items()}
    where = sources()
    wrong = [
        "sum(relay_account_state)",
        'sum by (account) (relay_account_state{state="active"}) == 0',
        "relay_sticky_sessions",
        "max by (instance) (relay_sticky_sessions)",
        "max without (job) (relay_key_budget_remaining_usd)",
        "avg by (key, period) (relay_key_budget_remaining_usd)",
        "max(relay_requests_in_flight)",
        "rate(relay_requests_total[5m])",
        "max by (route) (rate(relay_requests_total[5m]))",
        'histogram_quantile(0.9, rate(relay_request_overhead_seconds_bucket{route="x"}[5m]))',
    ]
    for expr in wrong:
        assert aggregation_problems(expr, kinds, where), expr
    right = [
        'sum(max by (account) (relay_account_state{state="active"})) == 0',
        "max without (instance, job) (relay_sticky_sessions)",
        "min by (key, period) (relay_key_budget_remaining_usd) < 1",
        "sum by (instance) (relay_requests_in_flight)",
        'sum(rate(relay_requests_total{status=~"5(..)"}[5m])) / sum(rate(relay_requests_total[5m]))',
        "histogram_quantile(0.9, sum by (le) (rate(relay_request_overhead_seconds_bucket[5m])))",
    ]
    for expr in right:
        assert not aggregation_problems(expr, kinds, where), expr


def test_every_query_adds_up_across_instances() -> None:
    """Several replicas on one database each export the database's gauges: no panel or alert
    may count them once per replica, nor take one replica's share of a counter for the whole."""
    kinds = {name: kind for name, (kind, _) in exported().items()}
    where = sources()
    problems = [f"{place}: {problem}" for place, expr in queries() for problem in aggregation_problems(expr, kinds, where)]
    assert not problems, "\n".join(problems)


def test_committed_dashboards_match_the_code() -> None:
    for name, text in dashboards.rendered().items():
        path = ROOT / "dashboards" / name
        assert path.exists() and path.read_text() == text, f"{name} is stale: run python -m ops.dashboards"


def test_dashboards_import_as_is() -> None:
    uids = set()
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        assert board["uid"].startswith("video-relay-") and len(board["uid"]) <= 40
        uids.add(board["uid"])
        assert board["schemaVersion"] == dashboards.SCHEMA_VERSION
        assert "id" not in board, "a dashboard id is per-instance; imports must not carry one"
        (variable,) = [v for v in board["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
        assert variable["type"] == "datasource" and variable["query"] == "prometheus"
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"] and target["expr"].strip()
        # No datasource is named anywhere except through the variable.
        assert not re.search(r'"uid":\s*"(?!\$\{DS_PROMETHEUS\}|video-relay-)', path.read_text())
    assert len(uids) == len(dashboards.DASHBOARDS)


def test_every_exported_metric_is_documented_with_its_type_and_labels() -> None:
    code, doc = exported(), documented()
    undocumented = set(code) - set(doc)
    assert not undocumented, f"add to docs/metrics.md: {sorted(undocumented)}"
    not_exported = set(doc) - set(code)
    assert not not_exported, f"documented but not exported: {sorted(not_exported)}"
    for name, (kind, labels) in code.items():
        assert doc[name]["type"] == kind, name
        assert doc[name]["labels"] == tuple(sorted(labels)), name


def test_docs_say_which_metrics_come_from_the_database() -> None:
    doc = documented()
    for name, source in sources().items():
        assert doc[name]["source"] == {"process": "per process", "database": "database"}[source], (
            f"docs/metrics.md: {name}'s 'across instances' should start with {'per process' if source == 'process' else 'database'}:"
        )


def test_dashboards_and_alerts_query_only_exported_metrics() -> None:
    unknown = set(users()) - set(exported())
    assert not unknown, f"queried but not exported by the relay: {sorted(unknown)}"


def test_docs_name_the_panels_and_alerts_that_use_each_metric() -> None:
    doc, used = documented(), users()
    for name, row in doc.items():
        assert row["used_by"] == used.get(name, set()), (
            f"docs/metrics.md 'used by' for {name} should be: {'; '.join(sorted(used.get(name, set())))}"
        )


def test_labels_are_closed_sets_or_operator_names() -> None:
    # Never ids, prompts, sessions or secrets.
    allowed = {
        "account",
        "account_type",
        "route",
        "status",
        "status_class",
        "error_class",
        "state",
        "reason",
        "from_error_class",
        "key",
        "model",
        "limit",
        "period",
        "result",
        "table",
    }
    for name, (_, labels) in exported().items():
        assert set(labels) <= allowed, name


@pytest.fixture(scope="session")
def promtool() -> Iterator[str]:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (make test installs Debian's prometheus package)")
        pytest.skip("promtool is missing: make test installs Debian's prometheus package")
    yield found


def test_alert_rules_check(promtool: str) -> None:
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    names = {rule["alert"] for rule in alert_rules()}
    assert names == {
        "RelayAllAccountsUnavailable",
        "RelayAccountUnauthorized",
        "RelayUpstream429RateHigh",
        "RelayErrorRatioHigh",
        "RelayDown",
        "RelayNotScraped",
        "RelayBudgetNearlyExhausted",
        "RelayWebhookBacklogGrowing",
        "RelayWebhookEndpointDisabled",
        "RelayJobsGivenUp",
        "RelayWatcherRateLimited",
    }


def test_alert_rules_unit_tests(promtool: str) -> None:
    tests = ROOT / "dashboards" / "alerts.test.yml"
    done = subprocess.run([promtool, "test", "rules", tests.name], cwd=tests.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # Every alert is tested both firing and not firing.
    cases = [case for test in yaml.safe_load(tests.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never tested not firing"


def test_prometheus_config_next_to_the_relay_is_valid(promtool: str) -> None:
    config = ROOT / "dashboards" / "prometheus.yml"
    done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    (job,) = yaml.safe_load(config.read_text())["scrape_configs"]
    assert job["job_name"] == "video-relay"  # what the alert rules select


def test_grafana_provisioning_serves_these_dashboards_from_this_prometheus() -> None:
    provisioning = ROOT / "dashboards" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "video-relay.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "${VIDEO_RELAY_DASHBOARDS}"
    procfile = (ROOT / "dashboards" / "Procfile").read_text()
    assert "VIDEO_RELAY_DASHBOARDS=$PWD/dashboards" in procfile and "GF_PATHS_PROVISIONING=$PWD/dashboards/grafana/provisioning" in procfile
    assert "--config.file=dashboards/prometheus.yml" in procfile
