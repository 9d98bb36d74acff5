"""The relay at an earlier commit against the working tree's, in the same interleaved rounds.

    python -m bench.ab <commit> [--later <commit>] [--rounds 3] [--workers 1 --workers 2]
                       [--concurrency 16] [--download-mib 1024] [--postgres [--pg-delay-ms 0.5]]
                       [--out bench/results]

Two `make bench` runs days apart differ by whatever else the shared machine was doing, which can
be more than the change being looked for. Here both relays run side by side against the same nginx
mock, each with a SQLite database its own relayctl prepared, and take turns in every round exactly
as `make bench`'s targets do, so a noisy neighbour slows both alike. The earlier commit is
extracted with `git archive` into a temporary directory (the repository itself is left alone) and
runs on this virtualenv's packages. With --later, the later side is a commit extracted the same way
instead of the working tree, so that uncommitted edits and later commits stay out of the comparison.

With --postgres, each side has a database of its own on one throwaway PostgreSQL cluster with
`make bench`'s production durability (fsync and synchronous_commit on) instead of SQLite. With
--pg-delay-ms as well, the relays reach it through bench/delay_proxy.py, which delays every byte by
that much in each direction: a database on another host, as in production.

With --download-mib, each round also downloads the mock's file of that size directly and through
each one-worker relay, in rotating order (bench/streaming.py's client): once whole, and once as 8
Range slices at once.

Every figure is the median of the rounds; the last column is the range of the rounds' own
later ÷ earlier ratios (each round's two relays measured minutes apart at most), which shows how
far a single pairing moves on a shared machine.

Both are started the same way, but two processes on 2 shared cores are never placed identically:
repeat with the order swapped (--earlier-first / default later-first) before trusting a few percent.

Writes <date>-ab-<commit>[-<later commit>][-pg]-<earlier|later>-first.json and .md to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.postgres_cluster import Cluster, fresh_database

from .mock import start_nginx
from .postgres import cluster_for_bench
from .procs import Server, free_port, wait_until_listening, workspace
from .run import CONCURRENCIES, OPERATIONS, log, machine, measure_latency, measure_throughput, median
from .streaming import CONCURRENT, WARM_UP_BYTES, content_urls, download, parallel_downloads, range_slices
from .targets import REPO, UPSTREAM_TOKEN, create_video, prepare_relay_database, start_relay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", help="the earlier relay: any commit git knows")
    parser.add_argument("--later", help="the later relay as a commit (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=2, help="per latency run")
    parser.add_argument("--throughput-seconds", type=int, default=2, help="per throughput run")
    parser.add_argument("--concurrency", type=int, action="append", help=f"repeat (default {CONCURRENCIES})")
    parser.add_argument("--workers", type=int, action="append", help="worker counts; repeat (default 1 and 2)")
    parser.add_argument("--earlier-first", action="store_true", help="start the earlier relay first (placement check)")
    parser.add_argument("--download-mib", type=int, default=0, help="also time downloads of a file this large (0: none)")
    parser.add_argument("--postgres", action="store_true", help="both relays on PostgreSQL (a throwaway cluster) instead of SQLite")
    parser.add_argument("--pg-delay-ms", type=float, default=0.0, help="with --postgres: one-way delay to the database")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    args.concurrency = tuple(args.concurrency or CONCURRENCIES)
    args.workers = tuple(args.workers or (1, 2))
    if 1 not in args.workers:
        # Measured only after minutes of load otherwise: the report's latency rows are one worker's.
        parser.error("--workers must include 1: latency (and downloads) are measured on one worker")
    commit = _git("rev-parse", "--short", args.commit)
    later = _git("rev-parse", "--short", args.later) if args.later else _git("describe", "--always", "--dirty")

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(extracted(commit))
        later_source = stack.enter_context(extracted(later)) if args.later else None
        workdir, servers = stack.enter_context(workspace("relay-ab-"))
        cluster = stack.enter_context(cluster_for_bench("production")) if args.postgres else None
        link = start_delay_proxy(cluster, args.pg_delay_ms) if cluster is not None and args.pg_delay_ms else None
        if link is not None:
            servers.append(link)
        mock = start_nginx(workdir, file_bytes=max(args.download_mib, 1) * 1024 * 1024)
        servers.append(mock)
        upstream = mock.url + "/v1"
        sides: dict[str, tuple[dict[str, str], str, Path | None]] = {}
        order = [("earlier", source), ("later", later_source)]
        for side, tree in order if args.earlier_first else reversed(order):
            (workdir / side).mkdir()
            database = stack.enter_context(fresh_database(cluster)) if cluster is not None else None
            if cluster is not None and database is not None and link is not None:
                database = database.replace(f"@{cluster.host}:{cluster.port}/", f"@127.0.0.1:{link.port}/")
            env, key = prepare_relay_database(workdir / side, upstream, database=database, source=tree)
            sides[side] = (env, key, tree)
        for env, _, tree in sides.values():
            if tree is not None:
                _check_runs_from(env, tree)
        relays: dict[tuple[str, int], Server] = {}
        for side, (env, key, tree) in sides.items():
            for workers in args.workers:
                server = start_relay(workdir, env, key, workers=workers, name=f"{side}-{workers}w", cwd=tree or REPO)
                servers.append(server)
                relays[side, workers] = server
        direct = Server("direct", upstream, mock.process, mock.port, key=UPSTREAM_TOKEN)
        video = {server.name: create_video(server) for server in [direct, *relays.values()]}
        one_worker = [relays[side, 1] for side in sides if (side, 1) in relays]
        latency = measure_latency([direct, *one_worker], video, args)
        log(f"latency done after {time.monotonic() - started:.0f} s")
        throughput = measure_throughput([direct, *relays.values()], video, args)
        log(f"throughput done after {time.monotonic() - started:.0f} s")
        downloads = measure_downloads(mock, one_worker, video, args.rounds, args.download_mib * 1024 * 1024) if args.download_mib else None
        if downloads is not None:
            log(f"downloads done after {time.monotonic() - started:.0f} s")

    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "earlier": commit,
        "later": later,
        "database": "postgresql" if args.postgres else "sqlite",
        **({"database_delay_ms": args.pg_delay_ms} if args.postgres and args.pg_delay_ms else {}),
        "started_first": next(iter(sides)),
        "settings": {
            "rounds": args.rounds,
            "latency_seconds_per_run": args.seconds,
            "throughput_seconds_per_run": args.throughput_seconds,
            "download_mib": args.download_mib,
        },
        "machine": machine(),
        "latency": latency,
        "throughput": throughput,
        **({"downloads": downloads} if downloads is not None else {}),
        "duration_seconds": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    pair = (f"{commit}-{later}" if args.later else commit) + ("-pg" if args.postgres else "")
    # In microseconds: a dot in the name would be taken for the suffix.
    pair += f"-delay{round(args.pg_delay_ms * 1000)}us" if args.postgres and args.pg_delay_ms else ""
    stem = args.out / f"{results['date'][:10]}-ab-{pair}-{results['started_first']}-first"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    stem.with_suffix(".md").write_text(text)
    print(text)
    log(f"wrote {stem}.json and .md")
    return 0


DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL (fsync and synchronous_commit on)"}


def markdown(results: dict[str, Any]) -> str:
    earlier, later = results["earlier"], results["later"]
    lines = [
        f"# The relay on {DATABASES[results.get('database', 'sqlite')]}"
        + (f", {results['database_delay_ms']:g} ms away each way" if results.get("database_delay_ms") else "")
        + f": {earlier} against {later}, {results['date']}",
        "",
        f"{results['machine']['cores']} cores, {results['settings']['rounds']} interleaved rounds, the {results['started_first']} "
        f"relay started first; took {results['duration_seconds']:.0f} s. Ratios are later ÷ earlier: below 1 is less added "
        "latency or a lower rate. The last column is the range of each round's own ratio.",
        "",
        "| figure | direct | earlier | later | later ÷ earlier | rounds' ratios |",
        "|---|---|---|---|---|---|",
    ]
    for operation in OPERATIONS:
        by_target = results["latency"][operation]
        for quantile in ("p50", "p99"):
            key = f"{quantile}_us"
            direct = by_target["direct"][key]
            before, after = by_target["earlier-1w"][key] - direct, by_target["later-1w"][key] - direct
            spread = _spread(*(_added(by_target, side, key) for side in ("earlier-1w", "later-1w")))
            lines.append(
                f"| added latency {quantile} ms, {operation}, c=1 | {direct / 1000:.3f} | {before / 1000:.3f} | "
                f"{after / 1000:.3f} | {_ratio(after, before)} | {spread} |"
            )
    for operation, by_concurrency in results["throughput"].items():
        for connections, by_target in by_concurrency.items():
            workers = sorted({name.split("-")[1] for name in by_target if name != "direct"})
            for count in workers:
                for key, title in (("rate_within_p99_limit", "rate with p99 < 50 ms"), ("peak_rate", "peak rate")):
                    before, after = by_target[f"earlier-{count}"][key], by_target[f"later-{count}"][key]
                    spread = _spread(*(_rates(by_target[f"{side}-{count}"], key) for side in ("earlier", "later")))
                    lines.append(
                        f"| {title}, {operation}, c={connections}, {count} | {by_target['direct'][key]:,.0f} | "
                        f"{before:,.0f} | {after:,.0f} | {_ratio(after, before)} | {spread} |"
                    )
    downloads = results.get("downloads")
    for key, title in (("mb_per_second", "download MB/s"), ("concurrent_mb_per_second", f"{CONCURRENT} downloads at once, MB/s")):
        if not downloads or key not in downloads["direct"]:
            continue  # results written before the concurrent downloads were measured
        before, after = downloads["earlier-1w"][key], downloads["later-1w"][key]
        rounds = key.replace("mb_per_second", "rounds_mb_per_second")
        spread = _spread(downloads["earlier-1w"][rounds], downloads["later-1w"][rounds])
        lines.append(
            f"| {title}, {results['settings']['download_mib']} MiB, 1w | {downloads['direct'][key]:,.0f} | "
            f"{before:,.0f} | {after:,.0f} | {_ratio(after, before)} | {spread} |"
        )
    return "\n".join(lines) + "\n"


def _ratio(after: float, before: float) -> str:
    return f"{after / before:.2f}" if before > 0 else "—"


def _added(by_target: dict[str, Any], side: str, key: str) -> list[float]:
    """Each round's added latency: the side's figure minus direct's in the same round."""
    direct, relay = by_target["direct"].get("rounds", []), by_target[side].get("rounds", [])
    return [ours[key] - theirs[key] for ours, theirs in zip(relay, direct, strict=False)]


