"""Shared fixtures: a sandbox upstream process, an in-process relay, real relay processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from postgres_cluster import Cluster, find_bin_dir, fresh_database, start_cluster
from starlette.testclient import TestClient

from ops.cli import main as relayctl
from relay.accounts import add_account
from relay.app import create_app
from relay.config import Settings
from relay.crypto import generate_key
from relay.keys import issue_key
from relay.state import RelayState
from relay.store import Store
from relay.store.location import parse_location
from relay.store.schema import TABLE_NAMES

# `run`: a test's coroutine on each kind of event loop (tests/event_loops.py).
pytest_plugins = ["event_loops"]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=0.5) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited with {process.returncode} before serving")
            try:
                http.get(url)
                return
            except httpx.TransportError:
                time.sleep(0.05)
    raise RuntimeError(f"{url} did not start serving within {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Sandbox:
    url: str
    # One client for the whole session: each of httpx's one-off calls (httpx.get, ...) makes a
    # client and loads a CA bundle, a third of the CPU of the tests that reset the sandbox.
    http: httpx.Client

    def base_api(self) -> str:
        return f"{self.url}/v1"

    def fault(self, **rule: Any) -> None:
        self.http.post(f"{self.url}/_sandbox/faults", json=rule).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.url}/_sandbox/requests")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        self.http.delete(f"{self.url}/_sandbox/faults").raise_for_status()
        self.http.delete(f"{self.url}/_sandbox/requests").raise_for_status()


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[Sandbox]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "relay.sandbox", "--port", str(port), "--complete-after", "0.3"], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/_sandbox/faults", process)
        with httpx.Client(trust_env=False) as http:
            yield Sandbox(url, http)
    finally:
        stop(process)


@pytest.fixture
def sandbox(sandbox_process: Sandbox) -> Iterator[Sandbox]:
    sandbox_process.reset()
    yield sandbox_process
    sandbox_process.reset()


@dataclass
class Relay:
    """An in-process relay (ASGI, through starlette's TestClient) on a fresh database."""

    client: TestClient
    state: RelayState
    settings: Settings

    def add_account(
        self, name: str, base_api: str, *, token: str | None = None, priority: int = 100, type: str = "openai-responses"
    ) -> None:
        add_account(
            self.state.store,
            self.state.box,
            name=name,
            type=type,
            credential=token or f"tok-{name}",
            base_api=base_api,
            priority=priority,
        )
        self.state.reload()

    def issue_key(self, name: str = "alice", permissions: tuple[str, ...] = ("openai",), **options: Any) -> str:
        return issue_key(self.state.store, name, permissions, **options).key

    def flush(self) -> None:
        assert self.state.recorder.flush()

    def metrics(self) -> str:
        return self.client.get("/metrics").text


class ManualClock:
    """A clock the test moves by hand (`clock.now += 60`), given as a relay's or a sandbox's clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def relay_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database": tmp_path / "relay.db",
        "secret_key": generate_key(),
        "connect_timeout_seconds": 2.0,
        "read_timeout_seconds": 5.0,
        "refresh_interval_seconds": 0.2,
        # In-process relays move their clock by hand: the watcher's polls would land in the
        # middle of what a test counts. Its own tests turn it on.
        "job_watcher": False,
        # Freezing the heap is for a process that runs one relay: a test process starts hundreds.
        "gc_freeze": False,
        # Pruning starts at a random point of its hour: it would land in some test's middle. Its
        # own tests set an interval.
        "retention_interval_seconds": 1e9,
    }
    values.update(overrides)
    values["database"] = parse_location(values["database"])
    return Settings(**values)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets `BACKENDS = ("sqlite", "postgresql")` runs each of its tests that uses a
    store or a relay once per database; elsewhere they run on SQLite only."""
    if "backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "BACKENDS", None)
        if backends is not None:
            metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """RELAY_DATABASE for this test: a file in its tmp_path, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        yield str(tmp_path / "relay.db")
        return
    with fresh_database(request.getfixturevalue("postgres_cluster")) as url:
        yield url


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    """The store on this test's database (see `database`), its schema made."""
    opened = Store(database)
    opened.ensure_schema()
    yield opened
    opened.close()


@pytest.fixture
def make_relay(tmp_path: Path, database: str) -> Iterator[Any]:
    opened: list[TestClient] = []

    def make(**overrides: Any) -> Relay:
        settings = relay_settings(tmp_path, **{"database": database, **overrides})
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return Relay(client=client, state=client.app.state.relay, settings=settings)  # type: ignore[attr-defined]

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def relay(make_relay: Any) -> Relay:
    return make_relay()  # type: ignore[no-any-return]


# An upstream credential the CLI tests use; no output may ever contain it.
TOKEN = "sk-test-UPSTREAM-credential-0123456789"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """relayctl in-process (click's CliRunner) on a fresh database; checks exit code and that TOKEN never shows."""
    monkeypatch.setenv("RELAY_DATABASE", str(tmp_path / "relay.db"))
    monkeypatch.setenv("RELAY_SECRET_KEY", generate_key())
    runner = CliRunner()

    def run(*args: str, input: str | None = None, code: int = 0) -> Any:
        result = runner.invoke(relayctl, list(args), input=input, catch_exceptions=False)
        assert result.exit_code == code, result.output
        assert TOKEN not in result.output
        return result

    return run


@dataclass
class RelayProcess:
    url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, as an operator's supervisor stops it: the relay shuts down gracefully."""
        stop(self.process)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def relayctl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "relayctl"), *args], env=self.env, input=input, capture_output=True, text=True, timeout=60)

    def add_accounts(self, sandbox: Sandbox, *names: str) -> None:
        """As an operator would: `relayctl accounts add NAME ... --token-stdin`, token tok-NAME."""
        for name in names:
            done = self.relayctl(
                "accounts",
                "add",
                name,
                "--type",
                "openai-responses",
                "--token-stdin",
                "--base-api",
                sandbox.base_api(),
                input=f"tok-{name}\n",
            )
            assert done.returncode == 0, done.stderr

    def issue_key(self, name: str) -> str:
        issued = self.relayctl("keys", "issue", name, "--permission", "openai", "--json")
        assert issued.returncode == 0, issued.stderr
        return json.loads(issued.stdout)["key"]  # type: ignore[no-any-return]


