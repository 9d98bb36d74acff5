"""The mock upstream: Debian's nginx with canned Videos API answers and a large file served with Range."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from .procs import Server, free_port, wait_until_listening

TEMPLATE = Path(__file__).parent / "mock" / "nginx.conf.template"
BALANCER_TEMPLATE = Path(__file__).parent / "mock" / "balancer.conf.template"
# What operators copy to put the relay behind nginx with downloads offloaded (relay.offload).
OFFLOAD_SITE = Path(__file__).resolve().parent.parent / "docs" / "nginx" / "relay-offload.conf"


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
    with open(root / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [nginx, "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")], stdout=subprocess.DEVNULL, stderr=stderr
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


def offload_site(relay_host_port: str, listen: str, secret: str) -> str:
    """The documented site configuration with its marked lines set: the relay, the listening
    address and the shared secret (everything else exactly as operators copy it)."""
    site = OFFLOAD_SITE.read_text()
    for documented, actual in (
        ("server 127.0.0.1:8080;", f"server {relay_host_port};"),
        ("listen 8000;", f"listen {listen};"),
        ("REPLACE_WITH_RELAY_OFFLOAD_SECRET", secret),
    ):
        if documented not in site:
            raise RuntimeError(f"{OFFLOAD_SITE} no longer has the line {documented!r} to set")
        site = site.replace(documented, actual)
    return site


def start_offload_front(workdir: Path, relay_host_port: str, secret: str) -> Server:
    """nginx in front of the relay with the documented offload configuration, on a free port."""
    nginx = nginx_binary()
    if nginx is None:
        raise RuntimeError("nginx is missing: `make bench-tools` installs Debian's nginx-light")
    root = workdir / "front"
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    (root / "site.conf").write_text(offload_site(relay_host_port, f"127.0.0.1:{port}", secret))
    temp_paths = "".join(f"    {kind}_temp_path {root / 'tmp' / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As Debian's nginx.conf has it: a worker per core, so concurrent downloads use every core.
    (root / "nginx.conf").write_text(
        f"daemon off;\nworker_processes auto;\npid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} warn;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{\n    access_log off;\n{temp_paths}    include {root / 'site.conf'};\n}}\n"
    )
    with open(root / "stderr.log", "wb") as stderr:
        process = subprocess.Popen([nginx, "-c", str(root / "nginx.conf")], stdout=subprocess.DEVNULL, stderr=stderr)
    server = Server("front", f"http://127.0.0.1:{port}", process, port)
    wait_until_listening(server)
    return server


def start_balancer(root: Path, backends: list[Server]) -> Server:
    """nginx in the foreground on a free loopback port, passing requests to `backends` in turn."""
    nginx = nginx_binary()
    if nginx is None:
        raise RuntimeError("nginx is missing: `make bench-tools` installs Debian's nginx-light and wrk")
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    upstreams = "\n".join(f"        server 127.0.0.1:{backend.port};" for backend in backends)
    config = BALANCER_TEMPLATE.read_text().replace("@ROOT@", str(root)).replace("@PORT@", str(port)).replace("@UPSTREAMS@", upstreams)
    (root / "nginx.conf").write_text(config)
    with open(root / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [nginx, "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")], stdout=subprocess.DEVNULL, stderr=stderr
        )
    server = Server("balancer", f"http://127.0.0.1:{port}", process, port)
    try:
        wait_until_listening(server)
    except RuntimeError as error:
        said = "".join(path.read_text(errors="replace") for path in (root / "stderr.log", root / "error.log") if path.exists())
        raise RuntimeError(f"{error}; nginx said: {said.strip() or 'nothing'}") from None
    return server