def _rates(slot: dict[str, Any], key: str) -> list[float]:
    """Each round's rate; a round whose best pacing missed the limit counts as 0, as in the median."""
    if key == "peak_rate":
        return [run["rate"] for run in slot.get("peak_rounds", [])]
    return [run["rate"] if run["within_limit"] else 0.0 for run in slot.get("rounds", [])]


def _spread(before: list[float], after: list[float]) -> str:
    """Lowest–highest of the rounds' later ÷ earlier, or — when the rounds were not kept."""
    ratios = [later / earlier for earlier, later in zip(before, after, strict=False) if earlier > 0]
    if not ratios:
        return "—"
    return f"{min(ratios):.2f}–{max(ratios):.2f}"


def measure_downloads(mock: Server, relays: list[Server], video: dict[str, str], rounds: int, file_bytes: int) -> dict[str, Any]:
    """Per target per round, in rotating order: one whole-file download, then the file again as
    CONCURRENT Range slices at once (bench/streaming.py's two cases); medians of the rounds."""
    urls = {relay.name: content_urls(mock, relay, video[relay.name])[1] for relay in relays}
    urls["direct"] = content_urls(mock, relays[0], video[relays[0].name])[0]
    headers = {relay.name: {"Authorization": f"Bearer {relay.key}"} for relay in relays}
    # The first read of the sparse file fills the page cache; the relays' pools and paths get warm.
    download(urls["direct"])
    for relay in relays:
        download(urls[relay.name], headers={**headers[relay.name], "Range": f"bytes=0-{WARM_UP_BYTES - 1}"})
    names = ["direct", *(relay.name for relay in relays)]
    slices = range_slices(file_bytes, CONCURRENT)
    single: dict[str, list[float]] = {name: [] for name in names}
    concurrent: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            run = download(urls[name], headers=headers.get(name, {}))
            if run.status != 200 or not run.complete:
                raise RuntimeError(f"{name}: a download answered {run.status} with {run.body_bytes} bytes")
            single[name].append(run.mb_per_second)
            rate, failures = parallel_downloads(urls[name], headers.get(name, {}), slices)
            if failures:
                raise RuntimeError(f"{name}: concurrent downloads went wrong: {failures[:2]}")
            concurrent[name].append(rate)
    return {
        name: {
            "mb_per_second": round(median(single[name]), 1),
            "rounds_mb_per_second": [round(rate, 1) for rate in single[name]],
            "concurrent_mb_per_second": round(median(concurrent[name]), 1),
            "concurrent_rounds_mb_per_second": [round(rate, 1) for rate in concurrent[name]],
        }
        for name in names
    }


