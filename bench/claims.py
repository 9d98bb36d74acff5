"""The job watcher's claim with a backlog of due jobs on an account that has no poll to spare.

    python -m bench.claims [work|<commit> ...] [--backlog 10000] [--rounds 40] [--database sqlite,postgresql]

Each round of a watcher's loop claims the due jobs of the accounts with polls to spare. An account
over its pace (60 polls a minute by default) with thousands of jobs in flight keeps them all due;
what must not happen is every claim reading them. For each relay given (a commit, extracted with
`git archive`, or `work`, the working tree; default `work`) and each database, two databases are
prepared alike but for the backlog: in both, account `quiet` has one due job and account `busy`,
which has no poll to spare, has `--backlog` due jobs in one and none in the other. Rounds alternate
between them, timing two claims of `quiet`'s jobs in each: one that finds the job (a read, then the
write transaction that leases it), and one that finds nothing (a read only; the job is leased).
Prints, per relay and database, the median milliseconds of each claim with and without the backlog
and their ratio: the backlog's cost, measured in the same run. PostgreSQL runs on the tests'
throwaway cluster with production durability (bench/postgres.py).

Each relay runs in a process of its own that imports that relay's code; a relay from before the
claim took each account's share (`skip_accounts` instead of `per_account`) is driven through the
signature it has.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NOW = 1_900_000_000.0
CASES = ("finds one", "finds none")


def _job_rows(account: str, count: int, first_due: float) -> list[tuple[Any, ...]]:
    return [
        (f"video_{account}_{n}", account, "alice", "create", "in_progress", NOW - 3600, NOW - 3600, "{}", first_due + n * 1e-3)
        for n in range(count)
    ]


def _prepare(location: str, backlog: int) -> None:
    """A relay database with `busy`'s backlog, one due job of `quiet`'s, and the claiming process."""
    from relay.store import Store

    store = Store(location)
    try:
        store.ensure_schema()
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO videos (id, account, key_name, kind, status, created_at, recorded_at, resource, watch_next_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*_job_rows("busy", backlog, NOW - 600), *_job_rows("quiet", 1, NOW - 1)],
            )
            conn.execute(
                "INSERT INTO holders (id, host, hostname, pid, process_started, started_at, renewed_at, expires_at)"
                " VALUES ('bench', 'bench', 'bench', 1, 0, 0, 0, 0)"
            )
    finally:
        store.close()


def _claimer(store: Any) -> Any:
    """`claim()`: quiet's due jobs, with busy given no poll, through the relay's own signature."""
    parameters = inspect.signature(store.claim_jobs_to_watch).parameters
    common = {"now": NOW, "lease_seconds": 60.0, "holders_now": NOW, "limit": 16}
    if "per_account" in parameters:
        return lambda: store.claim_jobs_to_watch("bench", per_account={"busy": 0, "quiet": 6}, **common)
    return lambda: store.claim_jobs_to_watch("bench", skip_accounts=["busy"], **common)


def _holder_alive(store: Any, alive: bool) -> None:
    """Whether the claiming process counts as alive: its lease on quiet's job holds, or not."""
    with store.transaction() as conn:
        conn.execute("UPDATE holders SET expires_at = ? WHERE id = 'bench'", (NOW + 3600 if alive else 0,))


def _timed(claim: Any, found: int) -> float:
    started = time.perf_counter()
    claimed = claim()
    elapsed = (time.perf_counter() - started) * 1e3
    assert len(claimed) == found, claimed
    return elapsed


def _worker(locations: dict[str, str], rounds: int, claims_per_round: int) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per claim, by database ('none', 'backlog') and case, rounds alternating."""
    from relay.store import Store

    stores = {name: Store(location) for name, location in locations.items()}
    timings: dict[str, dict[str, list[float]]] = {name: {case: [] for case in CASES} for name in stores}
    try:
        claimers = {name: _claimer(store) for name, store in stores.items()}
        for _ in range(rounds):
            for name, claim in claimers.items():
                for _ in range(claims_per_round):
                    _holder_alive(stores[name], False)
                    timings[name]["finds one"].append(_timed(claim, found=1))
                    _holder_alive(stores[name], True)
                    timings[name]["finds none"].append(_timed(claim, found=0))
    finally:
        for store in stores.values():
            store.close()
    return timings


@contextlib.contextmanager
def _places(kind: str, directory: Path) -> Iterator[Any]:
    """`make(label)`: a new empty database of `kind` (its location); one PostgreSQL cluster for the run."""
    if kind == "sqlite":
        yield lambda label: str(directory / f"{label}.db")
        return
    from psycopg import sql

    from tests.postgres_cluster import connect

    from .postgres import cluster_for_bench

    with cluster_for_bench("production") as cluster:

        def make(label: str) -> str:
            name = "claims_" + "".join(c if c.isalnum() else "_" for c in label)
            with connect(cluster.url(), autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return cluster.url(name)

        yield make


def _run_worker(source: Path, arguments: list[str]) -> Any:
    """This file's worker, importing the relay under `source`."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, "-P", str(Path(__file__).resolve()), *arguments], env=env, cwd=source, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"the claims worker failed:\n{done.stderr}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def main() -> None:
    from .ab import source_of

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("relays", nargs="*", default=["work"])
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--claims-per-round", type=int, default=5)
    parser.add_argument("--database", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"claims of one account's jobs, another's backlog {args.backlog:,} due jobs; median ms over {args.rounds} rounds")
    print(f"{'relay':<10} {'database':<11} {'claim':<11} {'no backlog':>10} {'backlog':>9} {'ratio':>7}")
    for kind in args.database.split(","):
        with tempfile.TemporaryDirectory(prefix="relay-claims-") as directory, _places(kind, Path(directory)) as make:
            for relay in args.relays:
                with source_of(relay) as given_source:
                    source = given_source or REPO
                    locations = {name: make(f"{relay}-{name}") for name in ("none", "backlog")}
                    for name, backlog in (("none", 0), ("backlog", args.backlog)):
                        _run_worker(source, ["prepare", locations[name], str(backlog)])
                    timings = _run_worker(source, ["time", json.dumps(locations), str(args.rounds), str(args.claims_per_round)])
                for case in CASES:
                    without, with_backlog = (statistics.median(timings[name][case]) for name in ("none", "backlog"))
                    print(f"{relay:<10} {kind:<11} {case:<11} {without:>10.3f} {with_backlog:>9.3f} {with_backlog / without:>7.2f}")


def _worker_main(argv: list[str]) -> None:
    if argv[0] == "prepare":
        _prepare(argv[1], int(argv[2]))
    else:
        timings = _worker(json.loads(argv[1]), int(argv[2]), int(argv[3]))
        print(json.dumps(timings))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("prepare", "time"):
        _worker_main(sys.argv[1:])
    else:
        main()
