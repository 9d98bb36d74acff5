"""The servers the load goes through: the relay (as `make run` starts it) and the LiteLLM proxy."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from relay.crypto import generate_key

from .procs import Server, free_port, give_up, wait_until_listening

REPO = Path(__file__).resolve().parent.parent
RELAY_BIN = Path(sys.executable).parent
# What the relay's account sends upstream; the mock accepts anything.
UPSTREAM_TOKEN = "sk-bench-upstream"
# The relay key has limits, as production keys do, so that their checks are on the measured path:
# a request-rate limit and a USD budget (each create reserves against it), both far above what a
# run uses, so that none is ever refused.
KEY_LIMITS = ("--requests-per-minute", "1000000", "--usd-per-month", "1000000000")
# Shared by the relays of a run and the nginx in front of one of them that offloads downloads.
OFFLOAD_SECRET = secrets.token_hex(32)


def prepare_relay_database(
    workdir: Path, upstream_base: str, *, database: str | None = None, source: Path | None = None, key_limits: tuple[str, ...] = KEY_LIMITS
) -> tuple[dict[str, str], str]:
    """A database (SQLite in `workdir` unless `database` names another) with one account on the mock
    and one key with `key_limits` (KEY_LIMITS unless told); returns (env, key). With `source` (another checkout of the relay,
    bench/ab.py), its relayctl prepares the database and the env runs its code."""
    env = {
        **os.environ,
        "RELAY_DATABASE": database or str(workdir / "relay.db"),
        "RELAY_SECRET_KEY": generate_key(),
        "RELAY_OFFLOAD_SECRET": OFFLOAD_SECRET,
    }
    relayctl = [str(RELAY_BIN / "relayctl")]
    if source is not None:
        env["PYTHONPATH"] = str(source)
        # -P: the current directory must not come before PYTHONPATH, or this checkout's ops would run.
        relayctl = [sys.executable, "-P", "-c", "from ops.cli import main; main()"]
    subprocess.run(
        [*relayctl, "accounts", "add", "mock", "--type", "openai-responses", "--token-stdin", "--base-api", upstream_base],
        input=UPSTREAM_TOKEN.encode(),
        env=env,
        check=True,
        capture_output=True,
    )
    issued = subprocess.run([*relayctl, "keys", "issue", "bench", *key_limits, "--json"], env=env, check=True, capture_output=True)
    return env, json.loads(issued.stdout)["key"]


# How `make run` and the Procfile serve the relay (host and port aside).
RELAY_UVICORN_FLAGS = ("--loop", "uvloop", "--http", "httptools", "--no-access-log")


def start_relay(workdir: Path, env: dict[str, str], key: str, *, workers: int, name: str | None = None, cwd: Path = REPO) -> Server:
    """The relay with the flags `make run` and the Procfile use: uvicorn, uvloop, httptools."""
    name = name or f"relay-{workers}w"
    port = free_port()
    with open(workdir / f"{name}.log", "wb") as log_file:
        process = subprocess.Popen(
            [
                str(RELAY_BIN / "uvicorn"),
                "relay.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                *RELAY_UVICORN_FLAGS,
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    server = Server(name, f"http://127.0.0.1:{port}/openai/v1", process, port, key=key)
    wait_until_listening(server)
    return server


LITELLM_VENV = REPO / ".venv-bench-litellm"
LITELLM_MASTER_KEY = "sk-bench-litellm"


def litellm_available() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


def start_litellm(workdir: Path, upstream_base: str, *, workers: int) -> Server:
    """LiteLLM's proxy from its own virtualenv (bench/litellm/), against the same mock upstream."""
    port = free_port()
    with open(workdir / f"litellm-{workers}w.log", "wb") as log_file:
        process = subprocess.Popen(
            [
                str(LITELLM_VENV / "bin" / "python"),
                str(REPO / "bench" / "litellm" / "launch.py"),
                "--port",
                str(port),
                "--upstream",
                upstream_base,
                "--workers",
                str(workers),
                "--master-key",
                LITELLM_MASTER_KEY,
            ],
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"litellm-{workers}w", f"http://127.0.0.1:{port}/v1", process, port, key=LITELLM_MASTER_KEY)
    wait_until_listening(server, timeout=180)
    # The port opens before every worker has loaded its config; each says so once it has.
    log = workdir / f"litellm-{workers}w.log"
    deadline = time.monotonic() + 180
    while log.read_text(errors="replace").count("Proxy initialized") < workers:
        if time.monotonic() > deadline or process.poll() is not None:
            give_up(server, f"LiteLLM ({workers} workers) did not finish starting; see its log")
        time.sleep(0.2)
    return server


def create_video(server: Server) -> str:
    """One create through `server`: retrieves and downloads need a video its key owns."""
    request = urllib.request.Request(
        server.url + "/videos",
        data=b'{"model":"sora-2","prompt":"A calm lake at dawn, slow pan","seconds":"4","size":"720x1280"}',
        headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return str(json.load(answer)["id"])
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{server.name} answered a create with {error.code}: {error.read()[:500]!r}") from None