@pytest.fixture
def relay_process(tmp_path: Path) -> Iterator[Any]:
    """Start real `uvicorn relay.app:app` processes (the way the Procfile does) on 127.0.0.1."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, workers: int = 1, extra_env: dict[str, str] | None = None, cwd: Path = ROOT) -> RelayProcess:
        """`cwd`: the process's working directory (replicas on PostgreSQL get one each: no shared files)."""
        port = free_port()
        env = {
            **os.environ,
            "RELAY_DATABASE": str(tmp_path / "relay.db"),
            "RELAY_SECRET_KEY": generate_key(),
            # Tests wait about a second for every worker to see a CLI change; this leaves a margin on a busy machine.
            "RELAY_REFRESH_INTERVAL_SECONDS": "0.2",
            **(extra_env or {}),
        }
        env = {name: value for name, value in env.items() if value != ""}
        log_path = tmp_path / f"relay-{port}.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "relay.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--no-access-log",
            ],
            cwd=cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        log_file.close()
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/healthz", process)
        return RelayProcess(url=url, env=env, log_path=log_path, process=process)

    yield start
    for process in started:
        stop(process)


# PostgreSQL (issue 13): one throwaway cluster per test session (tests/postgres_cluster.py), and a
# fresh database for each test that asks for one.
@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    if find_bin_dir() is None:
        reason = "PostgreSQL's initdb and postgres are missing: make test installs Debian's postgresql package"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with start_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: Cluster) -> str:
    """postgresql://relay:<password>@127.0.0.1:<port>/relay, shared by the whole session."""
    return postgres_cluster.url()


@pytest.fixture
def postgres_database_url(postgres_cluster: Cluster) -> Iterator[str]:
    """A new, empty database of this test's own, dropped afterwards."""
    with fresh_database(postgres_cluster) as url:
        yield url


def run_sql(store: Store, statement: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
    """One statement of the store's portable SQL, outside a transaction, on either backend: its rows, if any.

    For tests that set up a state no public method makes (a lapsed lease, a row an older version wrote)."""
    with store.reading() as conn:
        cursor = conn.execute(statement, parameters)
        return list(cursor) if getattr(cursor, "description", None) else []


def every_row_as_text(store: Store) -> str:
    """Every row of every table, as text: to check that something is stored nowhere."""
    return "\n".join(repr(tuple(row)) for table in TABLE_NAMES for row in run_sql(store, f"SELECT * FROM {table}"))
