"""`make bench`: the relay side by side with direct calls and the LiteLLM proxy, on loopback.

One run starts the nginx mock upstream, the relay on SQLite (1 and 2 workers), the relay on a
throwaway PostgreSQL (1 replica, and 2 replicas behind a round-robin nginx: bench/postgres.py)
and LiteLLM (1 and 2 workers), then measures in interleaved rounds (every target once per round,
in rotating order, medians over rounds) so that a noisy neighbour slows all targets alike:

- added latency at concurrency 1 (create and retrieve): relay or LiteLLM minus direct, p50 and p99;
  and the same for servers that do part of the relay's job and nothing else (bench/floors.py);
- throughput at concurrency 16 and 64: the highest rate with p99 < 50 ms and no errors;
- streaming: see bench/streaming.py.

Results: bench/results/<date>.json, .md and .png (bench/report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import floors, postgres, report, streaming
from .load import Run, best_rate, wrk
from .mock import nginx_binary, start_nginx
from .procs import Server, workspace
from .targets import (
    LITELLM_VENV,
    REPO,
    UPSTREAM_TOKEN,
    create_video,
    litellm_available,
    prepare_relay_database,
    start_litellm,
    start_relay,
)

OPERATIONS = ("create", "retrieve")
CONCURRENCIES = (16, 64)
WORKER_COUNTS = (1, 2)
MIB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "2")), help="per latency run")
    parser.add_argument(
        "--throughput-seconds", type=int, default=int(os.environ.get("BENCH_THROUGHPUT_SECONDS", "2")), help="per throughput run"
    )
    parser.add_argument("--concurrency", type=int, action="append", help=f"throughput concurrency; repeat (default {CONCURRENCIES})")
    parser.add_argument("--workers", type=int, action="append", help=f"worker counts; repeat (default {WORKER_COUNTS})")
    parser.add_argument("--file-mib", type=int, default=int(os.environ.get("BENCH_FILE_MIB", "1024")), help="download size")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (no comparison column)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the relay on PostgreSQL")
    parser.add_argument(
        "--replicas", type=int, action="append", help=f"PostgreSQL replica counts; repeat (default {postgres.REPLICA_COUNTS})"
    )
    parser.add_argument(
        "--pg-durability",
        choices=sorted(postgres.DURABILITY),
        default=os.environ.get("BENCH_PG_DURABILITY", "production"),
        help="production: PostgreSQL's defaults (fsync, synchronous_commit, full_page_writes on); throwaway: all off",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--label", default="", help="results are <date>-<label>.*, beside the day's main run")
    args = parser.parse_args(argv)
    args.concurrency = tuple(args.concurrency or CONCURRENCIES)
    args.workers = tuple(args.workers or WORKER_COUNTS)
    args.replicas = () if args.no_postgres else tuple(args.replicas or postgres.REPLICA_COUNTS)
    if args.replicas and not postgres.postgres_available():
        raise SystemExit("PostgreSQL's initdb and postgres are missing: run `make bench` (or pass --no-postgres)")
    if 1 not in args.workers:
        parser.error("--workers must include 1: latency and streaming are measured on one worker")

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        # Entered first so that it stops last, once every relay on it has stopped.
        cluster = stack.enter_context(postgres.cluster_for_bench(args.pg_durability)) if args.replicas else None
        workdir, servers = stack.enter_context(workspace("relay-bench-"))
        file_bytes = args.file_mib * MIB
        mock = start_nginx(workdir, file_bytes=file_bytes)
        servers.append(mock)
        env, key = prepare_relay_database(workdir, mock.url + "/v1")
        relays: dict[int, Server] = {}
        for workers in args.workers:
            relays[workers] = start_relay(workdir, env, key, workers=workers)
            servers.append(relays[workers])
        on_postgres: dict[int, Server] = {}
        if cluster is not None:
            on_postgres = postgres.start_targets(workdir, cluster, mock.url + "/v1", servers, replica_counts=args.replicas)
        litellms: dict[int, Server] = {}
        if not args.no_litellm:
            if not litellm_available():
                raise SystemExit("LiteLLM's virtualenv is missing: run `make bench` (or pass --no-litellm)")
            for workers in args.workers:
                litellms[workers] = start_litellm(workdir, mock.url + "/v1", workers=workers)
                servers.append(litellms[workers])

        floored = floors.start(floors.FOR_LATENCY + floors.FOR_DOWNLOADS, workdir, mock, servers, file_bytes=file_bytes)
        log(f"servers up after {time.monotonic() - started:.0f} s")

        direct = Server("direct", mock.url + "/v1", mock.process, mock.port, key=UPSTREAM_TOKEN)
        latency_floors = [floor for floor in floored if floor.name in floors.FOR_LATENCY]
        targets = [direct, *relays.values(), *on_postgres.values(), *litellms.values(), *latency_floors]
        video = {server.name: create_video(server) for server in targets}
        latency = measure_latency(
            [direct, relays[1], *on_postgres.values(), *([litellms[1]] if litellms else []), *latency_floors], video, args
        )
        log(f"latency done after {time.monotonic() - started:.0f} s")
        throughput = measure_throughput(
            [
                direct,
                *[server for workers in args.workers for server in (relays[workers], litellms.get(workers)) if server],
                *on_postgres.values(),
            ],
            video,
            args,
        )
        log(f"throughput done after {time.monotonic() - started:.0f} s")
        proxies = [
            streaming.offload_front(workdir, relays[1], servers),
            *[floor for floor in floored if floor.name in floors.FOR_DOWNLOADS],
            *([relays[2]] if 2 in relays else []),
        ]
        streamed = streaming.run_streaming(mock, relays[1], video[relays[1].name], rounds=args.rounds, proxies=proxies)
        log(f"streaming done after {time.monotonic() - started:.0f} s")

        results = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "settings": {
                "rounds": args.rounds,
                "latency_seconds_per_run": args.seconds,
                "throughput_seconds_per_run": args.throughput_seconds,
                "file_mib": args.file_mib,
            },
            "machine": machine(),
            "versions": versions(),
            "latency": latency,
            "throughput": throughput,
            "streaming": streamed,
            "duration_seconds": round(time.monotonic() - started, 1),
        }
        if cluster is not None:
            results["postgresql"] = postgres.described(cluster, args.pg_durability, args.replicas)
        results["summary"] = report.summarize(results)
        paths = report.write(results, args.out, args.label)
        print(report.markdown(results))
        log("wrote " + ", ".join(str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path) for path in paths))
    return 0


def url_for(server: Server, operation: str, video: dict[str, str]) -> str:
    return server.url + ("/videos" if operation == "create" else f"/videos/{video[server.name]}")


def rotated(items: list[Server], round_number: int) -> list[Server]:
    shift = round_number % len(items)
    return items[shift:] + items[:shift]


def measure_latency(targets: list[Server], video: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Concurrency 1, each target once per round; medians of the rounds' p50 and p99."""
    runs: dict[str, dict[str, list[Run]]] = {op: {t.name: [] for t in targets} for op in OPERATIONS}
    for round_number in range(args.rounds):
        for target in rotated(targets, round_number):
            for operation in OPERATIONS:
                run = wrk(url_for(target, operation, video), operation, key=target.key, connections=1, seconds=args.seconds)
                runs[operation][target.name].append(run)
    result: dict[str, Any] = {}
    for operation, by_target in runs.items():
        result[operation] = {
            name: {
                "p50_us": median(run.p50_us for run in rounds),
                "p99_us": median(run.p99_us for run in rounds),
                "rate": median(run.rate for run in rounds),
                "errors": sum(run.errors for run in rounds),
                "rounds": [run.as_dict() for run in rounds],
            }
            for name, rounds in by_target.items()
        }
    return result


