"""The benchmark's results as ratios against the issue's targets: JSON, a markdown table and a chart."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Targets, all relative to a baseline measured in the same run.
ADDED_P50_MS = 0.5
ADDED_P99_MS = 2.0
LITELLM_FACTOR = 10.0
DOWNLOAD_RATIO = 0.9
# bench/streaming.py's concurrent downloads.
CONCURRENT_CLIENTS = 8
RSS_GROWTH_MIB = 16.0


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Headline figures and whether each target was met (None: not measured)."""
    latency = results["latency"]
    added: dict[str, Any] = {}
    for operation, by_target in latency.items():
        direct = by_target["direct"]
        for name, figures in by_target.items():
            if name == "direct":
                continue
            added.setdefault(name, {})[operation] = {
                "p50_ms": round((figures["p50_us"] - direct["p50_us"]) / 1000, 3),
                "p99_ms": round((figures["p99_us"] - direct["p99_us"]) / 1000, 3),
            }
    relay_added = added.get("relay-1w", {})
    # The latency targets hold on SQLite and on PostgreSQL (issue 16): the one-worker relay and,
    # when measured, one replica on PostgreSQL (two replicas add the balancer's hop).
    judged = [by_operation for name, by_operation in added.items() if name in LATENCY_JUDGED]
    throughput = results["throughput"]
    versus_litellm: dict[str, float | None] = {}
    peak_versus_litellm: dict[str, float] = {}
    relay_rates: dict[str, float] = {}
    for operation, by_concurrency in throughput.items():
        for connections, by_target in by_concurrency.items():
            for workers in (1, 2):
                relay, litellm = by_target.get(f"relay-{workers}w"), by_target.get(f"litellm-{workers}w")
                label = f"{operation} c={connections} {workers}w"
                if relay is not None:
                    relay_rates[label] = relay["rate_within_p99_limit"]
                if relay is not None and litellm is not None:
                    within = litellm["rate_within_p99_limit"]
                    versus_litellm[label] = round(relay["rate_within_p99_limit"] / within, 1) if within > 0 else None
                    if litellm["peak_rate"] > 0:
                        peak_versus_litellm[label] = round(relay["peak_rate"] / litellm["peak_rate"], 1)
    streamed = results["streaming"]
    single, concurrent = streamed["single"], streamed["concurrent"]
    offloaded = streamed.get("offloaded")
    checks = {
        "added_p50_at_c1": all(figures["p50_ms"] <= ADDED_P50_MS for by_operation in judged for figures in by_operation.values()),
        "added_p99_at_c1": all(figures["p99_ms"] <= ADDED_P99_MS for by_operation in judged for figures in by_operation.values()),
        # Where LiteLLM met p99 < 50 ms at no tested rate (None), any rate the relay did meet is
        # a larger multiple; a relay rate of 0 is a miss whatever LiteLLM did.
        "throughput_vs_litellm": all(
            relay_rates[label] > 0 and (ratio is None or ratio >= LITELLM_FACTOR) for label, ratio in versus_litellm.items()
        )
        if versus_litellm
        else None,  # LiteLLM not measured (--no-litellm)
        "download_ratio": (single["ratio_relay_to_direct"] or 0) >= DOWNLOAD_RATIO
        and (concurrent["ratio_relay_to_direct"] or 0) >= DOWNLOAD_RATIO,
        # Behind nginx with downloads offloaded (relay.offload), when the run measured it.
        "download_ratio_offloaded": (offloaded["single"]["ratio_relay_to_direct"] or 0) >= DOWNLOAD_RATIO
        and (offloaded["concurrent"]["ratio_relay_to_direct"] or 0) >= DOWNLOAD_RATIO
        if offloaded
        else None,
        "download_rss_growth": single["relay_rss_growth_max_mib"] <= RSS_GROWTH_MIB,
        "slow_reader_flat": bool(streamed["slow_reader"]["flat"]),
        "vanished_client_released": bool(streamed["disconnect"]["upstream_release"]["released"])
        and streamed["disconnect"]["rss_change_mib"] <= RSS_GROWTH_MIB,
    }
    summary = {
        "added_latency_ms": added,
        "relay_rate_within_p99_limit": relay_rates,
        "relay_vs_litellm_throughput": versus_litellm,
        "relay_vs_litellm_peak_throughput": peak_versus_litellm,
        "download_ratio": single["ratio_relay_to_direct"],
        "concurrent_download_ratio": concurrent["ratio_relay_to_direct"],
        "download_rss_growth_mib": single["relay_rss_growth_max_mib"],
        "concurrent_rss_growth_mib": concurrent["relay_rss_growth_max_mib"],
        "offloaded_download_ratio": offloaded["single"]["ratio_relay_to_direct"] if offloaded else None,
        "offloaded_concurrent_download_ratio": offloaded["concurrent"]["ratio_relay_to_direct"] if offloaded else None,
        "targets_met": checks,
    }
    for floor, name in BEYOND_FLOORS.items():
        if floor in added and relay_added:
            summary[name] = {
                operation: {quantile: round(figures[quantile] - added[floor][operation][quantile], 3) for quantile in ("p50_ms", "p99_ms")}
                for operation, figures in relay_added.items()
            }
    if any(name.startswith(PG_PREFIX) for by_target in latency.values() for name in by_target):
        summary["postgresql_vs_sqlite"] = versus_sqlite(results, added)
    return summary


