"""Several relay replicas on one PostgreSQL database: real `uvicorn relay.app:app` processes, each
in a working directory of its own (no shared files), on 127.0.0.1 against the sandbox upstream.

What must hold across replicas: budgets are enforced atomically (a key with room for 5 videos gets
exactly 5, however the creates spread), a video created on one replica is served by any other at
once, an operator's change reaches every replica within about a second, and a database that goes
away or runs out of connections costs 503s in the OpenAI envelope, never a 500 or a crash, with
service resuming by itself when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import RelayProcess, Sandbox
from test_soak import ACCOUNTS, Result, http_client, inject_random_faults, issue_keys, post_create, sandbox_total, settle

from relay.crypto import generate_key
from relay.pricing import DEFAULT_SECONDS
from relay.store.postgres import WRITE_LOCK

pytestmark = pytest.mark.e2e

# Each test names its database fixture before relay_process: fixtures are torn down in the reverse
# order, so the relays stop (releasing their leases) before their database is dropped.

CREATE_PATH = "/openai/v1/videos"


def start_replicas(relay_process: Any, tmp_path: Path, database_url: str, count: int = 3, **env: str) -> list[RelayProcess]:
    """`count` relays on one database, sharing only its URL and the secret key."""
    shared = {"RELAY_DATABASE": database_url, "RELAY_SECRET_KEY": generate_key(), **env}
    replicas = []
    for index in range(count):
        workdir = tmp_path / f"replica-{index}"
        workdir.mkdir()
        replicas.append(relay_process(extra_env=shared, cwd=workdir))
    return replicas


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def creates_seen(sandbox: Sandbox) -> Counter[str]:
    """Creates that reached the upstream, by account token."""
    return Counter(r["token"] for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/v1/videos")


async def create_through(replicas: list[RelayProcess], key: str, count: int) -> list[httpx.Response]:
    """`count` creates at once, spread round-robin over the replicas."""
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        return await asyncio.gather(
            *(
                client.post(f"{replica.url}{CREATE_PATH}", json={"prompt": f"#{index}"}, headers=headers(key))
                for index, replica in zip(range(count), itertools.cycle(replicas), strict=False)
            )
        )


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError):
        return None


def wait_for(condition: Any, within: float, what: str) -> float:
    """Poll until `condition()` holds; return how long it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"{what} did not happen within {within} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_budget_holds_exactly_across_three_replicas(
    postgres_database_url: str, relay_process: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    replicas = start_replicas(relay_process, tmp_path, postgres_database_url)
    first = replicas[0]
    first.add_accounts(sandbox, "a", "b")
    key = first.issue_key("alice")
    changed = first.relayctl("keys", "limits", "alice", "--video-seconds-per-day", str(5 * DEFAULT_SECONDS))
    assert changed.returncode == 0, changed.stderr
    time.sleep(1.0)  # every replica refreshes its configuration within about a second

    answers = asyncio.run(create_through(replicas, key, 30))

    statuses = Counter(response.status_code for response in answers)
    assert statuses == {200: 5, 429: 25}, statuses
    assert {error_code(r) for r in answers if r.status_code == 429} == {"relay_video_seconds_exceeded"}
    assert sum(creates_seen(sandbox).values()) == 5
    limits = first.relayctl("keys", "limits", "alice", "--json")
    assert limits.returncode == 0, limits.stderr


