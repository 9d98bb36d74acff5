"""The relay on PostgreSQL: one replica, and two replicas behind a round-robin load balancer.

The database is a throwaway cluster from tests/postgres_cluster.py (initdb in a temporary
directory, a free loopback port, removed afterwards). That harness turns durability off for speed;
the benchmark turns it back on (`production`: PostgreSQL's defaults, every commit waits for its
WAL flush) unless asked for the harness's settings (`throwaway`), so that PostgreSQL's write
latency is not flattered by default.

Both targets share one database, prepared as the SQLite one is (bench/targets.py): one account on
the mock upstream, one key with limits (bench.targets.KEY_LIMITS). Each replica is its own relay process (one worker, its
own port and working directory), as separate machines would run it; the load balancer is a second
Debian nginx (bench/mock/balancer.conf.template) that keeps connections to the replicas open.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relay.config import pool_settings
from tests.postgres_cluster import Cluster, connect, find_bin_dir, start_cluster

from .mock import start_balancer
from .procs import Server
from .targets import prepare_relay_database, start_relay

REPLICA_COUNTS = (1, 2)
# What each choice sets on the throwaway cluster. `production` is PostgreSQL's own default for
# each; `throwaway` keeps tests/postgres_cluster.py's (all off: a crash can lose or corrupt data).
DURABILITY: dict[str, dict[str, str]] = {
    "production": {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
    "throwaway": {},
}
SHOWN_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_connections")
RELOAD_TIMEOUT_SECONDS = 10.0


def postgres_available() -> bool:
    return find_bin_dir() is not None


def target_name(replicas: int) -> str:
    return f"relay-pg-{replicas}r"


@contextlib.contextmanager
def cluster_for_bench(durability: str) -> Iterator[Cluster]:
    """The tests' throwaway cluster, with `durability`'s settings in force before anything runs on it."""
    with start_cluster() as cluster:
        wanted = DURABILITY[durability]
        if wanted:
            with connect(cluster.url(), autocommit=True) as admin:
                for name, value in wanted.items():
                    # ALTER SYSTEM's file overrides the harness's lines in postgresql.conf.
                    admin.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                admin.execute("SELECT pg_reload_conf()")
            _wait_for_settings(cluster, wanted)
        yield cluster


def _wait_for_settings(cluster: Cluster, wanted: dict[str, str]) -> None:
    """The postmaster rereads its configuration in the background; new connections see it once done."""
    deadline = time.monotonic() + RELOAD_TIMEOUT_SECONDS
    while True:
        shown = server_settings(cluster)
        if all(shown[name] == value for name, value in wanted.items()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not take {wanted} within {RELOAD_TIMEOUT_SECONDS:.0f} s (shows {shown})")
        time.sleep(0.1)


def server_settings(cluster: Cluster) -> dict[str, str]:
    with connect(cluster.url()) as conn:
        shown = {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in (*SHOWN_SETTINGS, "server_version")}  # type: ignore[index]
    return shown


def start_targets(
    workdir: Path, cluster: Cluster, upstream_base: str, servers: list[Server], *, replica_counts: tuple[int, ...]
) -> dict[int, Server]:
    """One target per replica count, all on the cluster's database; every process joins `servers`."""
    env, key = prepare_relay_database(workdir, upstream_base, database=cluster.url())
    targets: dict[int, Server] = {}
    for replicas in replica_counts:
        name = target_name(replicas)
        processes = []
        for number in range(1, replicas + 1):
            home = workdir / f"{name}-{number}"
            home.mkdir()
            replica = start_relay(workdir, env, key, workers=1, name=f"{name}-{number}", cwd=home)
            servers.append(replica)
            processes.append(replica)
        if replicas == 1:
            targets[replicas] = Server(name, processes[0].url, processes[0].process, processes[0].port, key=key)
        else:
            balancer = start_balancer(workdir / f"{name}-balancer", processes)
            servers.append(balancer)
            check_turns(balancer, processes)
            targets[replicas] = Server(name, balancer.url + "/openai/v1", balancer.process, balancer.port, key=key)
    return targets


def check_turns(balancer: Server, replicas: list[Server]) -> None:
    """Every replica answers through the balancer (a replica left out would flatter nobody, but
    would make "N replicas" a lie)."""
    expected = {f"127.0.0.1:{replica.port}" for replica in replicas}
    answered: set[str] = set()
    for _ in range(2 * len(replicas)):
        with urllib.request.urlopen(balancer.url + "/healthz", timeout=10) as answer:
            answered.add(answer.headers.get("X-Bench-Replica", ""))
    if answered != expected:
        raise RuntimeError(f"the balancer reached {sorted(answered)}, not every replica of {sorted(expected)}")


def described(cluster: Cluster, durability: str, replica_counts: tuple[int, ...]) -> dict[str, Any]:
    """What the results file says about the PostgreSQL targets' set-up."""
    pool = pool_settings(os.environ)
    return {
        "durability": durability,
        "server": server_settings(cluster),
        "replicas": list(replica_counts),
        "workers_per_replica": 1,
        # Each replica's pool: RELAY_DATABASE_POOL_* as the replicas see them (the relay's defaults unless set).
        "pool": {"min_size": pool.min_size, "max_size": pool.max_size, "timeout_seconds": pool.timeout_seconds},
        "balancer": "nginx, round robin, keep-alive connections to the replicas",
    }
