"""Processes under test: start, wait for the port, measure memory and CPU, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    port: int
    key: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(server: Server, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            give_up(server, f"{server.name} exited with {server.process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    give_up(server, f"{server.name} did not listen on port {server.port} within {timeout:.0f} s")


def give_up(server: Server, reason: str) -> NoReturn:
    """Stop a server that failed to start (nobody else holds it yet), then fail."""
    stop(server)
    raise RuntimeError(reason)


@contextmanager
def workspace(prefix: str) -> Iterator[tuple[Path, list[Server]]]:
    """A temporary directory, and a list to add each server to as soon as it runs: all of them
    are stopped on the way out, whatever failed."""
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        workdir = Path(directory)
        # nginx started as root serves files as `nobody`, which must be able to enter this directory.
        workdir.chmod(0o755)
        servers: list[Server] = []
        try:
            yield workdir, servers
        finally:
            for server in reversed(servers):
                stop(server)


def stop(server: Server) -> None:
    if server.process.poll() is None:
        _signal(server, signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _signal(server, signal.SIGKILL)
            server.process.wait()


def _signal(server: Server, number: signal.Signals) -> None:
    """To the whole process group where the server leads one (uvicorn's and LiteLLM's workers)."""
    try:
        if os.getpgid(server.process.pid) == server.process.pid:
            os.killpg(server.process.pid, number)
            return
    except ProcessLookupError:
        return
    server.process.send_signal(number)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (uvicorn's workers), from /proc."""
    total = 0
    for member in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process tree: shows whether the relay is CPU-bound while it streams."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{member}/stat") as stat:
                # Fields after the ")" that ends the command name; utime and stime are the 12th and 13th.
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            direct = [int(child) for child in listing.read().split()]
    except FileNotFoundError:
        return []
    return direct + [grandchild for child in direct for grandchild in _children(child)]
