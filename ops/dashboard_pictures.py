"""Render each dashboard to a PNG with matplotlib, from its own queries against a real Prometheus.

Grafana does not run here, so the docs' pictures come from the same PromQL the dashboards
hold, laid out on the same 24-column grid. `make dashboard-pictures` runs the live
Prometheus test with RELAY_DASHBOARD_PICTURES=docs/dashboards, which calls `render_all`.
Needs the `docs` extra (matplotlib).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from ops.dashboards import DASHBOARDS, Dashboard, Panel, Target, _layout  # noqa: E402

GRID_UNIT_INCHES = 0.62  # one of Grafana's 24 columns
ROW_UNIT_INCHES = 0.36  # one grid row (Grafana: 30 px)
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
_LEGEND_FIELD = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend(target: Target, labels: dict[str, str]) -> str:
    if target.legend:
        return _LEGEND_FIELD.sub(lambda match: labels.get(match.group(1), ""), target.legend).strip()
    return ", ".join(f"{name}={value}" for name, value in sorted(labels.items()) if name != "__name__") or "value"


def _query(prometheus: str, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/{path}", params=params, timeout=30).json()
    if answer.get("status") != "success":
        raise RuntimeError(f"{params['query']}: {answer}")
    return answer["data"]["result"]  # type: ignore[no-any-return]


def _expr(target: Target, start: float, end: float, step: float) -> str:
    # Grafana's $__rate_interval is at least four scrape intervals; $__range is the time picked.
    rate_window = f"{max(4, int(step * 4))}s"
    return target.expr.replace("$__rate_interval", rate_window).replace("$__range", f"{int(end - start) + 1}s")


def _style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(title, color=TEXT, fontsize=9, loc="left")
    ax.tick_params(colors=TEXT, labelsize=7)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.grid(color=GRID, linewidth=0.5)


def _timeseries(ax: Axes, panel: Panel, prometheus: str, start: float, end: float, step: float) -> None:
    lines: list[tuple[str, list[datetime], list[float]]] = []
    for target in panel.targets:
        params = {"query": _expr(target, start, end, step), "start": start, "end": end, "step": step}
        for series in _query(prometheus, "query_range", params):
            times = [datetime.fromtimestamp(float(t), UTC) for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            lines.append((legend(target, series["metric"]), times, values))
    if not lines:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        return
    if panel.stacked:
        # Align on a common time axis (series may start late), zero where a series has no point.
        axis = sorted({t for _, times, _ in lines for t in times})
        stacks = []
        for _, times, values in lines:
            by_time = dict(zip(times, values, strict=True))
            stacks.append([0.0 if math.isnan(by_time.get(t, 0.0)) else by_time.get(t, 0.0) for t in axis])
        # matplotlib's stubs leave out the datetimes its date converter takes (here and below).
        ax.stackplot(axis, stacks, labels=[name for name, _, _ in lines], alpha=0.8)  # type: ignore[arg-type]
    else:
        for name, times, values in lines:
            ax.plot(times, values, label=name, linewidth=1.2)  # type: ignore[arg-type]
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.legend(fontsize=6, loc="upper left", framealpha=0.3, labelcolor=TEXT, facecolor=PANEL, ncol=2 if len(lines) > 6 else 1)
    ax.set_ylabel(panel.unit, color=TEXT, fontsize=7)


def _instant(panel: Panel, prometheus: str, start: float, end: float, step: float) -> list[tuple[str, float]]:
    found = []
    for target in panel.targets:
        for series in _query(prometheus, "query", {"query": _expr(target, start, end, step), "time": end}):
            found.append((legend(target, series["metric"]), float(series["value"][1])))
    return found


def _stat(ax: Axes, panel: Panel, prometheus: str, start: float, end: float, step: float) -> None:
    values = _instant(panel, prometheus, start, end, step)
    text = " / ".join(f"{value:g}" for _, value in values) if values else "No data"
    ax.text(0.5, 0.45, text, color="#73bf69", fontsize=28, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _bargauge(ax: Axes, panel: Panel, prometheus: str, start: float, end: float, step: float) -> None:
    values = sorted(_instant(panel, prometheus, start, end, step), key=lambda item: item[1])
    if not values:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        return
    names = [name for name, _ in values]
    ax.barh(names, [value for _, value in values], color="#5794f2")
    for index, (_, value) in enumerate(values):
        ax.text(value, index, f" {value:g}", color=TEXT, va="center", fontsize=7)
    ax.set_xlabel(panel.unit, color=TEXT, fontsize=7)


def render(dashboard: Dashboard, prometheus: str, start: float, end: float, path: Path) -> None:
    positions = _layout(dashboard.panels)
    rows = max(grid["y"] + grid["h"] for grid in positions)
    width, height = 24 * GRID_UNIT_INCHES, rows * ROW_UNIT_INCHES + 0.6
    figure = plt.figure(figsize=(width, height), facecolor=BACKGROUND)
    figure.suptitle(
        f"{dashboard.title}  ({datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M:%S} – {datetime.fromtimestamp(end, UTC):%H:%M:%S} UTC)",
        color=TEXT,
        fontsize=11,
        x=0.01,
        ha="left",
    )
    step = max(1.0, (end - start) / 240)
    top = 0.6 / height
    for panel, grid in zip(dashboard.panels, positions, strict=True):
        # Grid units to figure fractions, with a margin for titles and tick labels.
        left = (grid["x"] * GRID_UNIT_INCHES + 0.55) / width
        bottom = 1 - top - ((grid["y"] + grid["h"]) * ROW_UNIT_INCHES - 0.4) / height
        ax = figure.add_axes((left, bottom, (grid["w"] * GRID_UNIT_INCHES - 0.75) / width, (grid["h"] * ROW_UNIT_INCHES - 0.75) / height))
        _style(ax, panel.title)
        if panel.kind == "timeseries":
            _timeseries(ax, panel, prometheus, start, end, step)
        elif panel.kind == "stat":
            _stat(ax, panel, prometheus, start, end, step)
        else:
            _bargauge(ax, panel, prometheus, start, end, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, facecolor=BACKGROUND)
    plt.close(figure)


def render_all(prometheus: str, start: float, end: float, out_dir: Path) -> list[Path]:
    written = []
    for dashboard in DASHBOARDS:
        path = out_dir / (dashboard.file_name.removesuffix(".json") + ".png")
        render(dashboard, prometheus, start, end, path)
        written.append(path)
    return written
