"""Real processes on 127.0.0.1: uvicorn serving the relay, the sandbox upstream, relayctl as an
operator types it, and the official openai SDK as the client."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import BIN, ROOT, RelayProcess, Sandbox, free_port

from relay.crypto import generate_key

pytestmark = pytest.mark.e2e


def operator_setup(relay: RelayProcess, sandbox: Sandbox, *accounts: str) -> str:
    """Accounts tok-NAME pointed at the sandbox, and a key for alice, all through relayctl."""
    relay.add_accounts(sandbox, *accounts)
    return relay.issue_key("alice")


def sdk(relay: RelayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{relay.url}/openai/v1", api_key=key, max_retries=0, timeout=20)


def eventually(check: Callable[[], bool], within: float = 2.0) -> float:
    """Seconds until `check()` held; fails if it did not within `within` seconds."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within} s")
        time.sleep(0.05)


def test_openai_sdk_create_through_relay(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = operator_setup(relay, sandbox, "main")
    client = sdk(relay, key)
    video = client.videos.create(prompt="A drone shot of surfers riding sunrise waves", model="sora-2", seconds="8", size="1280x720")
    assert video.id.startswith("video_") and video.status == "queued"
    assert video.seconds == "8" and video.size == "1280x720"
    [seen] = sandbox.requests()
    assert seen["token"] == "tok-main"
    assert seen["content_type"].startswith("multipart/form-data")  # what SDK >= 2.27 sends
    raw = client.videos.with_raw_response.create(prompt="again")
    assert raw.headers["x-request-id"].startswith("req_")

    sandbox.fault(preset="rate_limited", resets_in_seconds=30, times=1)
    with pytest.raises(openai.RateLimitError):
        client.videos.create(prompt="limited")
    with pytest.raises(openai.AuthenticationError):
        sdk(relay, "rk-0123456789abcdef-wrong").videos.create(prompt="nope")
    # The only account is cooling down: the relay says so in the envelope, as a 503.
    with pytest.raises(openai.InternalServerError) as raised:
        client.videos.create(prompt="none left")
    assert raised.value.status_code == 503
    assert "No upstream account" in str(raised.value)


def test_cli_changes_reach_a_running_relay_with_two_workers(relay_process: Any, sandbox: Sandbox) -> None:
    # Without the job watcher, every upstream request the sandbox sees is one this test sent.
    relay = relay_process(workers=2, extra_env={"RELAY_JOB_WATCHER": "0"})
    key = operator_setup(relay, sandbox)  # no account yet
    headers = {"Authorization": f"Bearer {key}"}
    create = {"prompt": "a cat"}

    # A new connection for each request (none kept alive), so that requests reach both workers.
    fresh = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))

    def status() -> int:
        return fresh.post(f"{relay.url}/openai/v1/videos", json=create, headers=headers).status_code

    def all_workers(expected: int) -> Callable[[], bool]:
        # Several requests in a row land on both workers.
        return lambda: all(status() == expected for _ in range(6))

    assert status() == 503
    assert (
        relay.relayctl(
            "accounts", "add", "a", "--type", "openai-responses", "--token", "tok-a", "--base-api", sandbox.base_api()
        ).returncode
        == 0
    )
    eventually(all_workers(200))

    sandbox.fault(preset="unauthorized", times=1)
    assert status() == 503  # the account's credential was refused, not the caller's key
    cooldowns = json.loads(relay.relayctl("cooldowns", "--json").stdout)
    assert [(c["account"], c["state"]) for c in cooldowns] == [("a", "unauthorized")]
    eventually(all_workers(503))
    assert relay.relayctl("accounts", "reset", "a").returncode == 0
    eventually(all_workers(200))

    assert relay.relayctl("accounts", "disable", "a").returncode == 0
    eventually(all_workers(503))
    assert relay.relayctl("accounts", "enable", "a").returncode == 0
    eventually(all_workers(200))

    assert relay.relayctl("keys", "revoke", "alice").returncode == 0
    eventually(all_workers(401))

    # Both workers record an outcome for every upstream request into the one database: while they
    # run (each recorder writes its batch within a fraction of a second; on a loaded machine,
    # later), and still after a graceful stop.
    def recorded() -> int:
        with contextlib.closing(sqlite3.connect(relay.env["RELAY_DATABASE"])) as db:
            return int(db.execute("SELECT count(*) FROM outcomes").fetchone()[0])

    fresh.close()
    sent_upstream = len(sandbox.requests())
    eventually(lambda: recorded() == sent_upstream, within=10.0)
    relay.stop()
    assert recorded() == len(sandbox.requests()) == sent_upstream
    assert "Traceback" not in relay.log()


