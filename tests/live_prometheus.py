"""A real Prometheus scraping a real relay (2 workers) under a scripted workload.

Used by tests/test_prometheus_live.py and by `make dashboard-pictures`. The workload drives
every error class through the sandbox upstream:

| account   | priority | what its upstream does                         | error class             |
| --------- | -------- | ---------------------------------------------- | ----------------------- |
| acct-429  | 1        | 429 with a 3 s reset, every time               | rate_limited            |
| acct-401  | 2        | 401                                            | unauthorized            |
| acct-402  | 3        | 402                                            | payment_required        |
| acct-cool | 4        | one 429 with a 10 min reset                    | rate_limited (cooldown) |
| acct-dead | 5        | nothing listens on its port                    | connection_error        |
| acct-ok   | 50       | works; per round a 500, a 502, a 404, a stall  | none, server_error, client_error, timeout |

so new work fails over down the list to acct-ok. Keys: alice (the workload), bob (a
requests-per-minute limit of 1) and carol (a USD budget) for the relay's own quotas (issue 6),
mallory (revoked); plus requests with no, malformed and unknown keys.

Background work: the job watcher polls every unfinished job (every 0.5 s here), and alice's
finished videos go to her webhook endpoint (a receiver in this process). Each round also creates
a job whose upstream then answers 404 (the watcher gives it up: not_found) and a new endpoint
that answers 410 (the relay disables it: gone), so those counters move between scrapes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from test_webhook_sender import running_receiver

from relay.accounts import add_account
from relay.config import Settings
from relay.crypto import generate_key
from relay.keys import issue_key
from relay.state import open_store
from relay.store.location import parse_location

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JOB = "video-relay"
METRICS_TOKEN = "metrics-token-for-the-live-test"
CREATE = {"model": "sora-2", "seconds": "4", "size": "720x1280"}
VIDEO_EVENTS = ["video.completed", "video.failed"]
# What `$__rate_interval` and `$__range` become when a dashboard query is sent to Prometheus.
ASSERT_WINDOWS = {"$__rate_interval": "2m", "$__range": "10m"}


def find_prometheus() -> tuple[str, str] | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return (prometheus, promtool) if prometheus and promtool else None


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def substitute(expr: str, windows: dict[str, str]) -> str:
    for variable, value in windows.items():
        expr = expr.replace(variable, value)
    return expr


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        answer = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": expr, "start": start, "end": end, "step": step}
        answer = httpx.get(f"{self.url}/api/v1/query_range", params=params, timeout=20).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def alert_states(self) -> dict[str, str]:
        """alertname -> firing/pending (absent: inactive)."""
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        states: dict[str, str] = {}
        for alert in answer["data"]["alerts"]:
            name = alert["labels"]["alertname"]
            if states.get(name) != "firing":
                states[name] = alert["state"]
        return states


@dataclass
class LiveStack:
    """The running relay, sandbox and Prometheus, and what the workload did."""

    prometheus: Prometheus
    relay_url: str
    sandbox_url: str
    database: Path
    secret_key: str
    workdir: Path
    relay: subprocess.Popen[bytes]
    started_at: float
    issue_6_cli: bool = False
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    # Run at close, after the processes stop (the webhook receiver).
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def relayctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RELAY_DATABASE": str(self.database), "RELAY_SECRET_KEY": self.secret_key}
        return subprocess.run([str(BIN / "relayctl"), *args], env=env, capture_output=True, text=True, timeout=60)

    def store(self) -> Any:
        store, _ = open_store(Settings(database=parse_location(self.database), secret_key=self.secret_key))
        return store

    def close(self) -> None:
        for process in reversed(self.processes):
            stop(process)
        for cleanup in reversed(self.cleanups):
            cleanup()


def start_stack(workdir: Path, rules: Path) -> LiveStack:
    """Sandbox, relay (2 workers, metrics behind a token) and Prometheus scraping it every second."""
    found = find_prometheus()
    assert found is not None, "prometheus and promtool are needed"
    prometheus_bin, _ = found
    workdir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sandbox_port, relay_port, prometheus_port = free_port(), free_port(), free_port()
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "relay.sandbox", "--port", str(sandbox_port), "--complete-after", "0.3"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "sandbox.log").open("wb"),
        )
        processes.append(sandbox)
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"

        database, secret_key = workdir / "relay.db", generate_key()
        env = {
            **os.environ,
            "RELAY_DATABASE": str(database),
            "RELAY_SECRET_KEY": secret_key,
            "RELAY_READ_TIMEOUT": "1",
            "RELAY_CONNECT_TIMEOUT": "1",
            "RELAY_MAX_FAILOVER": "5",
            "RELAY_REFRESH_INTERVAL_SECONDS": "0.2",
            "RELAY_POLL_AFTER_MS": "100",
            "RELAY_METRICS_TOKEN": METRICS_TOKEN,
            "RELAY_LOG_FORMAT": "json",
            "RELAY_JOB_POLL_SECONDS": "0.5",
            "RELAY_WEBHOOK_ALLOW_PRIVATE": "1",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        relay = subprocess.Popen(
            [str(BIN / "uvicorn"), "relay.app:app", "--host", "127.0.0.1", "--port", str(relay_port), "--workers", "2", "--no-access-log"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "relay.log").open("wb"),
        )
        processes.append(relay)
        relay_url = f"http://127.0.0.1:{relay_port}"

        token_file = workdir / "metrics-token"
        token_file.write_text(METRICS_TOKEN)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                    "static_configs": [{"targets": [f"127.0.0.1:{relay_port}"]}],
                }
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        prometheus = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--storage.tsdb.retention.time=1d",
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "prometheus.log").open("wb"),
        )
        processes.append(prometheus)
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"

        wait_for(f"{sandbox_url}/_sandbox/faults", sandbox)
        wait_for(f"{relay_url}/healthz", relay)
        wait_for(f"{prometheus_url}/-/ready", prometheus)
    except BaseException:
        for process in reversed(processes):
            stop(process)
        raise
    return LiveStack(
        prometheus=Prometheus(prometheus_url),
        relay_url=relay_url,
        sandbox_url=sandbox_url,
        database=database,
        secret_key=secret_key,
        workdir=workdir,
        relay=relay,
        started_at=time.time(),
        processes=processes,
    )


def rules_for_a_quick_test(source: Path, target: Path) -> Path:
    """The alert rules with every `for:` set to 0s: the expressions are what is under test here.

    (How long each must hold is covered by promtool's unit tests.)
    """
    document = yaml.safe_load(source.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    target.write_text(yaml.safe_dump(document))
    return target


class Workload:
    """The scripted workload; `run` drives it for some rounds, a scrape interval or more apart."""

    def __init__(self, stack: LiveStack) -> None:
        self.stack = stack
        self.client = httpx.Client(base_url=stack.relay_url, timeout=30)
        self.keys: dict[str, str] = {}
        self.videos: list[str] = []
        self.receiver = stack_receiver(stack)

    def fault(self, **rule: Any) -> None:
        httpx.post(f"{self.stack.sandbox_url}/_sandbox/faults", json=rule, timeout=10).raise_for_status()

    def set_up(self) -> None:
        store, box = open_store(Settings(database=parse_location(self.stack.database), secret_key=self.stack.secret_key))
        base_api = f"{self.stack.sandbox_url}/v1"
        dead_api = f"http://127.0.0.1:{free_port()}/v1"
        for name, priority, api in (
            ("acct-429", 1, base_api),
            ("acct-401", 2, base_api),
            ("acct-402", 3, base_api),
            ("acct-cool", 4, base_api),
            ("acct-dead", 5, dead_api),
            ("acct-ok", 50, base_api),
        ):
            add_account(store, box, name=name, type="openai-responses", credential=f"tok-{name}", base_api=api, priority=priority)
        for name in ("alice", "bob", "carol", "mallory"):
            self.keys[name] = issue_key(store, name, ("openai",)).key
        store.revoke_key("mallory", time.time())
        store.close()
        self.fault(preset="rate_limited", token="tok-acct-429", resets_in_seconds=3)
        self.fault(preset="unauthorized", token="tok-acct-401")
        self.fault(preset="payment_required", token="tok-acct-402")
        self.fault(preset="rate_limited", token="tok-acct-cool", resets_in_seconds=600, times=1)
        # The relay's own limits (issue 6): a request rate for bob, a small USD budget for carol.
        limits = self.stack.relayctl("keys", "limits", "bob", "--requests-per-minute", "1")
        self.stack.issue_6_cli = limits.returncode == 0
        if self.stack.issue_6_cli:
            budget = self.stack.relayctl("keys", "limits", "carol", "--usd-per-day", "0.9")
            assert budget.returncode == 0, budget.stderr
        self.webhook_endpoint("alice-ok", self.receiver.url("/ok"))

    def webhook_endpoint(self, name: str, url: str) -> None:
        created = self.call("POST", "/webhook_endpoints", json={"name": name, "url": url, "event_types": VIDEO_EVENTS})
        assert created.status_code == 200, created.text

    def call(self, method: str, path: str, key: str | None = "alice", **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys.get(key, key)}"
        response = self.client.request(method, f"/openai/v1{path}", headers=headers, **kwargs)
        label = f"{method} {path.split('/')[1] if '/' in path else path} {response.status_code}"
        self.stack.statuses[label] = self.stack.statuses.get(label, 0) + 1
        return response

    def create(self, key: str = "alice", prompt: str = "a lighthouse at dawn", session: str | None = None) -> httpx.Response:
        headers = {"Session-Id": session} if session else {}
        return self.call("POST", "/videos", key, json={"prompt": prompt, **CREATE}, headers=headers)

    def finish(self, video_id: str, key: str = "alice") -> str:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = self.call("GET", f"/videos/{video_id}", key).json().get("status")
            if status in ("completed", "failed"):
                return str(status)
            time.sleep(0.25)
        raise AssertionError(f"video {video_id} did not finish")

    def round(self, index: int) -> None:
        # An endpoint that answers 410 to this round's events: the relay disables it (gone).
        self.webhook_endpoint(f"alice-gone-{index}", self.receiver.url("/status/410"))
        good = self.create(session=f"session-{index}")
        assert good.status_code == 200, good.text
        failing = self.create(prompt="a storm [fail]")
        assert failing.status_code == 200, failing.text
        # A job its upstream forgets: the watcher's next poll gets a 404 and gives it up (not_found).
        # (Created after the session's job, which is to meet acct-429 first and lose its session.)
        lost = self.create(prompt="a job its upstream forgets")
        assert lost.status_code == 200, lost.text
        self.fault(status=404, token="tok-acct-ok", method="GET", path_contains=lost.json()["id"])
        video_id = good.json()["id"]
        assert self.finish(video_id) == "completed"
        assert self.finish(failing.json()["id"]) == "failed"
        assert self.call("GET", f"/videos/{video_id}/content").status_code == 200
        self.call("GET", "/videos?limit=5").raise_for_status()
        # server_error (500, 502), client_error (404) and timeout on the owner account, never
        # three server-side failures in a row (that would rest the account for 30 s).
        self.fault(status=500, token="tok-acct-ok", method="GET", path_contains=video_id, times=1)
        assert self.call("GET", f"/videos/{video_id}").status_code == 500
        self.call("GET", f"/videos/{video_id}").raise_for_status()
        self.fault(status=502, token="tok-acct-ok", method="GET", path_contains=video_id, times=1)
        assert self.call("GET", f"/videos/{video_id}").status_code == 502
        self.fault(status=404, token="tok-acct-ok", method="GET", path_contains=video_id, times=1)
        assert self.call("GET", f"/videos/{video_id}").status_code == 404
        self.fault(delay_seconds=1.6, token="tok-acct-ok", method="GET", path_contains=video_id, times=1)
        assert self.call("GET", f"/videos/{video_id}").status_code == 504
        self.call("GET", f"/videos/{video_id}").raise_for_status()
        # Refused keys.
        assert self.call("GET", "/videos", key=None).status_code == 401
        assert self.call("GET", "/videos", key="not-a-relay-key").status_code == 401
        assert self.call("GET", "/videos", key="rk-0000000000000000-unknownunknownunknown").status_code == 401
        assert self.call("GET", "/videos", key="mallory").status_code == 401
        # Relay-side quotas (issue 6): bob may make one request a minute; carol has a small budget.
        for _ in range(2):
            self.call("GET", "/videos", key="bob")
            self.create(key="bob")
        carol = self.create(key="carol")
        if carol.status_code == 200:
            self.finish(carol.json()["id"], "carol")

    def no_account_phase(self) -> None:
        """Every usable account out of rotation for a moment: new work gets 503 no_upstream_account."""
        store = self.stack.store()
        usable = ("acct-ok", "acct-429", "acct-dead")
        for name in usable:
            store.set_account_enabled(name, False)
        try:
            for _ in range(2):
                deadline = time.monotonic() + 5
                while self.create().status_code != 503:
                    # Each worker sees the change within RELAY_REFRESH_INTERVAL_SECONDS.
                    assert time.monotonic() < deadline, "disabled accounts still served new work"
                    time.sleep(0.1)
                time.sleep(1.2)
        finally:
            for name in usable:
                store.set_account_enabled(name, True)
            store.close()

    def run(self, rounds: int) -> None:
        for index in range(rounds):
            self.round(index)
            if index == 1:
                self.no_account_phase()
            time.sleep(1.1)
        self.client.close()


def stack_receiver(stack: LiveStack) -> Any:
    """A webhook receiver on 127.0.0.1 for the stack's lifetime (its path says how it answers)."""
    exits = ExitStack()
    stack.cleanups.append(exits.close)
    return exits.enter_context(running_receiver())


def relay_totals(stack: LiveStack) -> float:
    text = httpx.get(f"{stack.relay_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("relay_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_until_scraped(stack: LiveStack, timeout: float = 20.0) -> None:
    """Until Prometheus holds the relay's final request count (so every query sees the whole workload)."""
    expected = relay_totals(stack)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = stack.prometheus.query("sum(relay_requests_total)")
        if result and math.isclose(float(result[0]["value"][1]), expected):
            time.sleep(1.5)  # one more rule evaluation on the final data
            return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus did not reach {expected} requests in {timeout} s")


def dump(stack: LiveStack) -> str:
    """Logs for a failure message."""
    parts = [f"statuses: {json.dumps(stack.statuses, sort_keys=True)}"]
    for name in ("relay.log", "prometheus.log"):
        path = stack.workdir / name
        if path.exists():
            parts.append(f"--- {name} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)
