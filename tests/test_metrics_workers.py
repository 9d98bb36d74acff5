"""Metrics under `uvicorn relay.app:app --workers 2`: every scrape shows the true totals."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Sandbox
from prometheus_client import Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from relay import multiprocess
from relay.metrics import RelayRegistry

pytestmark = pytest.mark.e2e


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (sample, sample_labels), v in found.items() if sample == name and wanted <= sample_labels)


def worker_pids(supervisor: int) -> list[int]:
    """uvicorn's workers (spawned processes), not multiprocessing's resource tracker."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    workers = []
    for pid in children:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(int(pid))
        except FileNotFoundError:
            pass
    return workers


def test_two_workers_count_every_request_once(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process(workers=2)
    relay.add_accounts(sandbox, "acct-a")
    key = relay.issue_key("alice")
    headers = {"Authorization": f"Bearer {key}"}
    lists, creates, refused = 60, 12, 9

    # A new connection for each request (none kept alive), so uvicorn's workers share the load.
    client = httpx.Client(base_url=relay.url, timeout=20, limits=httpx.Limits(max_keepalive_connections=0))

    def call(index: int) -> int:
        if index < lists:
            return client.get("/openai/v1/videos", headers=headers).status_code
        if index < lists + creates:
            body = {"prompt": "a lighthouse", "model": "sora-2", "seconds": "4", "size": "720x1280"}
            return client.post("/openai/v1/videos", headers=headers, json=body).status_code
        return client.get("/openai/v1/videos", headers={"Authorization": "Bearer rk-wrong"}).status_code

    with client, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(call, range(lists + creates + refused)))
    assert statuses.count(200) == lists + creates and statuses.count(401) == refused

    # Several scrapes (each may reach either worker) all show the exact totals.
    for _ in range(6):
        with httpx.Client(timeout=10) as client:
            text = client.get(f"{relay.url}/metrics").text
        found = samples(text)
        assert value(found, "relay_requests_total", route="videos.list", status="200") == lists
        assert value(found, "relay_requests_total", route="videos.list", status="401") == refused
        assert value(found, "relay_requests_total", route="videos.create", status="200") == creates
        assert value(found, "relay_upstream_requests_total", account="acct-a", route="videos.create") == creates
        assert value(found, "relay_upstream_request_duration_seconds_count", account="acct-a") == creates
        assert value(found, "relay_request_overhead_seconds_count", route="videos.list") == lists + refused
        assert (
            value(found, "relay_auth_failures_total", reason="unknown") + value(found, "relay_auth_failures_total", reason="malformed")
            == refused
        )
        assert value(found, "relay_requests_in_flight") == 0
        # Database views appear once, not once per worker.
        assert value(found, "relay_account_state", account="acct-a", state="active") == 1
    pids = worker_pids(relay.pid)
    assert len(pids) == 2

    # A worker killed outright: uvicorn starts another, and nothing counted is lost.
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        current = worker_pids(relay.pid)
        if len(current) == 2 and pids[0] not in current:
            break
        time.sleep(0.2)
    else:
        pytest.fail("uvicorn did not replace the killed worker")
    for _ in range(4):
        found = samples(httpx.get(f"{relay.url}/metrics", timeout=10).text)
        assert value(found, "relay_requests_total", route="videos.list", status="200") == lists
        assert value(found, "relay_requests_in_flight") == 0


def test_a_new_start_counts_from_zero(relay_process: Any, sandbox: Sandbox) -> None:
    first = relay_process(workers=2)
    first.add_accounts(sandbox, "acct-a")
    key = first.issue_key("alice")
    for _ in range(5):
        httpx.get(f"{first.url}/openai/v1/videos", headers={"Authorization": f"Bearer {key}"}).raise_for_status()
    found = samples(httpx.get(f"{first.url}/metrics").text)
    assert value(found, "relay_requests_total", route="videos.list") == 5
    second = relay_process(workers=2, extra_env={"RELAY_SECRET_KEY": first.env["RELAY_SECRET_KEY"]})
    found = samples(httpx.get(f"{second.url}/metrics").text)
    assert value(found, "relay_requests_total", route="videos.list") == 0


def test_single_process_keeps_plain_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(multiprocess.ENV, raising=False)
    monkeypatch.delenv(multiprocess.ENV.lower(), raising=False)
    assert multiprocess.configure() is None


