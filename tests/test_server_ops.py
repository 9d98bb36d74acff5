"""The running relay as an operator meets it: log lines, start-up refusals, the database's
files, shutdown, and who may read /metrics.

Real processes run the Procfile's own command (bound to 127.0.0.1 instead of 0.0.0.0), so its
flags (--log-config, --timeout-graceful-shutdown) are what is tested.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import BIN, ROOT, RelayProcess, Sandbox, free_port, relay_settings, stop, wait_until_serving
from starlette.testclient import TestClient
from test_e2e import eventually
from test_streaming import MiB, big_video, sandbox_stat

from ops.cli import main as relayctl
from relay.app import create_app, metrics_authorized
from relay.config import ConfigError, Settings, load_settings
from relay.crypto import generate_key
from relay.logs import JsonFormatter, TextFormatter, fields
from relay.store import Store

pytestmark = pytest.mark.e2e


def procfile_command() -> str:
    line = (ROOT / "Procfile").read_text().strip()
    assert line.startswith("web: ")
    return line.removeprefix("web: ").replace("--host 0.0.0.0", "--host 127.0.0.1")


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    relay: RelayProcess
    stdout: Path
    stderr: Path

    def lines(self) -> list[str]:
        return self.stdout.read_text().splitlines() + self.stderr.read_text().splitlines()

    def terminate(self, within: float = 15.0) -> float:
        """SIGTERM; the seconds until the process exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(within)
        return time.monotonic() - started


@pytest.fixture
def procfile(tmp_path: Path) -> Iterator[Any]:
    """Start the Procfile's command; `serving=False` for a start that is meant to fail."""
    started: list[subprocess.Popen[bytes]] = []

    def start(extra_env: dict[str, str] | None = None, *, serving: bool = True) -> Started:
        port = free_port()
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PORT": str(port),
            "RELAY_DATABASE": str(tmp_path / "relay.db"),
            "RELAY_SECRET_KEY": generate_key(),
            "RELAY_REFRESH_INTERVAL_SECONDS": "0.2",
            **(extra_env or {}),
        }
        env = {name: value for name, value in env.items() if value != ""}
        stdout, stderr = tmp_path / f"out-{port}.log", tmp_path / f"err-{port}.log"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(["bash", "-c", f"exec {procfile_command()}"], cwd=ROOT, env=env, stdout=out, stderr=err)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        if serving:
            wait_until_serving(f"{url}/healthz", process)
        return Started(process, RelayProcess(url=url, env=env, log_path=stderr, process=process), stdout, stderr)

    yield start
    for process in started:
        stop(process)


# -- log lines ----------------------------------------------------------------------------------

FORGED = "bad\n2026-01-01 00:00:00,000 ERROR relay forged line\r\x1b[2K\u2028"


def record(message: str, **values: Any) -> logging.LogRecord:
    made = logging.LogRecord("relay", logging.WARNING, __file__, 1, message, None, None)
    made.__dict__.update(fields(**values))
    return made


def test_text_log_lines_escape_control_characters() -> None:
    line = TextFormatter().format(record(f"upstream error {FORGED}", code=FORGED, **{"odd\nname": 1}))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "code=bad\\n2026-01-01 00:00:00,000 ERROR relay forged line\\r\\x1b[2K\\u2028" in line
    assert "odd\\nname=1" in line
    entry = json.loads(JsonFormatter().format(record("upstream error", code=FORGED)))
    assert entry["code"] == FORGED


def test_a_traceback_cannot_forge_a_line() -> None:
    try:
        raise ValueError("boom\n2026-01-01 00:00:00,000 ERROR relay forged")
    except ValueError:
        made = record("unhandled error")
        made.exc_info = __import__("sys").exc_info()
    lines = TextFormatter().format(made).splitlines()
    assert lines[0].endswith("unhandled error") and all(line.startswith("    ") for line in lines[1:])


