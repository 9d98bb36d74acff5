"""`make bench`'s harness end to end, shrunk: nginx, wrk and the relay for real, LiteLLM left out.

Figures are not judged here (this machine is shared and the runs are one second long); what
is checked is that every measurement runs and reports what it should. The relay on PostgreSQL
runs as its two-replica target only (a throwaway cluster, two relay processes, the nginx balancer
in front), which covers the one-replica path too. Needs Debian's nginx, wrk and PostgreSQL, which
`make test` installs; under CI=true their absence fails the run instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.mock import nginx_binary
from bench.postgres import postgres_available

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_and_reports_every_measurement(tmp_path: Path) -> None:
    if nginx_binary() is None or shutil.which("wrk") is None or not postgres_available():
        reason = "nginx/wrk/PostgreSQL are missing: make test installs Debian's nginx-light, wrk and postgresql"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--rounds",
            "1",
            "--seconds",
            "1",
            "--throughput-seconds",
            "1",
            "--concurrency",
            "16",
            "--workers",
            "1",
            "--workers",
            "2",
            "--replicas",
            "2",
            "--file-mib",
            "128",
            "--no-litellm",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [results_path] = tmp_path.glob("*.json")
    results = json.loads(results_path.read_text())

    for operation in ("create", "retrieve"):
        by_target = results["latency"][operation]
        floors = {"floor-nginx", "floor-copy", "floor-asgi", "floor-starlette"}
        assert set(by_target) == {"direct", "relay-1w", "relay-pg-2r", *floors}
        for target in ("relay-1w", "relay-pg-2r", *floors):
            # wrk counts answers other than 2xx and 3xx as errors: the floors pass creates and retrieves on.
            assert by_target["direct"]["errors"] == by_target[target]["errors"] == 0
            assert by_target["direct"]["p50_us"] > 0 and by_target[target]["p50_us"] > 0
        # The relays add ten times what one-second runs on a shared machine move by; a floor adds
        # less than that (a direct run's p50 has come out above a floor's), so floors are not compared.
        for relay in ("relay-1w", "relay-pg-2r"):
            assert by_target["direct"]["p50_us"] < by_target[relay]["p50_us"]
        beyond = results["summary"]["relay_beyond_its_stack_ms"][operation]
        added = results["summary"]["added_latency_ms"]
        assert beyond["p50_ms"] == pytest.approx(
            added["relay-1w"][operation]["p50_ms"] - added["floor-asgi"][operation]["p50_ms"], abs=0.002
        )
        slot = results["throughput"][operation]["16"]
        assert set(slot) == {"direct", "relay-1w", "relay-2w", "relay-pg-2r"}
        for relay in ("relay-1w", "relay-2w", "relay-pg-2r"):
            assert slot[relay]["peak_rate"] > 0 and slot[relay]["search"]
            assert all(run["errors"] == 0 for run in slot[relay]["search"])

    # Two processes on one throwaway cluster (bench/postgres.py checks that both answer through the
    # balancer), durable as PostgreSQL ships unless asked otherwise.
    setup = results["postgresql"]
    assert setup["replicas"] == [2] and setup["durability"] == "production"
    assert (setup["server"]["fsync"], setup["server"]["synchronous_commit"]) == ("on", "on")
    compared = results["summary"]["postgresql_vs_sqlite"]["added_latency"]
    assert set(compared) == {f"{operation} {quantile} 2r" for operation in ("create", "retrieve") for quantile in ("p50", "p99")}

    streamed = results["streaming"]
    assert streamed["file_bytes"] == 128 * 1024 * 1024
    assert streamed["single"]["relay_mb_per_second"] > 0 and streamed["single"]["direct_mb_per_second"] > 0
    assert streamed["concurrent"]["failures"] == []
    assert streamed["slow_reader"]["download"]["body_bytes"] > 0
    assert streamed["disconnect"]["download"]["disconnected_early"] is True
    assert streamed["disconnect"]["upstream_release"]["released"] is True
    # The relay with two workers, the floor (proxies that only pass bytes, copying or splicing)
    # and uvicorn answering from memory carry whole downloads too.
    for proxy in ("relay-2w", "floor-copy", "floor-splice", "floor-uvicorn"):
        assert streamed[proxy]["single"]["relay_mb_per_second"] > 0
        assert all(run["complete"] for run in streamed[proxy]["single"]["relay_runs"])
        assert streamed[proxy]["concurrent"]["failures"] == []

    met = results["summary"]["targets_met"]
    assert met["throughput_vs_litellm"] is None  # not measured without LiteLLM
    markdown = results_path.with_suffix(".md").read_text()
    assert "| ≥ 10× LiteLLM's rate at p99 < 50 ms | not measured |" in markdown
    assert "## Relay on PostgreSQL ÷ relay on SQLite (same run)" in markdown
    assert "| one download, a proxy that only splices (bench/floor_proxy.py --splice) |" in markdown
    assert "| 8 concurrent downloads, uvicorn alone, answering from memory (bench/floor_uvicorn.py) |" in markdown
    assert "| 8 concurrent downloads, the relay with 2 workers |" in markdown
    assert "| operation | relay-1w | floor-nginx | floor-copy | floor-asgi | floor-starlette | relay-1w beyond floor-asgi |" in markdown
    assert results_path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def test_cpu_per_request_compares_relays_side_by_side() -> None:
    if nginx_binary() is None or shutil.which("wrk") is None:
        reason = "nginx/wrk are missing: make test installs Debian's nginx-light and wrk"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "work", str(ROOT), "--rounds", "1", "--seconds", "1", "--no-limits", "--floor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    # The working tree twice (as `work` and as a directory) and the two floors: eight figures, each a CPU cost.
    assert len(lines) == 8 and all("CPU" in line and "µs/request" in line for line in lines), done.stdout
    assert all(float(line.split("CPU")[1].split()[0]) > 0 for line in lines)
    named = [line.split()[0] for line in lines]
    assert named.count("floor-asgi") == named.count("floor-starlette") == 2


def test_claims_benchmark_times_a_claim_with_and_without_a_backlog() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.claims",
            "work",
            "--backlog",
            "200",
            "--rounds",
            "2",
            "--claims-per-round",
            "1",
            "--database",
            "sqlite",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("work")]
    assert [(row[0], row[1], " ".join(row[2:4])) for row in rows] == [("work", "sqlite", "finds one"), ("work", "sqlite", "finds none")]
    assert all(float(figure) > 0 for row in rows for figure in row[4:]), done.stdout


def test_startup_benchmark_times_each_start_beside_a_bare_interpreter() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.startup", "work", "--rounds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    header, *rows = done.stdout.splitlines()
    assert header.split()[0] == "start"
    figures = {row.rsplit(None, 2)[0]: (float(row.split()[-2]), float(row.split()[-1])) for row in rows}
    assert set(figures) == {"python -c pass", "work: relayctl --help", "work: relayctl keys list", "work: relay ready"}
    assert figures["python -c pass"][1] == 1.0
    # Each start does the bare interpreter's work and more: a figure that is not above it measured nothing.
    assert all(ms > 0 and times > 1 for name, (ms, times) in figures.items() if name != "python -c pass")