def test_metrics_and_health_from_a_process(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = operator_setup(relay, sandbox, "main")
    httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": "x"}, headers={"Authorization": f"Bearer {key}"})
    assert httpx.get(f"{relay.url}/healthz").json() == {"status": "ok", "database": "ok"}
    text = httpx.get(f"{relay.url}/metrics").text
    assert (
        'relay_upstream_requests_total{account="main",account_type="openai-responses",'
        'error_class="none",route="videos.create",status_class="2xx"} 1.0'
    ) in text
    assert key not in text and "tok-main" not in text


def test_demo_script_runs(tmp_path: Any) -> None:
    """`make demo` (docs/demo.sh) is what the README points newcomers at: keep it working."""
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DEMO_SANDBOX_PORT": str(free_port()),
        "DEMO_RELAY_PORT": str(free_port()),
    }
    env.pop("RELAY_SECRET_KEY", None)
    done = subprocess.run(["bash", str(ROOT / "docs" / "demo.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # The 429 never reaches the user: the relay moved the create to the other account.
    assert "create -> HTTP 429" not in done.stdout and done.stdout.count("create -> HTTP 200") == 2
    assert "rate_limited" in done.stdout
    assert 'relay_account_state{account="acct-a",state="rate_limited"} 1.0' in done.stdout
    assert '"code": "relay_budget_exceeded"' in done.stdout
    assert 'relay_quota_hits_total{key="demo-user",limit="usd_per_day"} 1.0' in done.stdout


@pytest.mark.parametrize("taken", ["DEMO_SANDBOX_PORT", "DEMO_RELAY_PORT"])
def test_demo_stops_when_a_port_is_taken(taken: str) -> None:
    # A server left on the demo's port (a `make run` still open) must not be driven in its place.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports = {"DEMO_SANDBOX_PORT": str(free_port()), "DEMO_RELAY_PORT": str(free_port())}
        ports[taken] = str(holder.getsockname()[1])
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **ports}
        done = subprocess.run(["bash", str(ROOT / "docs" / "demo.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"port {ports[taken]} on 127.0.0.1 is already in use" in done.stderr and taken in done.stderr
    assert "Done" not in done.stdout and "relayctl" not in done.stdout


def test_key_file_announced_once_and_no_secret_in_logs(relay_process: Any, sandbox: Sandbox) -> None:
    # An empty RELAY_SECRET_KEY counts as unset: the relay makes a key file and says so once.
    relay = relay_process(workers=2, extra_env={"RELAY_SECRET_KEY": ""})
    key_file = relay.env["RELAY_DATABASE"] + ".key"
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    key = operator_setup(relay, sandbox, "a", "b")
    headers = {"Authorization": f"Bearer {key}"}
    for preset in ("rate_limited", "unauthorized", "server_error"):
        sandbox.fault(preset=preset, times=1)
        httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": "x"}, headers=headers, timeout=10)
    httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": "x"}, headers={"Authorization": "Bearer rk-0123456789abcdef-guess"})
    log = relay.log()
    assert log.count("created a new secret key file") == 1, log
    assert "upstream error" in log
    secrets = [key, "tok-a", "tok-b", Path(key_file).read_text().strip(), "rk-0123456789abcdef-guess"]
    for secret in secrets:
        assert secret not in log
        assert secret not in httpx.get(f"{relay.url}/metrics").text


def test_wrong_secret_key_stops_the_relay(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    operator_setup(relay, sandbox, "a")
    env = {**relay.env, "RELAY_SECRET_KEY": generate_key()}
    done = subprocess.run(
        [str(BIN / "uvicorn"), "relay.app:app", "--port", str(free_port())], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "does not match" in done.stdout + done.stderr


def test_a_file_that_is_not_a_database_stops_the_relay_cleanly(tmp_path: Path) -> None:
    not_a_database = tmp_path / "usage.csv"
    not_a_database.write_text("key,requests\n")
    env = {**os.environ, "RELAY_DATABASE": str(not_a_database), "RELAY_SECRET_KEY": generate_key()}
    done = subprocess.run(
        [str(BIN / "uvicorn"), "relay.app:app", "--port", str(free_port())], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "is not a relay database" in done.stdout + done.stderr
    assert "Unclosed" not in done.stdout + done.stderr
    assert not_a_database.read_text() == "key,requests\n"


def test_rotations_and_cooldown_clears_reach_a_running_relay(relay_process: Any, sandbox: Sandbox) -> None:
    # Key-file mode, so `secrets rotate` has to reach the relay without a restart.
    relay = relay_process(workers=2, extra_env={"RELAY_SECRET_KEY": ""})
    key = operator_setup(relay, sandbox, "a", "b")

    def create(with_key: str) -> httpx.Response:
        return httpx.post(
            f"{relay.url}/openai/v1/videos", json={"prompt": "x"}, headers={"Authorization": f"Bearer {with_key}"}, timeout=10
        )

    # a's credential dies: the relay marks it unauthorized and moves on to b.
    def states() -> dict[str, str]:
        return {row["name"]: row["state"] for row in json.loads(relay.relayctl("accounts", "list", "--json").stdout)}

    sandbox.fault(preset="unauthorized", token="tok-a")
    eventually(lambda: create(key).status_code == 401 or states()["a"] == "unauthorized", within=3)
    time.sleep(1.0)  # both workers have refreshed their view
    sandbox.reset()
    assert all(create(key).status_code == 200 for _ in range(4))
    assert {r["token"] for r in sandbox.requests()} == {"tok-b"}
    # The operator rotates a's credential: a is back in rotation with the new token.
    assert relay.relayctl("accounts", "rotate", "a", "--token-stdin", input="tok-a2\n").returncode == 0
    eventually(lambda: create(key).status_code == 200 and sandbox.requests()[-1]["token"] == "tok-a2")

    # b is rate-limited for a long time; `cooldowns clear` brings it back now.
    sandbox.fault(preset="rate_limited", resets_in_seconds=600, token="tok-b", times=1)
    eventually(lambda: create(key).status_code == 200 and states()["b"] == "rate_limited", within=3)
    time.sleep(1.0)
    sandbox.reset()
    assert all(create(key).status_code == 200 for _ in range(4))
    assert {r["token"] for r in sandbox.requests()} == {"tok-a2"}
    assert relay.relayctl("cooldowns", "clear", "b").returncode == 0
    eventually(lambda: create(key).status_code == 200 and sandbox.requests()[-1]["token"] == "tok-b")

    # Re-encrypting every credential under a new key while the relay runs: it keeps serving.
    rotated = relay.relayctl("secrets", "rotate", "--json")
    assert rotated.returncode == 0 and json.loads(rotated.stdout) == {"reencrypted": 2, "webhook_secrets_reencrypted": 0}
    sandbox.reset()
    time.sleep(1.0)
    assert all(create(key).status_code == 200 for _ in range(6))
    assert {r["token"] for r in sandbox.requests()} == {"tok-a2", "tok-b"}
    assert "cannot be decrypted with this secret key" not in relay.log()

    # A key rotated with a grace period: old and new both work, then only the new one.
    new_key = json.loads(relay.relayctl("keys", "rotate", "alice", "--grace", "1h", "--json").stdout)["key"]
    eventually(lambda: create(new_key).status_code == 200)
    assert create(key).status_code == 200
    newest = json.loads(relay.relayctl("keys", "rotate", "alice", "--json").stdout)["key"]
    eventually(lambda: create(key).status_code == 401 and create(new_key).status_code == 401)
    assert create(newest).status_code == 200


def test_json_logs_are_structured_and_secret_free(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process(extra_env={"RELAY_LOG_FORMAT": "json"})
    key = operator_setup(relay, sandbox, "main")
    prompt = "a very private prompt about a secret garden"
    ok = httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": prompt}, headers={"Authorization": f"Bearer {key}"})
    sandbox.fault(preset="server_error", times=1)
    failed = httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": prompt}, headers={"Authorization": f"Bearer {key}"})
    refused = httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": prompt})
    time.sleep(0.3)
    entries = [json.loads(line) for line in relay.log().splitlines() if line.startswith("{")]
    requests = {e["request_id"]: e for e in entries if e["message"] == "request"}
    first = requests[ok.headers["x-request-id"]]
    assert first["key"] == "alice" and first["account"] == "main" and first["route"] == "videos.create"
    assert first["status"] == 200 and first["error_class"] == "none" and first["upstream_ms"] > 0
    assert first["duration_ms"] >= first["upstream_ms"] and first["level"] == "info"
    # The log line and the header tell the same relay overhead.
    assert first["overhead_ms"] == round(float(ok.headers["x-relay-overhead-ms"]), 3)
    assert 0 < first["overhead_ms"] <= first["duration_ms"] - first["upstream_ms"] + 0.01
    second = requests[failed.headers["x-request-id"]]
    assert second["status"] == 500 and second["error_class"] == "server_error"
    third = requests[refused.headers["x-request-id"]]
    assert third["status"] == 401 and third["route"] == "videos.create"
    # With no upstream call, the relay's own time is all there is (the app's max(0, ...) would show as 0).
    assert "upstream_ms" not in third and 0 < third["overhead_ms"] <= third["duration_ms"]
    assert any(e["message"] == "upstream error" and e["request_id"] == failed.headers["x-request-id"] for e in entries)
    log = relay.log()
    for secret in (key, "tok-main", prompt, "secret garden"):
        assert secret not in log


def test_no_secret_anywhere_an_operator_or_attacker_could_look(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process(workers=2, extra_env={"RELAY_SECRET_KEY": ""})
    key = operator_setup(relay, sandbox, "a", "b")
    proxy_password = "proxy-pa55word"
    assert (
        relay.relayctl(
            "accounts",
            "add",
            "c",
            "--type",
            "openai-responses",
            "--token",
            "tok-c",
            "--base-api",
            sandbox.base_api(),
            "--proxy",
            f"http://u:{proxy_password}@127.0.0.1:9",
        ).returncode
        == 0
    )
    rotated = json.loads(relay.relayctl("keys", "rotate", "alice", "--grace", "1h", "--json").stdout)["key"]
    headers = {"Authorization": f"Bearer {rotated}"}
    for preset in ("rate_limited", "unauthorized", "server_error", None):
        if preset:
            sandbox.fault(preset=preset, times=1)
        httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": "x"}, headers=headers, timeout=10)
    httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": "x"}, headers={"Authorization": f"Bearer {key}x"})
    time.sleep(0.5)
    secret_key = Path(relay.env["RELAY_DATABASE"] + ".key").read_text().split()[0]
    secrets = [key, rotated, key.split("-", 2)[2], rotated.split("-", 2)[2], "tok-a", "tok-b", "tok-c", proxy_password, secret_key]
    cli_outputs = [
        relay.relayctl(*command).stdout + relay.relayctl(*command).stderr
        for command in [
            ("keys", "list"),
            ("keys", "show", "alice", "--json"),
            ("accounts", "list", "--json"),
            ("accounts", "show", "c"),
            ("cooldowns", "--json"),
            ("outcomes", "--json"),
            ("outcomes", "summary"),
            ("sessions", "list"),
            ("doctor",),
        ]
    ]
    files = [Path(relay.env["RELAY_DATABASE"]), Path(relay.env["RELAY_DATABASE"] + "-wal")]
    database = b"".join(path.read_bytes() for path in files if path.exists())
    places = {"log": relay.log(), "metrics": httpx.get(f"{relay.url}/metrics").text, "cli": "\n".join(cli_outputs)}
    for secret in secrets:
        for place, text in places.items():
            assert secret not in text, f"a secret appears in the {place}"
        assert secret.encode() not in database, "a secret appears in the database file"


def test_slow_uploading_client_does_not_hold_up_others(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = operator_setup(relay, sandbox, "main")
    host, port = relay.url.removeprefix("http://").split(":")
    body = b'{"prompt": "a slow upload of a long prompt ' + b"x" * 200 + b'"}'
    with socket.create_connection((host, int(port))) as slow:
        slow.sendall(
            f"POST /openai/v1/videos HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        for index in range(0, len(body), 40):
            slow.sendall(body[index : index + 40])
            # Meanwhile other clients are served at once.
            quick = httpx.post(
                f"{relay.url}/openai/v1/videos", json={"prompt": "quick"}, headers={"Authorization": f"Bearer {key}"}, timeout=5
            )
            assert quick.status_code == 200
            time.sleep(0.3)
        answer = slow.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
    assert body in [base64.b64decode(r["body_b64"]) for r in sandbox.requests()]


def test_a_client_that_hangs_up_mid_body_is_a_quiet_499(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = operator_setup(relay, sandbox, "a")
    port = int(relay.url.rsplit(":", 1)[1])
    for framing in (b'Content-Length: 50\r\n\r\n{"pr', b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(
                b"POST /openai/v1/videos HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer "
                + key.encode()
                + b"\r\nContent-Type: application/json\r\n"
                + framing
            )
            time.sleep(0.2)
    eventually(lambda: 'relay_requests_total{route="videos.create",status="499"} 2.0' in httpx.get(f"{relay.url}/metrics").text)
    log = relay.log()
    assert "unhandled error" not in log and "Traceback" not in log, log
    assert 'status="500"' not in httpx.get(f"{relay.url}/metrics").text
    assert sandbox.requests() == []