# Servers that do part of the relay's job and nothing else (bench/floors.py), timed at c=1 beside it.
LATENCY_FLOORS = {
    "floor-nginx": "nginx passing requests on (a proxy in C)",
    "floor-copy": "a process passing bytes both ways (bench/floor_proxy.py)",
    "floor-asgi": "uvicorn and the relay's upstream client passing requests on (bench/floor_asgi.py)",
    "floor-starlette": "the same through starlette with the relay's route table and a middleware (bench/floor_asgi.py)",
}
# The relay's stack, then its stack and framework, without its work: what the relay adds beyond
# each, under these summary names, is the relay's doing.
BEYOND_FLOORS = {"floor-asgi": "relay_beyond_its_stack_ms", "floor-starlette": "relay_beyond_its_framework_ms"}


# The relay on PostgreSQL with N replicas is "relay-pg-Nr"; its SQLite counterpart for throughput
# is the relay with as many workers ("relay-Nw"). At c=1 only one SQLite worker is measured.
PG_PREFIX = "relay-pg-"
LATENCY_JUDGED = ("relay-1w", f"{PG_PREFIX}1r")
PG_REPLICAS = (1, 2)


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator > 0 else None


def versus_sqlite(results: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """The relay on PostgreSQL ÷ the relay on SQLite, same run: added latency at c=1 and throughput;
    and what a second process adds on each (2 ÷ 1, peak rate). None where the divisor is 0."""
    latency: dict[str, float | None] = {}
    for replicas in PG_REPLICAS:
        for operation, figures in added.get(f"{PG_PREFIX}{replicas}r", {}).items():
            sqlite = added.get("relay-1w", {}).get(operation)
            if sqlite is None:
                continue
            for quantile in ("p50_ms", "p99_ms"):
                latency[f"{operation} {quantile[:3]} {replicas}r"] = _ratio(figures[quantile], sqlite[quantile])
    within: dict[str, float | None] = {}
    peak: dict[str, float | None] = {}
    second_process: dict[str, float | None] = {}
    for operation, by_concurrency in results["throughput"].items():
        for connections, by_target in by_concurrency.items():
            for replicas in PG_REPLICAS:
                on_pg, on_sqlite = by_target.get(f"{PG_PREFIX}{replicas}r"), by_target.get(f"relay-{replicas}w")
                if on_pg is None or on_sqlite is None:
                    continue
                label = f"{operation} c={connections} {replicas}r"
                within[label] = _ratio(on_pg["rate_within_p99_limit"], on_sqlite["rate_within_p99_limit"])
                peak[label] = _ratio(on_pg["peak_rate"], on_sqlite["peak_rate"])
            for store, one, two in (("sqlite", "relay-1w", "relay-2w"), ("postgresql", f"{PG_PREFIX}1r", f"{PG_PREFIX}2r")):
                if one in by_target and two in by_target:
                    second_process[f"{store} {operation} c={connections}"] = _ratio(
                        by_target[two]["peak_rate"], by_target[one]["peak_rate"]
                    )
    return {
        "added_latency": latency,
        "rate_within_p99_limit": within,
        "peak_rate": peak,
        "second_process_peak_gain": second_process,
    }


def markdown(results: dict[str, Any], chart_name: str | None = None) -> str:
    summary = results["summary"]
    lines = [
        f"# Benchmark {results['date']}",
        "",
        *([f"![throughput and added latency]({chart_name})", ""] if chart_name else []),
        f"{results['machine']['cores']} cores ({results['machine']['cpu']}), Python {results['machine']['python']}; "
        f"{results['settings']['rounds']} interleaved rounds; load runs of {results['settings']['latency_seconds_per_run']} s "
        f"(latency) and {results['settings']['throughput_seconds_per_run']} s (throughput); "
        f"took {results['duration_seconds']:.0f} s.",
        "",
        "## Targets",
        "",
        "| target | met |",
        "|---|---|",
    ]
    names = {
        "added_p50_at_c1": f"added latency p50 ≤ {ADDED_P50_MS} ms at c=1",
        "added_p99_at_c1": f"added latency p99 ≤ {ADDED_P99_MS} ms at c=1",
        "throughput_vs_litellm": f"≥ {LITELLM_FACTOR:.0f}× LiteLLM's rate at p99 < 50 ms",
        "download_ratio": f"proxied download ≥ {DOWNLOAD_RATIO:.0%} of direct MB/s (one, and {CONCURRENT_CLIENTS} concurrent)",
        "download_ratio_offloaded": f"the same behind nginx, downloads offloaded (one, and {CONCURRENT_CLIENTS} concurrent)",
        "download_rss_growth": f"RSS growth during the download ≤ {RSS_GROWTH_MIB:.0f} MiB",
        "slow_reader_flat": "no growth with a 1 MB/s reader",
        "vanished_client_released": "no growth, upstream released, when the client vanishes",
    }
    for check, met in summary["targets_met"].items():
        lines.append(f"| {names[check]} | {'not measured' if met is None else 'yes' if met else '**no**'} |")

    lines += [
        "",
        "## Latency at concurrency 1 (median of rounds)",
        "",
        "| operation | target | p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for operation, by_target in results["latency"].items():
        for name, figures in by_target.items():
            added = summary["added_latency_ms"].get(name, {}).get(operation)
            lines.append(
                f"| {operation} | {name} | {figures['p50_us'] / 1000:.3f} | {figures['p99_us'] / 1000:.3f} | "
                + (f"{added['p50_ms']:.3f} | {added['p99_ms']:.3f} |" if added else "— | — |")
            )

    lines += _floor_rows(results)

    lines += ["", "## Throughput: highest rate with p99 < 50 ms and no errors (requests/s, median of rounds)", ""]
    lines += _throughput_table(results, lambda slot: f"{slot['rate_within_p99_limit']:.0f}", summary["relay_vs_litellm_throughput"])
    lines += ["", "## Peak throughput without a latency limit (requests/s, median of rounds; p99 ms in brackets)", ""]
    lines += _throughput_table(
        results,
        lambda slot: f"{slot['peak_rate']:.0f} ({slot['peak_p99_us'] / 1000:.0f})",
        summary["relay_vs_litellm_peak_throughput"],
    )

    if "postgresql_vs_sqlite" in summary:
        lines += ["", *_postgresql_section(results)]

    streamed = results["streaming"]
    offloaded = streamed.get("offloaded")
    lines += [
        "",
        f"## Streaming ({streamed['file_bytes'] / 2**30:.2f} GiB file)",
        "",
        "| measurement | direct MB/s | relay MB/s | relay ÷ direct | relay RSS growth MiB |",
        "|---|---|---|---|---|",
        *_download_rows(streamed, ""),
        *(_download_rows(offloaded, ", behind nginx, offloaded") if offloaded else []),
        *_other_proxy_rows(streamed),
        "",
        f"- Slow reader ({streamed['slow_reader']['target_mb_per_second']:.0f} MB/s): relay RSS growth "
        f"{streamed['slow_reader']['rss']['growth_mib']:.1f} MiB.",
        f"- Client gone mid-stream: relay RSS change {streamed['disconnect']['rss_change_mib']:.1f} MiB; upstream "
        f"connection released: {'yes' if streamed['disconnect']['upstream_release']['released'] else 'no'} "
        f"(after {streamed['disconnect']['upstream_release']['seconds']:.2f} s).",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in results["versions"].items() if version) + ".",
    ]
    return "\n".join(lines) + "\n"


def _floor_rows(results: dict[str, Any]) -> list[str]:
    """The relay's added latency beside what each floor adds, and the part that is the relay's own work."""
    summary = results["summary"]
    added = summary["added_latency_ms"]
    floors = [name for name in LATENCY_FLOORS if name in added]
    if "relay-1w" not in added or not floors:
        return []
    lines = [
        "",
        "### What the relay adds beside servers that do part of its job (added ms at c=1, p50 / p99)",
        "",
        *(f"- {name}: {title}" for name, title in LATENCY_FLOORS.items() if name in floors),
        "",
        "| operation | relay-1w | " + " | ".join(floors) + "".join(f" | relay-1w beyond {floor}" for floor in BEYOND_FLOORS) + " |",
        "|---" * (len(floors) + len(BEYOND_FLOORS) + 2) + "|",
    ]
    for operation in results["latency"]:
        beyond = [summary.get(name, {}).get(operation) for name in BEYOND_FLOORS.values()]
        cells = [added[name][operation] for name in ("relay-1w", *floors)] + beyond
        text = [f"{cell['p50_ms']:.3f} / {cell['p99_ms']:.3f}" if cell else "—" for cell in cells]
        lines.append(f"| {operation} | " + " | ".join(text) + " |")
    return lines


# The relay with two workers, and proxies that do nothing else, measured in the same rounds.
OTHER_PROXIES = {
    "relay-2w": "the relay with 2 workers",
    "floor-copy": "a proxy that only copies (bench/floor_proxy.py)",
    "floor-splice": "a proxy that only splices (bench/floor_proxy.py --splice)",
    "floor-uvicorn": "uvicorn alone, answering from memory (bench/floor_uvicorn.py)",
}


def _other_proxy_rows(streamed: dict[str, Any]) -> list[str]:
    """What share of the direct rate each of OTHER_PROXIES keeps, where it was measured."""
    rows = []
    for name, title in OTHER_PROXIES.items():
        if name in streamed:
            rows += _download_rows(streamed[name], f", {title}", rss=False)
    return rows


def _download_rows(measured: dict[str, Any], where: str, *, rss: bool = True) -> list[str]:
    """One download and the concurrent ones, direct and through the relay (or what stands in
    for it); RSS only where it is the relay's."""
    rows = []
    single, concurrent = measured["single"], measured["concurrent"]
    for label, run in (("one download", single), (f"{concurrent['clients']} concurrent downloads", concurrent)):
        growth = f"{run['relay_rss_growth_max_mib']:.1f}" if rss else "—"
        rows.append(
            f"| {label}{where} | {run['direct_mb_per_second']:.0f} | {run['relay_mb_per_second']:.0f} | "
            f"{run['ratio_relay_to_direct']:.2f} | {growth} |"
        )
    return rows


def _postgresql_section(results: dict[str, Any]) -> list[str]:
    compared = results["summary"]["postgresql_vs_sqlite"]
    setup = results.get("postgresql", {})
    server = setup.get("server", {})
    pool = setup.get("pool", {})
    lines = [
        "## Relay on PostgreSQL ÷ relay on SQLite (same run)",
        "",
        f"PostgreSQL {server.get('server_version', '?')}, durability `{setup.get('durability', '?')}` "
        f"(fsync {server.get('fsync', '?')}, synchronous_commit {server.get('synchronous_commit', '?')}, "
        f"full_page_writes {server.get('full_page_writes', '?')}); each replica one worker with a pool of "
        f"{pool.get('min_size', '?')}–{pool.get('max_size', '?')} connections; several replicas sit behind nginx "
        "(round robin). Latency is compared with SQLite's one worker; throughput with as many SQLite workers as "
        "replicas.",
        "",
        "| measurement | " + " | ".join(f"{replicas} replica{'s' if replicas > 1 else ''}" for replicas in PG_REPLICAS) + " |",
        "|---" * (len(PG_REPLICAS) + 1) + "|",
    ]

    def row(title: str, figures: Mapping[str, float | None], label: str) -> str:
        cells = [_ratio_cell(figures, f"{label} {replicas}r") for replicas in PG_REPLICAS]
        return f"| {title} | " + " | ".join(cells) + " |"

    for operation in results["latency"]:
        for quantile in ("p50", "p99"):
            lines.append(row(f"added latency {quantile}, {operation}, c=1", compared["added_latency"], f"{operation} {quantile}"))
    for operation, by_concurrency in results["throughput"].items():
        for connections in by_concurrency:
            label = f"{operation} c={connections}"
            lines.append(row(f"rate with p99 < 50 ms, {label}", compared["rate_within_p99_limit"], label))
            lines.append(row(f"peak rate, {label}", compared["peak_rate"], label))
    gains = compared["second_process_peak_gain"]
    if gains:
        lines += [
            "",
            "What a second process adds (peak rate, 2 ÷ 1): SQLite workers, PostgreSQL replicas.",
            "",
            "| operation | SQLite 2w ÷ 1w | PostgreSQL 2r ÷ 1r |",
            "|---|---|---|",
        ]
        for operation, by_concurrency in results["throughput"].items():
            for connections in by_concurrency:
                label = f"{operation} c={connections}"
                lines.append(f"| {label} | {_ratio_cell(gains, f'sqlite {label}')} | {_ratio_cell(gains, f'postgresql {label}')} |")
    return lines


def _ratio_cell(ratios: Mapping[str, float | None], label: str) -> str:
    if label not in ratios:
        return "—"
    ratio = ratios[label]
    return "SQLite 0" if ratio is None else f"{ratio:.2f}×"


def _throughput_table(results: dict[str, Any], cell: Callable[[dict[str, Any]], str], ratios: Mapping[str, float | None]) -> list[str]:
    """One row per operation and concurrency: each target's `cell`, then relay ÷ LiteLLM per worker count."""
    targets = _target_names(results)
    rows = ["| operation | concurrency | " + " | ".join(targets) + " | relay ÷ LiteLLM (1w, 2w) |", "|---" * (len(targets) + 3) + "|"]
    for operation, by_concurrency in results["throughput"].items():
        for connections, by_target in by_concurrency.items():
            cells = [cell(by_target[name]) if name in by_target else "—" for name in targets]
            labels = [f"{operation} c={connections} {workers}w" for workers in (1, 2)]
            ratio_text = ", ".join(_ratio_text(ratios, label) for label in labels)
            rows.append(f"| {operation} | {connections} | " + " | ".join(cells) + f" | {ratio_text} |")
    return rows


def _ratio_text(ratios: Mapping[str, float | None], label: str) -> str:
    if label not in ratios:
        return "—"
    ratio = ratios[label]
    return "LiteLLM none" if ratio is None else f"{ratio}×"


def _target_names(results: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for by_concurrency in results["throughput"].values():
        for by_target in by_concurrency.values():
            names += [name for name in by_target if name not in names]
    order = {"direct": 0, "relay-1w": 1, "relay-2w": 2, "relay-pg-1r": 3, "relay-pg-2r": 4, "litellm-1w": 5, "litellm-2w": 6}
    return sorted(names, key=lambda name: order.get(name, 9))


def chart(results: dict[str, Any], path: Path) -> None:
    """Throughput within the p99 limit per target, and added latency at c=1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = _target_names(results)
    groups = [(operation, connections) for operation, by_c in results["throughput"].items() for connections in by_c]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 1.6]})
    width = 0.8 / max(1, len(targets))
    for index, name in enumerate(targets):
        rates = [results["throughput"][op][c].get(name, {}).get("rate_within_p99_limit", 0) for op, c in groups]
        left.bar([g + index * width for g in range(len(groups))], rates, width, label=name)
    left.set_xticks([g + width * (len(targets) - 1) / 2 for g in range(len(groups))])
    left.set_xticklabels([f"{op}\nc={c}" for op, c in groups])
    left.set_yscale("log")
    left.set_ylabel("requests/s with p99 < 50 ms (log)")
    left.set_title("Throughput within the latency limit")
    left.legend(fontsize=8)

    added = results["summary"]["added_latency_ms"]
    names = list(added)
    operations = list(results["latency"])
    bar = 0.8 / max(1, 2 * len(names))
    for index, name in enumerate(names):
        for offset, quantile in enumerate(("p50_ms", "p99_ms")):
            values = [added[name][op][quantile] for op in operations]
            right.bar(
                [o + (index * 2 + offset) * bar for o in range(len(operations))],
                values,
                bar,
                label=f"{name} {quantile[:3]}",
            )
    right.axhline(ADDED_P50_MS, color="grey", linestyle="--", linewidth=0.8)
    right.axhline(ADDED_P99_MS, color="grey", linestyle=":", linewidth=0.8)
    right.set_xticks([o + bar * (2 * len(names) - 1) / 2 for o in range(len(operations))])
    right.set_xticklabels(operations)
    right.set_ylabel("added latency vs direct, ms")
    right.set_title("Added latency at c=1")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: dict[str, Any], directory: Path, label: str = "") -> list[Path]:
    """<date>[-label].json, .md and .png in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = results["date"][:10] + (f"-{label}" if label else "")
    json_path, md_path, png_path = (directory / f"{stem}{suffix}" for suffix in (".json", ".md", ".png"))
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(markdown(results, png_path.name))
    chart(results, png_path)
    return [json_path, md_path, png_path]