def test_an_upstream_error_code_with_a_newline_stays_on_its_line(procfile: Any, sandbox: Sandbox) -> None:
    started = procfile({"RELAY_LOG_FORMAT": "text"})
    relay = started.relay
    relay.add_accounts(sandbox, "main")
    key = relay.issue_key("alice")
    body = {"error": {"message": "no", "type": "invalid_request_error", "param": None, "code": FORGED}}
    sandbox.fault(status=400, body=body, times=1)
    answer = httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": "x"}, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 400
    started.terminate()
    lines = started.lines()
    assert any("upstream error" in line and "ERROR relay forged line" in line for line in lines)
    assert not any(line.startswith("2026-01-01") for line in lines)


def test_json_format_covers_uvicorns_own_lines(procfile: Any) -> None:
    started = procfile({"RELAY_LOG_FORMAT": "json"})
    assert httpx.get(f"{started.relay.url}/openai/v1/videos").status_code == 401
    started.terminate()
    entries = [json.loads(line) for line in started.lines()]  # every line, or this fails
    messages = [entry["message"] for entry in entries]
    assert any(message.startswith("Started server process") for message in messages)
    assert any(message.startswith("Uvicorn running on") for message in messages)
    assert any(entry["logger"] == "relay.access" and entry["status"] == 401 for entry in entries)
    assert any(message.startswith("Finished server process") for message in messages)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_bad_setting_is_one_line_and_no_traceback(procfile: Any, log_format: str) -> None:
    started = procfile({"RELAY_LOG_FORMAT": log_format, "RELAY_MAX_FAILOVER": "lots"}, serving=False)
    assert started.process.wait(20) != 0
    lines = started.lines()
    text = "\n".join(lines)
    assert "Traceback" not in text and "lifespan" not in text
    assert sum("RELAY_MAX_FAILOVER must be a number" in line for line in lines) == 1
    if log_format == "json":
        for line in lines:
            json.loads(line)


# -- the database, its folder and its key -------------------------------------------------------


def test_a_missing_database_folder_stops_the_start(procfile: Any, tmp_path: Path) -> None:
    database = tmp_path / "nonexistent" / "dir" / "x.db"
    started = procfile({"RELAY_DATABASE": str(database), "RELAY_SECRET_KEY": ""}, serving=False)
    assert started.process.wait(20) != 0
    text = "\n".join(started.lines())
    assert "does not exist" in text and f"relayctl db init --db {database}" in text and "Traceback" not in text
    assert not (tmp_path / "nonexistent").exists()