def test_a_follow_up_on_another_replica_reaches_the_account_that_owns_the_job(
    postgres_database_url: str, relay_process: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    replicas = start_replicas(relay_process, tmp_path, postgres_database_url)
    replicas[0].add_accounts(sandbox, "a", "b", "c")
    key = replicas[0].issue_key("alice")
    time.sleep(1.0)
    with httpx.Client(timeout=10, trust_env=False) as client:
        for index in range(12):
            creator, reader, deleter = (replicas[(index + shift) % 3] for shift in range(3))
            created = client.post(f"{creator.url}{CREATE_PATH}", json={"prompt": f"#{index}"}, headers=headers(key))
            assert created.status_code == 200, created.text
            video_id = created.json()["id"]
            # At once, on another replica: no cache may answer 404 for a job it has not seen.
            seen = client.get(f"{reader.url}{CREATE_PATH}/{video_id}", headers=headers(key))
            assert seen.status_code == 200, seen.text
            assert seen.json()["id"] == video_id
            deleted = client.delete(f"{deleter.url}{CREATE_PATH}/{video_id}", headers=headers(key))
            assert deleted.status_code == 200, deleted.text
    # Every follow-up went to the account that created its job (the sandbox answers 404 otherwise,
    # and a wrong token would show here as a retrieve by an account that made no create).
    requests = sandbox.requests()
    owner = {}
    for record in requests:
        if record["method"] == "POST" and record["path"] == "/v1/videos":
            continue
        video_id = record["path"].rsplit("/", 1)[-1]
        owner.setdefault(video_id, set()).add(record["token"])
    assert len(owner) == 12 and all(len(tokens) == 1 for tokens in owner.values()), owner


def test_an_operator_change_reaches_every_replica_within_about_a_second(
    postgres_database_url: str, relay_process: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    replicas = start_replicas(relay_process, tmp_path, postgres_database_url)
    replicas[0].add_accounts(sandbox, "a")
    key = replicas[0].issue_key("alice")
    with httpx.Client(timeout=10, trust_env=False) as client:

        def every_replica_answers(status: int) -> bool:
            return all(client.get(f"{replica.url}{CREATE_PATH}", headers=headers(key)).status_code == status for replica in replicas)

        wait_for(lambda: every_replica_answers(200), 5, "the new key working everywhere")
        revoked = replicas[2].relayctl("keys", "revoke", "alice")
        assert revoked.returncode == 0, revoked.stderr
        took = wait_for(lambda: every_replica_answers(401), 5, "the revocation reaching every replica")
    print(f"\nrevocation reached all 3 replicas in {took:.2f} s")


class Forwarder:
    """A TCP forwarder between the relays and PostgreSQL that can play an outage: `cut()` drops
    every connection and refuses new ones (a server that went away), `restore()` serves again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        # shutdown() wakes the thread blocked in accept(); close() alone would leave it accepting.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        with self._lock:
            for client, server in self._pairs:
                for end in (client, server):
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)
                    end.close()
            self._pairs.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def forwarded_database(postgres_database_url: str) -> Iterator[tuple[str, Forwarder]]:
    port = int(postgres_database_url.rsplit(":", 1)[1].split("/", 1)[0])
    forwarder = Forwarder(port)
    yield postgres_database_url.replace(f":{port}/", f":{forwarder.port}/"), forwarder
    if forwarder._listener is None:
        forwarder.restore()


def test_a_database_outage_is_a_503_and_service_resumes_by_itself(
    forwarded_database: tuple[str, Forwarder], relay_process: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    url, forwarder = forwarded_database
    replicas = start_replicas(relay_process, tmp_path, url, count=2, RELAY_DATABASE_POOL_TIMEOUT_SECONDS="1")
    replicas[0].add_accounts(sandbox, "a")
    key = replicas[0].issue_key("alice")
    time.sleep(1.0)
    with httpx.Client(timeout=30, trust_env=False) as client:
        for replica in replicas:
            ok = client.post(f"{replica.url}{CREATE_PATH}", json={"prompt": "before"}, headers=headers(key))
            assert ok.status_code == 200, ok.text

        forwarder.cut()
        during = [
            client.post(f"{replica.url}{CREATE_PATH}", json={"prompt": "during"}, headers=headers(key))
            for replica in replicas
            for _ in range(3)
        ]
        health = [client.get(f"{replica.url}/healthz") for replica in replicas]
        reached = sum(creates_seen(sandbox).values())
        statuses = Counter(r.status_code for r in during)
        assert set(statuses) == {503}, [(r.status_code, r.text) for r in during]
        # The first create on each replica may reach the upstream before the database is found
        # gone (its answer says the job may exist); later ones are refused before they leave.
        print("\n".join(f"{r.status_code} {r.text}" for r in during))
        assert {error_code(r) for r in during} == {"database_unavailable"}
        assert all(set(r.json()["error"]) == {"message", "type", "param", "code"} for r in during)
        assert [h.status_code for h in health] == [503, 503]
        assert reached <= 2 + len(replicas), f"{reached} creates reached the upstream; at most one per replica during the outage"
        # Longer than the pool's reconnect timeout (10 s): it gives up and starts again on demand.
        time.sleep(12)
        assert {client.get(f"{replica.url}/healthz").status_code for replica in replicas} == {503}

        forwarder.restore()

        def creates_again() -> bool:
            return all(
                client.post(f"{replica.url}{CREATE_PATH}", json={"prompt": "after"}, headers=headers(key)).status_code == 200
                for replica in replicas
            )

        took = wait_for(creates_again, 15, "service resuming after the database came back")
    print(f"\nafter the outage, both replicas created again within {took:.2f} s")
    for replica in replicas:
        log = replica.log()
        assert "Traceback" not in log, log[-3000:]
        assert replica.env["RELAY_DATABASE"].split("@")[0].split(":")[-1] not in log  # the password


def test_pool_exhaustion_queues_briefly_then_answers_503(
    postgres_database_url: str, relay_process: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    (replica,) = start_replicas(
        relay_process,
        tmp_path,
        postgres_database_url,
        count=1,
        RELAY_DATABASE_POOL_MIN_SIZE="1",
        RELAY_DATABASE_POOL_MAX_SIZE="1",
        RELAY_DATABASE_POOL_TIMEOUT_SECONDS="0.5",
        RELAY_DATABASE_BUSY_TIMEOUT_SECONDS="2",
    )
    replica.add_accounts(sandbox, "a")
    key = replica.issue_key("alice")
    time.sleep(1.0)
    # Another client holds the write lock, so the relay's one connection waits on it (up to the
    # busy timeout) and every other store call finds the pool empty.
    with psycopg.connect(postgres_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        answers = asyncio.run(create_through([replica], key, 6))
        holder.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))
    assert {r.status_code for r in answers} == {503}, [(r.status_code, r.text) for r in answers]
    assert {error_code(r) for r in answers} == {"database_unavailable"}
    messages = {r.json()["error"]["message"] for r in answers}
    print(f"\nanswers while the pool was exhausted: {messages}")
    after = httpx.post(f"{replica.url}{CREATE_PATH}", json={"prompt": "after"}, headers=headers(key), timeout=10, trust_env=False)
    assert after.status_code == 200, after.text
    assert "Traceback" not in replica.log()


# --------------------------------------------------------------------------- soak and crash


def query(database_url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


async def load_across(
    replicas: list[RelayProcess],
    keys: list[tuple[str, str]],
    *,
    total: int,
    concurrency: int,
    send_for: float,
    watcher: Any = None,
) -> list[tuple[int, Result]]:
    """`total` creates from `concurrency` workers, spread round-robin over replicas and keys: (replica index, result)."""
    results: list[tuple[int, Result]] = []
    numbers = itertools.count()
    stop_sending = time.monotonic() + send_for
    async with http_client(concurrency) as client:

        async def worker() -> None:
            while time.monotonic() < stop_sending:
                index = next(numbers)
                if index >= total:
                    return
                target = index % len(replicas)
                result = await post_create(client, replicas[target], index, keys[(index // len(replicas)) % len(keys)])
                results.append((target, result))
                await result.pause_as_asked()

        tasks = [worker() for _ in range(concurrency)]
        if watcher is not None:
            tasks.append(watcher(results))
        await asyncio.gather(*tasks)
    return results


@pytest.mark.soak
def test_soak_three_replicas_with_upstream_faults_loses_nothing_and_overspends_nothing(
    postgres_database_url: str, relay_process: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    total = int(os.environ.get("RELAY_REPLICA_SOAK_REQUESTS", "900"))
    budget_videos = 40
    replicas = start_replicas(relay_process, tmp_path, postgres_database_url)
    replicas[0].add_accounts(sandbox, *ACCOUNTS)
    keys = issue_keys(replicas[0], "alice", "bob")
    limited = replicas[1].relayctl("keys", "limits", "alice", "--video-seconds-per-day", str(budget_videos * DEFAULT_SECONDS))
    assert limited.returncode == 0, limited.stderr
    time.sleep(1.0)
    inject_random_faults(sandbox)
    baseline = sandbox_total(sandbox)

    started = time.monotonic()
    answered = asyncio.run(load_across(replicas, keys, total=total, concurrency=24, send_for=90))
    duration = time.monotonic() - started
    results = [result for _, result in answered]

    def counts() -> tuple[int, int]:
        return query(postgres_database_url, "SELECT count(*) FROM outcomes")[0][0], sandbox_total(sandbox) - baseline

    recorded, upstream_requests = settle(counts, within=10)
    statuses = Counter(r.status if r.error is None else "transport_error" for r in results)
    codes = Counter(f"{r.status} {r.error_code}" for r in results if r.status not in (None, 200))
    print(
        f"\nreplica soak: {len(results)} creates through 3 replicas in {duration:.1f} s; statuses {dict(statuses)};"
        f" non-2xx by code {dict(codes)};"
        f" upstream requests {upstream_requests}, outcome rows {recorded}"
    )
    assert len(results) == total, f"sent {len(results)} of {total} within the time limit"
    relay_500s = [r for r in results if r.status == 500 and not r.from_sandbox_500]
    assert not relay_500s, f"{len(relay_500s)} 500s not from the upstream, first: {relay_500s[0].body}"
    assert not [r for r in results if r.error is not None], "transport errors"
    assert set(statuses) <= {200, 429, 500, 502, 503}, statuses

    # Jobs: every video a client got has its row, with its key; nothing else has one.
    created = [r for r in results if r.status == 200]
    videos = dict(query(postgres_database_url, "SELECT id, key_name FROM videos"))
    assert {r.body["id"]: r.key_name for r in created} == videos
    # Outcomes: every upstream attempt recorded exactly once, whichever replica made it.
    assert recorded == upstream_requests
    # Usage: alice's budget is spent exactly, never beyond, though three replicas admitted her creates.
    alice = [r for r in created if r.key_name == "alice"]
    charged = query(postgres_database_url, "SELECT coalesce(sum(billable_seconds), 0) FROM videos WHERE key_name = 'alice'")[0][0]
    assert len(alice) == budget_videos, f"alice got {len(alice)} videos on a budget of {budget_videos}"
    assert charged == pytest.approx(budget_videos * DEFAULT_SECONDS)
    refused = Counter(r.error_code for r in results if r.key_name == "alice" and r.status == 429)
    assert refused["relay_video_seconds_exceeded"] > 0, refused


@pytest.mark.soak
def test_a_replica_killed_mid_load_loses_nothing_the_others_or_the_database_acknowledged(
    postgres_database_url: str, relay_process: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    replicas = start_replicas(relay_process, tmp_path, postgres_database_url, RELAY_HOLDER_LEASE_SECONDS="2")
    replicas[0].add_accounts(sandbox, *ACCOUNTS)
    keys = issue_keys(replicas[0], "alice")
    limited = replicas[0].relayctl("keys", "limits", "alice", "--video-seconds-per-day", "100000")
    assert limited.returncode == 0, limited.stderr
    time.sleep(1.0)
    victim = replicas[0]
    killed: list[float] = []

    async def kill_mid_load(results: list[tuple[int, Result]]) -> None:
        deadline = time.monotonic() + 30
        while sum(result.status == 200 for _, result in results) < 100:
            assert time.monotonic() < deadline, "the replicas did not answer 100 creates"
            await asyncio.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        killed.append(time.monotonic())

    answered = asyncio.run(load_across(replicas, keys, total=600, concurrency=24, send_for=60, watcher=kill_mid_load))
    assert killed, "the victim was never killed"
    # Only the killed replica may fail a request, and only by going away.
    others_failed = [r for target, r in answered if target != 0 and (r.error is not None or r.status not in (200,))]
    assert not others_failed, [(r.status, r.error, r.body) for r in others_failed[:3]]
    created = [r for _, r in answered if r.status == 200]
    videos = {row[0] for row in query(postgres_database_url, "SELECT id FROM videos")}
    lost = [r.body["id"] for r in created if r.body["id"] not in videos]
    assert not lost, f"{len(lost)} of {len(created)} acknowledged videos lost"

    # What the dead replica held is freed when its lease lapses, by the live replicas.
    survivor = replicas[1]

    def nothing_held() -> bool:
        shown = survivor.relayctl("keys", "limits", "alice", "--json")
        return shown.returncode == 0 and json.loads(shown.stdout)["held_video_seconds"] == 0

    took = wait_for(nothing_held, 20, "the dead replica's holdings being freed")
    print(f"\nkilled one replica of 3 mid-load: {len(created)} videos acknowledged, none lost; holdings freed in {took:.1f} s")
    # Its videos are served by the others.
    before_kill = next(r for target, r in answered if target == 0 and r.status == 200)
    seen = httpx.get(f"{survivor.url}{CREATE_PATH}/{before_kill.body['id']}", headers=headers(keys[0][1]), timeout=10, trust_env=False)
    assert seen.status_code == 200, seen.text
