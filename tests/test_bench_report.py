"""The benchmark's verdicts: each target flips with the figure it is about (no servers needed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench import report
from bench.load import Run, pacing_for


def _latency(p50_us: float, p99_us: float) -> dict[str, float]:
    return {"p50_us": p50_us, "p99_us": p99_us, "rate": 1000.0, "errors": 0}


def _slot(rate: float, peak: float) -> dict[str, float]:
    return {"rate_within_p99_limit": rate, "peak_rate": peak, "peak_p99_us": 80_000.0}


def passing_results() -> dict[str, Any]:
    """Figures that meet every target."""
    by_concurrency = {
        str(c): {
            "direct": _slot(50_000, 60_000),
            "relay-1w": _slot(2_000, 2_500),
            "relay-2w": _slot(3_500, 4_000),
            "litellm-1w": _slot(100, 150),
            "litellm-2w": _slot(0, 200),
        }
        for c in (16, 64)
    }
    return {
        "date": "2026-11-29T12:00:00+00:00",
        "settings": {"rounds": 3, "latency_seconds_per_run": 2, "throughput_seconds_per_run": 1, "file_mib": 1024},
        "machine": {"cpu": "test", "cores": 2, "kernel": "x", "python": "3.11"},
        "versions": {"relay": "abc"},
        "duration_seconds": 1.0,
        "latency": {
            op: {"direct": _latency(80, 400), "relay-1w": _latency(480, 2_300), "litellm-1w": _latency(8_000, 11_000)}
            for op in ("create", "retrieve")
        },
        "throughput": {op: copy.deepcopy(by_concurrency) for op in ("create", "retrieve")},
        "streaming": {
            "file_bytes": 2**30,
            "single": {
                "direct_mb_per_second": 2000.0,
                "relay_mb_per_second": 1900.0,
                "ratio_relay_to_direct": 0.95,
                "relay_rss_growth_max_mib": 8.0,
            },
            "concurrent": {
                "clients": 8,
                "direct_mb_per_second": 2500.0,
                "relay_mb_per_second": 2300.0,
                "ratio_relay_to_direct": 0.92,
                "relay_rss_growth_max_mib": 12.0,
            },
            "slow_reader": {"flat": True, "target_mb_per_second": 1.0, "rss": {"growth_mib": 0.0}},
            "disconnect": {"rss_change_mib": 0.0, "upstream_release": {"released": True, "seconds": 0.05}},
        },
    }


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    return report.summarize(results)["targets_met"]  # type: ignore[no-any-return]


def test_every_target_met() -> None:
    assert all(verdicts(passing_results()).values())


def test_added_latency_is_relay_minus_direct() -> None:
    summary = report.summarize(passing_results())
    assert summary["added_latency_ms"]["relay-1w"]["create"] == {"p50_ms": 0.4, "p99_ms": 1.9}


@pytest.mark.parametrize(
    ("change", "target"),
    [
        (lambda r: r["latency"]["retrieve"]["relay-1w"].update(p50_us=700), "added_p50_at_c1"),
        (lambda r: r["latency"]["create"]["relay-1w"].update(p99_us=2_500), "added_p99_at_c1"),
        (lambda r: r["throughput"]["create"]["64"]["relay-1w"].update(rate_within_p99_limit=900), "throughput_vs_litellm"),
        # LiteLLM meeting the limit nowhere does not excuse a relay that meets it nowhere either.
        (lambda r: r["throughput"]["retrieve"]["16"]["relay-2w"].update(rate_within_p99_limit=0), "throughput_vs_litellm"),
        (lambda r: r["streaming"]["single"].update(ratio_relay_to_direct=0.85), "download_ratio"),
        (lambda r: r["streaming"]["single"].update(relay_rss_growth_max_mib=17.0), "download_rss_growth"),
        (lambda r: r["streaming"]["slow_reader"].update(flat=False), "slow_reader_flat"),
        (lambda r: r["streaming"]["disconnect"]["upstream_release"].update(released=False), "vanished_client_released"),
        (lambda r: r["streaming"]["disconnect"].update(rss_change_mib=30.0), "vanished_client_released"),
    ],
)
def test_each_target_can_be_missed(change: Any, target: str) -> None:
    results = passing_results()
    change(results)
    met = verdicts(results)
    assert met[target] is False
    assert all(value for name, value in met.items() if name != target)


def test_ratios_against_litellm() -> None:
    summary = report.summarize(passing_results())
    assert summary["relay_vs_litellm_throughput"]["create c=16 1w"] == 20.0
    assert summary["relay_vs_litellm_throughput"]["create c=16 2w"] is None  # LiteLLM: no rate within the limit
    assert summary["relay_vs_litellm_peak_throughput"]["create c=16 2w"] == 20.0


def test_markdown_table() -> None:
    results = passing_results()
    results["summary"] = report.summarize(results)
    text = report.markdown(results, "chart.png")
    assert "![throughput and added latency](chart.png)" in text
    assert "| added latency p50 ≤ 0.5 ms at c=1 | yes |" in text
    assert "| create | 16 | 50000 | 2000 | 3500 | 100 | 0 | 20.0×, LiteLLM none |" in text
    assert "| one download | 2000 | 1900 | 0.95 | 8.0 |" in text


def test_pacing_brings_the_offered_rate_down() -> None:
    flat_out = Run(connections=64, delay_ms=0, requests=1000, seconds=1.0, errors=0, p50_us=20_000, p90_us=0, p99_us=0, max_us=0)
    # 64 connections at half of 1000/s: each spends 128 ms per request, 20 of them waiting for the answer.
    assert pacing_for(flat_out, 0.5) == 108
    assert pacing_for(flat_out, 0.05) > pacing_for(flat_out, 0.5)