def start_delay_proxy(cluster: Cluster, delay_ms: float) -> Server:
    """bench/delay_proxy.py in front of the cluster, on a free loopback port."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.delay_proxy",
        "--to",
        f"{cluster.host}:{cluster.port}",
        "--port",
        str(port),
        "--delay-ms",
        str(delay_ms),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    link = Server("database-link", f"postgresql://127.0.0.1:{port}", process, port)
    wait_until_listening(link)
    return link


@contextlib.contextmanager
def extracted(commit: str) -> Iterator[Path]:
    """The commit's files in a temporary directory, without touching the repository's work tree."""
    with tempfile.TemporaryDirectory(prefix="relay-ab-source-") as directory:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        yield Path(directory)


@contextlib.contextmanager
def source_of(given: str) -> Iterator[Path | None]:
    """A relay's source as the benchmarks take it: None for `work` (the working tree), a
    directory holding a relay's source as given, or a commit, extracted."""
    if given == "work":
        yield None
    elif Path(given).is_dir():
        yield Path(given)
    else:
        with extracted(given) as directory:
            yield directory


def _check_runs_from(env: dict[str, str], source: Path) -> None:
    """The earlier relay's processes import the extracted code, not this checkout's."""
    found = subprocess.run(
        [sys.executable, "-P", "-c", "import relay, ops; print(relay.__file__); print(ops.__file__)"],
        env=env,
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not all(Path(path).is_relative_to(source) for path in found):
        raise RuntimeError(f"the earlier relay would import {found}, not the code under {source}")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