def test_registry_sums_workers_and_reaps_dead_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exposition side in isolation: two fake workers' files, one of them dead."""
    from prometheus_client import generate_latest, values

    monkeypatch.setenv(multiprocess.ENV, str(tmp_path))
    saved = values.ValueClass
    try:
        assert multiprocess.configure() == tmp_path
        for pid in (os.getpid(), 2**22 + 7):  # the second pid cannot exist (above pid_max's default)
            values.ValueClass = values.MultiProcessValue(lambda pid=pid: pid)
            counter = Counter("demo_total", "demo", registry=None)
            gauge = Gauge("demo_in_flight", "demo", registry=None, multiprocess_mode="livesum")
            counter.inc(3)
            gauge.inc(2)
        values.ValueClass = saved
        registry = RelayRegistry(tmp_path)
        # An instrument registered in multiprocess mode is served through the files only.
        local = Counter("local_total", "this process's own share", registry=None)
        registry.register(local)
        local.inc(5)
        found = samples(generate_latest(registry).decode())
        assert value(found, "demo_total") == 6 and value(found, "demo_in_flight") == 4
        assert value(found, "local_total") == 0
        multiprocess.reap_dead_workers(tmp_path)
        found = samples(generate_latest(registry).decode())
        assert value(found, "demo_total") == 6 and value(found, "demo_in_flight") == 2
    finally:
        values.ValueClass = saved


def test_a_workers_file_left_empty_does_not_fail_the_scrape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker creates its metric file before sizing it: one killed in between (uvicorn kills a
    worker that misses its health check) leaves an empty file that prometheus_client's own
    collector fails on, and with it every scrape from then on."""
    from prometheus_client import generate_latest, values

    monkeypatch.setenv(multiprocess.ENV, str(tmp_path))
    saved = values.ValueClass
    try:
        assert multiprocess.configure() == tmp_path
        values.ValueClass = values.MultiProcessValue(lambda: os.getpid())
        Counter("demo_total", "demo", registry=None).inc(3)
    finally:
        values.ValueClass = saved
    (tmp_path / f"counter_{2**22 + 9}.db").touch()
    (tmp_path / f"gauge_livesum_{2**22 + 9}.db").touch()
    found = samples(generate_latest(RelayRegistry(tmp_path)).decode())
    assert value(found, "demo_total") == 3


def test_metrics_on_their_own_port(relay_process: Any, sandbox: Sandbox) -> None:
    from conftest import free_port

    port = free_port()
    relay = relay_process(workers=2, extra_env={"RELAY_METRICS_PORT": str(port), "RELAY_METRICS_TOKEN": "scrape-me"})
    relay.add_accounts(sandbox, "acct-a")
    key = relay.issue_key("alice")
    for _ in range(7):
        httpx.get(f"{relay.url}/openai/v1/videos", headers={"Authorization": f"Bearer {key}"}).raise_for_status()
    # Not on the public port any more.
    assert httpx.get(f"{relay.url}/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 404
    metrics_url = f"http://127.0.0.1:{port}"
    refused = httpx.get(f"{metrics_url}/metrics", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_metrics_token"
    assert httpx.get(f"{metrics_url}/openai/v1/videos").status_code == 404
    assert httpx.post(f"{metrics_url}/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 405
    for _ in range(4):  # each scrape may reach either worker
        answer = httpx.get(f"{metrics_url}/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        found = samples(answer.text)
        assert value(found, "relay_requests_total", route="videos.list", status="200") == 7
        assert value(found, "relay_account_state", account="acct-a", state="active") == 1


def test_metrics_port_must_be_a_port() -> None:
    from relay.config import ConfigError, load_settings

    assert load_settings({"RELAY_METRICS_PORT": "9100"}).metrics_port == 9100
    assert load_settings({}).metrics_port is None
    for bad in ("0", "70000", "http", "-1"):
        with pytest.raises(ConfigError):
            load_settings({"RELAY_METRICS_PORT": bad})


def test_a_metrics_port_in_use_stops_the_start(relay_process: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited"):
            relay_process(extra_env={"RELAY_METRICS_PORT": str(port)})


def test_each_start_gets_its_own_directory_and_old_ones_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    me = os.getpid()
    ticks = multiprocess._start_ticks(me)
    assert ticks is not None
    alive = tmp_path / f"{multiprocess.DIR_PREFIX}{me}-{ticks}"
    gone = tmp_path / f"{multiprocess.DIR_PREFIX}{2**22 + 5}-123"  # no such pid
    reused = tmp_path / f"{multiprocess.DIR_PREFIX}{me}-1"  # same pid, another process's start time
    other = tmp_path / "unrelated"
    for path in (alive, gone, reused, other):
        path.mkdir()
    mine = multiprocess._supervisor_dir(os.getppid())
    assert mine.name == f"{multiprocess.DIR_PREFIX}{os.getppid()}-{multiprocess._start_ticks(os.getppid())}"
    assert mine.is_dir() and alive.is_dir() and other.is_dir()
    assert not gone.exists() and not reused.exists()
    # The same supervisor (a second worker, a restarted one) gets the same directory back.
    assert multiprocess._supervisor_dir(os.getppid()) == mine