def run_relayctl(*args: str, env: dict[str, str], code: int = 0) -> Any:
    result = CliRunner().invoke(relayctl, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_no_new_key_beside_a_database_written_under_one(procfile: Any, tmp_path: Path) -> None:
    database = tmp_path / "relay.db"
    no_key = {"RELAY_DATABASE": str(database), "RELAY_SECRET_KEY": ""}
    run_relayctl("accounts", "add", "main", "--type", "openai-responses", "--token", "tok-main", env=no_key)
    key_file = tmp_path / "relay.db.key"
    key_file.rename(tmp_path / "elsewhere.key")
    started = procfile(no_key, serving=False)
    assert started.process.wait(20) != 0
    text = "\n".join(started.lines())
    assert "set RELAY_SECRET_KEY to that key or restore the key file" in text and "Traceback" not in text
    assert not key_file.exists()
    refused = run_relayctl("accounts", "list", env=no_key, code=1)
    assert "restore the key file" in refused.output and not key_file.exists()


def test_db_init_makes_a_private_folder_database_and_key(tmp_path: Path) -> None:
    database = tmp_path / "a" / "b" / "relay.db"
    env = {"RELAY_DATABASE": str(database), "RELAY_SECRET_KEY": ""}
    refused = run_relayctl("keys", "issue", "alice", "--permission", "openai", env=env, code=1)
    assert "relayctl db init" in refused.output and not (tmp_path / "a").exists()
    made = run_relayctl("db", "init", "--json", env=env)
    assert json.loads(made.stdout)["created"] == [str(database.parent), str(database), f"{database}.key"]
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{database}.key").stat().st_mode) == 0o600
    again = run_relayctl("db", "init", env=env)
    assert "nothing changed" in again.output
    run_relayctl("keys", "issue", "alice", "--permission", "openai", env=env)


def test_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        store = Store(tmp_path / "relay.db")
        store.ensure_schema()
        store.set_meta_if_absent("probe", "1")
        for suffix in ("", "-wal", "-shm", "-lock"):
            path = tmp_path / f"relay.db{suffix}"
            assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600, suffix
        store.close()
    finally:
        os.umask(previous)


# -- shutdown -------------------------------------------------------------------------------------


def test_shutdown_cuts_a_slow_download_at_the_limit_and_records_it(procfile: Any, sandbox: Sandbox, tmp_path: Path) -> None:
    limit = 2  # whole seconds: uvicorn takes an integer
    started = procfile({"RELAY_SHUTDOWN_TIMEOUT_SECONDS": str(limit)})
    relay = started.relay
    relay.add_accounts(sandbox, "main")
    key = relay.issue_key("alice")
    url = big_video(relay, sandbox, key, size=256 * MiB)
    first_bytes, hang_up = threading.Event(), threading.Event()

    def download() -> None:
        """A client that reads a little, then stalls: the download outlives the shutdown limit."""
        try:
            with httpx.stream("GET", url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as answer:
                chunks = answer.iter_raw(64 * 1024)  # kept: a dropped iterator closes the response
                next(chunks)
                first_bytes.set()
                hang_up.wait(30)
                for _ in chunks:
                    pass
        except httpx.HTTPError:
            pass  # cut by the shutdown, as intended

    downloading = threading.Thread(target=download, daemon=True)
    downloading.start()
    assert first_bytes.wait(10)
    took = started.terminate(within=limit + 10)
    hang_up.set()
    downloading.join(10)
    assert took < limit + 2.5, took
    assert started.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught
    log = started.stderr.read_text()
    assert "route=videos.content status=200" in log and "error_class=shutdown" in log and "Traceback" not in log
    with sqlite3.connect(tmp_path / "relay.db") as db:
        rows = db.execute("SELECT error_class, upstream_status FROM outcomes WHERE route = 'videos.content'").fetchall()
    assert rows == [("shutdown", 200)]
    eventually(lambda: sandbox_stat(sandbox, "open_streams") == 0, within=5)


# -- who may read /metrics ------------------------------------------------------------------------


def test_the_metrics_token_goes_in_the_bearer_scheme() -> None:
    settings = Settings(metrics_token="scrape-me")
    for good in ("Bearer scrape-me", "bearer scrape-me", "BEARER  scrape-me "):
        assert metrics_authorized(settings, good), good
    for bad in ("scrape-me", "Basic scrape-me", "Bearer", "Bearerscrape-me", "Bearer wrong", None):
        assert not metrics_authorized(settings, bad), bad


def test_metrics_without_a_token_only_over_loopback(tmp_path: Path) -> None:
    settings = relay_settings(tmp_path)
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1:8080") as local:
        assert local.get("/metrics").status_code == 200
        with TestClient(app, base_url="http://192.0.2.10:8080") as public:
            refused = public.get("/metrics")
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "metrics_token_required"
        with TestClient(app, base_url="http://[::ffff:127.0.0.1]:8080") as mapped:
            assert mapped.get("/metrics").status_code == 200
    with TestClient(create_app(dataclasses.replace(settings, metrics_token="scrape-me")), base_url="http://192.0.2.10:8080") as public:
        assert public.get("/metrics").status_code == 401
        assert public.get("/metrics", headers={"Authorization": "scrape-me"}).status_code == 401
        assert public.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200


def test_a_metrics_port_beyond_loopback_needs_a_token() -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "metrics.example"):
        with pytest.raises(ConfigError, match="RELAY_METRICS_TOKEN"):
            load_settings({"RELAY_METRICS_HOST": host, "RELAY_METRICS_PORT": "9100"})
        assert load_settings({"RELAY_METRICS_HOST": host, "RELAY_METRICS_TOKEN": "t"}).metrics_host == host
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert load_settings({"RELAY_METRICS_HOST": host}).metrics_host == host
