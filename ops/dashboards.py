"""The Grafana dashboards, as code: `python -m ops.dashboards` writes dashboards/*.json.

The JSON stays committed (Grafana imports it as-is); tests/test_dashboards.py checks that it
matches this file, that every metric it queries is one the relay exports, and the live test
asks a real Prometheus for every expression here.

Every panel's datasource is the `${DS_PROMETHEUS}` dashboard variable (type datasource), so
the same file works through the import UI, the HTTP API and file provisioning.

Several relay instances (replicas on one database) each serve /metrics. Counters, histograms
and relay_requests_in_flight are per process and are summed over instances; the gauges read
from the database are the same on every instance and are taken with max (or min) by their own
labels, never summed (docs/metrics.md, "Several instances"; tests/test_dashboards.py checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "dashboards"
# Grafana 12's dashboard schema; older Grafana versions import it too.
SCHEMA_VERSION = 41
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
RATE = "$__rate_interval"
FAILED_ATTEMPTS = 'relay_upstream_requests_total{error_class!="none"}'


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    # Instant queries for tables and bar gauges: one value per series, over the whole range.
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"  # timeseries | stat | bargauge
    unit: str = "short"
    stacked: bool = False
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    tags: tuple[str, ...] = field(default=("video-relay",))

    @property
    def file_name(self) -> str:
        return self.uid.removeprefix("video-relay-") + ".json"


def rate(expr: str) -> str:
    return f"rate({expr}[{RATE}])"


def quantile(q: float, histogram: str, by: str) -> Target:
    groups = f"{by}, le" if by else "le"
    legend = f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else "")
    return Target(f"histogram_quantile({q}, sum by ({groups}) ({rate(histogram + '_bucket')}))", legend)


QUOTAS = Dashboard(
    uid="video-relay-quotas",
    title="video-relay / Quotas",
    description="Upstream rate limits and cooldowns, relay-side per-key limits, budgets and spend.",
    panels=(
        Panel(
            "Upstream 429s per account",
            "Upstream answers classified rate_limited, per second, by account.",
            (Target("sum by (account) (" + rate('relay_upstream_requests_total{error_class="rate_limited"}') + ")", "{{account}}"),),
            unit="reqps",
        ),
        Panel(
            "Accounts in cooldown now",
            "Accounts rate-limited right now (read from the database at scrape time).",
            (Target('sum(max by (account) (relay_account_state{state="rate_limited"}))', "in cooldown"),),
            kind="stat",
            width=6,
        ),
        Panel(
            "Cooldown time left",
            "Seconds until each cooling account is used again by itself.",
            (Target("max by (account) (relay_account_cooldown_remaining_seconds) > 0", "{{account}}", instant=True),),
            kind="bargauge",
            unit="s",
            width=6,
        ),
        Panel(
            "Upstream remaining requests per account",
            "The latest x-ratelimit-remaining-requests each account's upstream sent, and its x-ratelimit-limit-requests.",
            (
                Target("max by (account) (relay_account_ratelimit_remaining)", "remaining {{account}}"),
                Target("max by (account) (relay_account_ratelimit_limit)", "limit {{account}}"),
            ),
        ),
        Panel(
            "Relay quota hits per key and limit",
            "Requests the relay refused for a key's own limits (429 relay_rate_limited, relay_budget_exceeded, ...).",
            (Target(f"sum by (key, limit) ({rate('relay_quota_hits_total')})", "{{key}} {{limit}}"),),
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Budget remaining per key",
            "USD left in each key's daily and monthly budget (keys with a USD budget only).",
            (Target("min by (key, period) (relay_key_budget_remaining_usd)", "{{key}} ({{period}})"),),
            unit="currencyUSD",
        ),
        Panel(
            "Video seconds per key and model",
            "Seconds of video rendered by completed jobs, per hour, by relay key and model.",
            (Target(f"sum by (key, model) ({rate('relay_video_seconds_total')}) * 3600", "{{key}} {{model}}"),),
            unit="s",
            stacked=True,
        ),
        Panel(
            "USD per key and model",
            "Estimated spend of completed jobs, USD per hour, by relay key and model.",
            (Target(f"sum by (key, model) ({rate('relay_cost_usd_total')}) * 3600", "{{key}} {{model}}"),),
            unit="currencyUSD",
            stacked=True,
        ),
    ),
)

ERRORS = Dashboard(
    uid="video-relay-errors",
    title="video-relay / Errors",
    description="What goes wrong, where: upstream error classes per account, refused keys, failovers, 5xx.",
    panels=(
        Panel(
            "Upstream errors by class and account",
            "Upstream attempts that did not succeed, per second, stacked by error class and account.",
            (
                Target(
                    "sum by (error_class, account) (" + rate(FAILED_ATTEMPTS) + ")",
                    "{{error_class}} {{account}}",
                ),
            ),
            unit="reqps",
            stacked=True,
            width=24,
        ),
        Panel(
            "Auth failures by reason",
            "Requests refused for their relay key: missing, malformed, unknown, revoked, expired, forbidden.",
            (Target(f"sum by (reason) ({rate('relay_auth_failures_total')})", "{{reason}}"),),
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Unauthorized accounts",
            "Accounts out of rotation after an upstream 401/402, until `relayctl accounts reset` or `rotate`.",
            (Target('max by (account) (relay_account_state{state="unauthorized"}) == 1', "{{account}}", instant=True),),
            kind="bargauge",
        ),
        Panel(
            "Failovers",
            "New work retried on another account, by what went wrong on the first.",
            (Target(f"sum by (from_error_class) ({rate('relay_failovers_total')})", "from {{from_error_class}}"),),
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "5xx answers and upstream timeouts",
            "Answers with a 5xx status by route, and upstream timeouts and connection errors by account.",
            (
                Target("sum by (route, status) (" + rate('relay_requests_total{status=~"5.."}') + ")", "{{status}} {{route}}"),
                Target(
                    "sum by (account, error_class) ("
                    + rate('relay_upstream_requests_total{error_class=~"timeout|connection_error"}')
                    + ")",
                    "{{error_class}} {{account}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "No account available",
            "Requests answered 503 no_upstream_account, by route.",
            (Target(f"sum by (route) ({rate('relay_no_account_available_total')})", "{{route}}"),),
            unit="reqps",
        ),
        Panel(
            "Upstream error ratio",
            "Share of upstream attempts that failed (any error class).",
            (
                Target(
                    f"sum({rate(FAILED_ATTEMPTS)}) / sum({rate('relay_upstream_requests_total')})",
                    "error ratio",
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Top failing accounts",
            "The five accounts with the most failed upstream attempts over the dashboard's time range.",
            (
                Target(
                    'topk(5, sum by (account) (increase(relay_upstream_requests_total{error_class!="none"}[$__range])) > 0)',
                    "{{account}}",
                    instant=True,
                ),
            ),
            kind="bargauge",
            width=24,
        ),
    ),
)

TRAFFIC = Dashboard(
    uid="video-relay-traffic",
    title="video-relay / Traffic & latency",
    description="Request rates, upstream latency, what the relay itself costs, sessions and videos.",
    panels=(
        Panel(
            "Requests by route and status",
            "Requests the relay answered, per second (scrapes and health checks excluded).",
            (Target(f"sum by (route, status) ({rate('relay_requests_total')})", "{{route}} {{status}}"),),
            unit="reqps",
            stacked=True,
            width=24,
        ),
        Panel(
            "Upstream latency per account",
            "p50, p95 and p99 of the time from sending an upstream request to having its whole answer.",
            tuple(quantile(q, "relay_upstream_request_duration_seconds", "account") for q in (0.5, 0.95, 0.99)),
            unit="s",
        ),
        Panel(
            "Relay overhead",
            "Time the relay itself adds to a request (total minus upstream wait); also in x-relay-overhead-ms.",
            tuple(quantile(q, "relay_request_overhead_seconds", "") for q in (0.5, 0.95, 0.99)),
            unit="s",
        ),
        Panel(
            "In-flight requests",
            "Requests being handled now by each relay instance (summed over its workers), stacked: the top is the whole relay.",
            (Target("sum by (instance) (relay_requests_in_flight)", "{{instance}}"),),
            stacked=True,
            width=8,
        ),
        Panel(
            "Sticky sessions and evictions",
            "Live session mappings, and mappings dropped per second by reason.",
            (
                Target("max(relay_sticky_sessions)", "sessions"),
                Target(f"sum by (reason) ({rate('relay_sticky_evictions_total')})", "evicted: {{reason}}"),
            ),
            width=8,
        ),
        Panel(
            "Videos by final status",
            "Jobs that reached completed or failed, per second.",
            (Target(f"sum by (status) ({rate('relay_videos_total')})", "{{status}}"),),
            unit="reqps",
            stacked=True,
            width=8,
        ),
        Panel(
            "Upstream attempts by account and route",
            "Every upstream attempt, per second, by account and route.",
            (Target(f"sum by (account, route) ({rate('relay_upstream_requests_total')})", "{{account}} {{route}}"),),
            unit="reqps",
            stacked=True,
            width=24,
        ),
    ),
)

JOBS = Dashboard(
    uid="video-relay-jobs",
    title="video-relay / Jobs & webhooks",
    description="The relay's background work: the job watcher polling unfinished jobs, and webhook deliveries from the outbox.",
    panels=(
        Panel(
            "Jobs in flight by status",
            "Unfinished jobs by last known status (read from the database at scrape time); unwatched: jobs the watcher gave up.",
            (Target("max by (status) (relay_jobs_in_flight)", "{{status}}"),),
            stacked=True,
        ),
        Panel(
            "Watcher polls by result",
            "The job watcher's polls per second by result; paused: the account is unauthorized, so no upstream call was made.",
            (Target(f"sum by (result) ({rate('relay_watcher_polls_total')})", "{{result}}"),),
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Watcher upstream attempts by account and error class",
            "The watcher's upstream attempts (route watch), per second, by account and error class (none: it went through).",
            (
                Target(
                    "sum by (account, error_class) (" + rate('relay_upstream_requests_total{route="watch"}') + ")",
                    "{{account}} {{error_class}}",
                ),
            ),
            unit="reqps",
            stacked=True,
            width=16,
        ),
        Panel(
            "Jobs the watcher gave up",
            "Jobs the watcher stopped following over the dashboard's time range, by reason (max_age, account_removed, not_found).",
            (Target("sum by (reason) (increase(relay_watcher_stops_total[$__range])) > 0", "{{reason}}", instant=True),),
            kind="bargauge",
            width=8,
        ),
        Panel(
            "Webhook deliveries by result",
            "Delivery attempts per second: delivered, or why not (http_error, redirect, timeout, connect_error, unsafe_target, gone).",
            (Target(f"sum by (result) ({rate('relay_webhook_deliveries_total')})", "{{result}}"),),
            unit="reqps",
            stacked=True,
        ),
        Panel(
            "Webhook delivery latency",
            "p50 and p95 of the time from an event being written to its delivery being accepted, retries included.",
            tuple(quantile(q, "relay_webhook_delivery_latency_seconds", "") for q in (0.5, 0.95)),
            unit="s",
        ),
        Panel(
            "Webhook outbox pending",
            "Deliveries waiting for their next attempt, retries and disabled endpoints' deliveries included (from the database).",
            (Target("max(relay_webhook_outbox_pending)", "pending"),),
            width=8,
        ),
        Panel(
            "Oldest pending delivery",
            "How long the oldest pending delivery has waited since its event was written (0 when none is pending).",
            (Target("max(relay_webhook_outbox_oldest_seconds)", "oldest"),),
            unit="s",
            width=8,
        ),
        Panel(
            "Disabled webhook endpoints",
            "Endpoints disabled now (gone, failing or by an operator; from the database), and those the relay just disabled, by reason.",
            (
                Target("max(relay_webhook_disabled_endpoints)", "disabled"),
                Target(
                    f"sum by (reason) (increase(relay_webhook_endpoints_disabled_total[{RATE}]))",
                    "newly disabled: {{reason}}",
                ),
            ),
            width=8,
        ),
    ),
)

DASHBOARDS = (QUOTAS, ERRORS, TRAFFIC, JOBS)


def _layout(panels: tuple[Panel, ...]) -> list[dict[str, int]]:
    """Left to right, wrapping at Grafana's 24 columns."""
    positions, x, y, row_height = [], 0, 0, 0
    for panel in panels:
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        positions.append({"h": panel.height, "w": panel.width, "x": x, "y": y})
        x += panel.width
        row_height = max(row_height, panel.height)
    return positions


def _panel_json(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    options: dict[str, Any]
    if panel.kind == "timeseries":
        custom = {
            "drawStyle": "line",
            "fillOpacity": 30 if panel.stacked else 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if panel.stacked else "none"},
        }
        options = {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        options = {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        }
    else:
        options = {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": DATASOURCE,
                "refId": chr(ord("A") + index),
                "expr": target.expr,
                "legendFormat": target.legend or "__auto",
                "instant": target.instant,
                "range": not target.instant,
            }
            for index, target in enumerate(panel.targets)
        ],
    }


def to_grafana(dashboard: Dashboard) -> dict[str, Any]:
    positions = _layout(dashboard.panels)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "DS_PROMETHEUS",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                }
            ]
        },
        "panels": [_panel_json(panel, index + 1, positions[index]) for index, panel in enumerate(dashboard.panels)],
    }


def rendered() -> dict[str, str]:
    """File name -> the JSON text this module produces for it."""
    return {d.file_name: json.dumps(to_grafana(d), indent=2, ensure_ascii=False) + "\n" for d in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs instead of writing")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m ops.dashboards", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