def measure_throughput(targets: list[Server], video: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Per operation and concurrency: each target's best rate under p99 < 50 ms, median of rounds.

    Each round measures the flat-out peak, then tries the pacing the previous round settled on
    before searching again, which keeps the search short.
    """
    # (operation, connections, target) -> each round's (best within the limit, peak, every run tried)
    searched: dict[tuple[str, int, str], list[tuple[Run, Run, list[Run]]]] = {}
    for round_number in range(args.rounds):
        for operation in OPERATIONS:
            for connections in args.concurrency:
                for target in rotated(targets, round_number):
                    rounds = searched.setdefault((operation, connections, target.name), [])
                    rounds.append(
                        best_rate(
                            url_for(target, operation, video),
                            operation,
                            key=target.key,
                            connections=connections,
                            seconds=args.throughput_seconds,
                            resume=rounds[-1][0] if rounds else None,
                        )
                    )
    result: dict[str, Any] = {}
    for (operation, connections, name), rounds in searched.items():
        best = [found for found, _, _ in rounds]
        peaks = [peak for _, peak, _ in rounds]
        result.setdefault(operation, {}).setdefault(str(connections), {})[name] = {
            # A round where no tested rate met the limit counts as 0.
            "rate_within_p99_limit": median(run.rate if run.within_limit else 0.0 for run in best),
            "peak_rate": median(run.rate for run in peaks),
            "peak_p99_us": median(run.p99_us for run in peaks),
            "rounds_within_limit": sum(run.within_limit for run in best),
            "rounds": [run.as_dict() for run in best],
            # Each round's flat-out run, so that A/B runs can pair rounds (bench/ab.py's spread).
            "peak_rounds": [run.as_dict() for run in peaks],
            "search": [run.as_dict() for _, _, tried in rounds for run in tried],
        }
    return result


def median(values: Any) -> float:
    return float(statistics.median(list(values)))


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {name: version(name) for name in ("starlette", "uvicorn", "uvloop", "httptools", "httpx", "psycopg", "psycopg-pool")}
    found["relay"] = _output(["git", "-C", str(REPO), "describe", "--always", "--dirty"]) or "unknown"
    found["nginx"] = _output([nginx_binary() or "nginx", "-v"]).removeprefix("nginx version: ")
    found["wrk"] = _output(["wrk", "-v"]).split(" [")[0].removeprefix("wrk ")
    found["litellm"] = _output([str(LITELLM_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
    return found


def _output(command: list[str]) -> str:
    """The first line a command prints (nginx and wrk print their versions on stderr)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return next(iter((done.stdout + done.stderr).strip().splitlines()), "")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
