"""The mock upstream: Debian's nginx with canned Videos API answers and a large file served with Range."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from .procs import Server, free_port, wait_until_listening

TEMPLATE = Path(__file__).parent / "mock" / "nginx.conf.template"


def nginx_binary() -> str | None:
    """Debian puts nginx in /usr/sbin, which a non-root PATH often leaves out."""
    return shutil.which("nginx", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")


def start_nginx(workdir: Path, *, file_bytes: int) -> Server:
    """nginx in the foreground on a free loopback port, serving a sparse file of `file_bytes`."""
    nginx = nginx_binary()
    if nginx is None:
        raise RuntimeError("nginx is missing: `make bench-tools` installs Debian's nginx-light and wrk")
    root = workdir / "nginx"
    for sub in ("tmp", "files"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with open(root / "files" / "video.bin", "wb") as video:
        video.truncate(file_bytes)
    port = free_port()
    config = TEMPLATE.read_text().replace("@ROOT@", str(root)).replace("@PORT@", str(port))
    (root / "nginx.conf").write_text(config)
    process = subprocess.Popen(
        [nginx, "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "stderr.log", "wb"),
    )
    server = Server("nginx", f"http://127.0.0.1:{port}", process, port)
    wait_until_listening(server)
    return server


def writing_connections(mock: Server) -> int:
    """Connections nginx is writing an answer on, not counting the status request itself."""
    with urllib.request.urlopen(f"{mock.url}/nginx_status", timeout=5) as answer:
        text = answer.read().decode()
    # "Reading: 0 Writing: 1 Waiting: 3"
    words = text.split()
    return int(words[words.index("Writing:") + 1]) - 1
