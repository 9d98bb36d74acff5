"""Servers that do part of the relay's job and nothing else, measured beside it in the same rounds,
so that each report shows how much of what the relay costs any proxy, or its stack alone, would
cost on the day's machine:

- floor-copy, floor-splice (bench/floor_proxy.py): pass bytes both ways through a process, by
  copying through user space or by splice(2);
- floor-nginx (bench/mock/balancer.conf.template): nginx passing HTTP requests on over keep-alive
  connections, a proxy in C;
- floor-asgi (bench/floor_asgi.py): uvicorn with the relay's flags and the relay's upstream client
  passing requests on, the relay's stack without its work;
- floor-starlette (the same module's starlette_app): the same through starlette's router with the
  relay's route table and a middleware, the relay's stack and framework up to its fifteenth pass
  without its work (since then the relay finds its routes without starlette's router);
- floor-uvicorn (bench/floor_uvicorn.py): uvicorn answering downloads from memory, the relay's
  response path without an upstream.

Each stands for the mock's API: its url ends in /v1 and it takes the mock's token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .mock import start_balancer
from .procs import Server, free_port, wait_until_listening
from .targets import RELAY_BIN, RELAY_UVICORN_FLAGS, REPO, UPSTREAM_TOKEN

# Timed at concurrency 1 with creates and retrieves (bench/run.py).
FOR_LATENCY = ("floor-nginx", "floor-copy", "floor-asgi", "floor-starlette")
# Timed with one download and with concurrent ones (bench/streaming.py).
FOR_DOWNLOADS = ("floor-copy", "floor-splice", "floor-uvicorn")


def start(names: tuple[str, ...], workdir: Path, mock: Server, servers: list[Server], *, file_bytes: int) -> list[Server]:
    """The floors called `names`, in front of `mock` (each added to `servers` as soon as it runs);
    `file_bytes` is the size of the mock's download, which floor-uvicorn serves instead."""
    started = []
    for name in dict.fromkeys(names):
        server = _STARTERS[name](workdir, mock, file_bytes)
        servers.append(server)
        started.append(server)
    for server in started:
        wait_until_listening(server)
    return started


def _floor_proxy(mode: str) -> Callable[[Path, Server, int], Server]:
    def start_proxy(workdir: Path, mock: Server, file_bytes: int) -> Server:
        port = free_port()
        command = [sys.executable, "-m", "bench.floor_proxy", "--upstream", f"127.0.0.1:{mock.port}", "--port", str(port)]
        process = subprocess.Popen([*command, *(["--splice"] if mode == "splice" else [])], cwd=REPO)
        return Server(f"floor-{mode}", f"http://127.0.0.1:{port}/v1", process, port, key=UPSTREAM_TOKEN)

    return start_proxy


def _uvicorn(app: str, name: str, env: dict[str, str]) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [str(RELAY_BIN / "uvicorn"), app, "--port", str(port), *RELAY_UVICORN_FLAGS],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
    )
    return Server(name, f"http://127.0.0.1:{port}/v1", process, port, key=UPSTREAM_TOKEN)


def _floor_uvicorn(workdir: Path, mock: Server, file_bytes: int) -> Server:
    return _uvicorn("bench.floor_uvicorn:app", "floor-uvicorn", {"FLOOR_UVICORN_BYTES": str(file_bytes)})


def _floor_asgi(workdir: Path, mock: Server, file_bytes: int) -> Server:
    return _uvicorn("bench.floor_asgi:app", "floor-asgi", {"FLOOR_ASGI_UPSTREAM": mock.url})


def _floor_starlette(workdir: Path, mock: Server, file_bytes: int) -> Server:
    return _uvicorn("bench.floor_asgi:starlette_app", "floor-starlette", {"FLOOR_ASGI_UPSTREAM": mock.url})


def _floor_nginx(workdir: Path, mock: Server, file_bytes: int) -> Server:
    nginx = start_balancer(workdir / "floor-nginx", [mock])
    return Server("floor-nginx", f"{nginx.url}/v1", nginx.process, nginx.port, key=UPSTREAM_TOKEN)


_STARTERS: dict[str, Callable[[Path, Server, int], Server]] = {
    "floor-copy": _floor_proxy("copy"),
    "floor-splice": _floor_proxy("splice"),
    "floor-uvicorn": _floor_uvicorn,
    "floor-nginx": _floor_nginx,
    "floor-asgi": _floor_asgi,
    "floor-starlette": _floor_starlette,
}
