"""Video downloads through the relay against the same downloads straight from the mock upstream.

What the relay promises for `GET /videos/{id}/content` (relay/videos.py): constant memory, the
client's pace, and the upstream connection released when the client goes away. This module measures
each promise with one client used for both paths, so any difference is the relay's:

1. one large download: throughput direct vs relayed, and the relay's memory growth meanwhile;
2. eight concurrent ranged downloads: aggregate throughput and memory growth;
3. a slow reader: memory stays flat and the bytes arrive at the reader's pace;
4. a client that hangs up mid-stream: memory returns and nginx stops writing (upstream released).

The first two also run through bench/floor_proxy.py (a proxy that does nothing but pass the bytes,
copying or splicing), which shows what share of the direct rate any proxy keeps on this machine,
and from bench/floor_uvicorn.py (uvicorn answering from memory), which shows what the relay's
response path alone could pass on (bench/floors.py starts them).

Run with `python -m bench.streaming`: nginx with a 1 GiB file, a one-worker relay, JSON on stdout.
"""

from __future__ import annotations

import functools
import json
import socket
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import floors
from .mock import start_nginx, start_offload_front, writing_connections
from .procs import Server, cpu_seconds, rss_bytes, workspace
from .report import RSS_GROWTH_MIB as RSS_GROWTH_LIMIT_MIB
from .targets import OFFLOAD_SECRET, create_video, prepare_relay_database, start_relay

MIB = 1024 * 1024
MB = 1_000_000
BUFFER_BYTES = MIB
SLOW_READER_RCVBUF = 64 * 1024
SLOW_READ_CHUNK = 16 * 1024
HEADER_LIMIT = 64 * 1024
RSS_INTERVAL = 0.5
RSS_SETTLE = 1.0
CONCURRENT = 8
SLOW_RATE = 1 * MB
SLOW_SECONDS = 6.0
DISCONNECT_AFTER = 64 * MIB
RELEASE_TIMEOUT = 5.0
WARM_UP_BYTES = 64 * MIB


# --- the download client -------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """One GET as the client saw it: body bytes counted, wall time from connect to last byte."""

    status: int
    body_bytes: int
    seconds: float
    content_length: int | None
    disconnected_early: bool

    @property
    def mb_per_second(self) -> float:
        return self.body_bytes / MB / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.content_length is not None and self.body_bytes == self.content_length

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "body_bytes": self.body_bytes,
            "seconds": round(self.seconds, 4),
            "mb_per_second": round(self.mb_per_second, 1),
            "complete": self.complete,
            "disconnected_early": self.disconnected_early,
        }


def download(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    rate_limit_bytes_per_second: float | None = None,
    stop_after_bytes: int | None = None,
    timeout: float = 120.0,
) -> Download:
    """GET `url` over a raw socket, the same code for direct and relayed downloads.

    A raw socket reading into one reusable 1 MiB buffer keeps the client far faster than either
    server (about 1.5 GB/s against nginx here), so throughput measures the server, not the client.
    A slow reader gets a small receive buffer so TCP backpressure reaches the server quickly instead
    of the kernel soaking up megabytes; `stop_after_bytes` hangs up abruptly, as a browser tab does.
    """
    parts = urlsplit(url)
    slow = rate_limit_bytes_per_second is not None
    started = time.perf_counter()
    sock = _connect(parts.hostname or "127.0.0.1", parts.port or 80, timeout, small_buffer=slow)
    try:
        sock.sendall(_request(parts.netloc, parts.path + (f"?{parts.query}" if parts.query else ""), headers or {}))
        buffer = memoryview(bytearray(BUFFER_BYTES))
        status, response_headers, body_bytes = _read_head(sock, buffer)
        content_length = _content_length(response_headers)
        read_size = SLOW_READ_CHUNK if slow else BUFFER_BYTES
        while stop_after_bytes is None or body_bytes < stop_after_bytes:
            if slow:
                _keep_pace(started, body_bytes, rate_limit_bytes_per_second or 0.0)
            received = sock.recv_into(buffer, read_size)
            if received == 0:
                break
            body_bytes += received
        early = stop_after_bytes is not None and body_bytes >= stop_after_bytes
        if early:
            _hang_up(sock)
        return Download(status, body_bytes, time.perf_counter() - started, content_length, early)
    finally:
        sock.close()


def _connect(host: str, port: int, timeout: float, *, small_buffer: bool) -> socket.socket:
    """SO_RCVBUF must be set before connect: it decides the window scale the client offers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if small_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READER_RCVBUF)
    sock.connect((host, port))
    return sock


def _request(host: str, target: str, headers: dict[str, str]) -> bytes:
    """`Connection: close`, so the end of the body is the end of the stream on both paths."""
    lines = [f"GET {target or '/'} HTTP/1.1", f"Host: {host}", "Connection: close", "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_head(sock: socket.socket, buffer: memoryview) -> tuple[int, dict[str, str], int]:
    """Status and headers; returns how many body bytes arrived in the same reads."""
    head = bytearray()
    while b"\r\n\r\n" not in head:
        if len(head) > HEADER_LIMIT:
            raise ValueError("response headers larger than 64 KiB")
        received = sock.recv_into(buffer)
        if received == 0:
            raise ConnectionError("connection closed before the response headers ended")
        head += buffer[:received]
    end = head.index(b"\r\n\r\n")
    status, headers = _parse_head(bytes(head[:end]))
    return status, headers, len(head) - end - 4


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _content_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def _keep_pace(started: float, body_bytes: int, rate: float) -> None:
    """Sleep until the bytes read so far are due at `rate`: an average pace, not a burst limit."""
    due = started + body_bytes / rate
    wait = due - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


def _hang_up(sock: socket.socket) -> None:
    """Linger 0 makes close send RST, the abrupt end a server sees when a client dies."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


# --- memory while something runs ------------------------------------------------------------------


@dataclass
class RssSamples:
    """Resident memory of a process tree before, during (every 0.5 s) and ~1 s after a block."""

    baseline: int = 0
    end: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max([self.baseline, *(rss for _, rss in self.samples)])

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline_mib": _mib(self.baseline),
            "peak_mib": _mib(self.peak),
            "end_mib": _mib(self.end),
            "growth_mib": _mib(self.growth),
            "end_minus_baseline_mib": _mib(self.end - self.baseline),
            "samples": [[round(at, 2), _mib(rss)] for at, rss in self.samples],
        }


@contextmanager
def sampled_rss(pid: int, *, interval: float = RSS_INTERVAL, settle: float = RSS_SETTLE) -> Iterator[RssSamples]:
    """Sample on a thread so a blocking download in the block does not stop the sampling."""
    result = RssSamples(baseline=rss_bytes(pid))
    done = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        while True:
            result.samples.append((time.perf_counter() - started, rss_bytes(pid)))
            if done.wait(interval):
                return

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        time.sleep(settle)
        result.end = rss_bytes(pid)


def _mib(value: float) -> float:
    return round(value / MIB, 2)


# --- the four measurements ------------------------------------------------------------------------


def content_urls(mock: Server, relay: Server, video_id: str) -> tuple[str, str]:
    """The same file by both paths: nginx serves any id, the relay only ids in its records."""
    return f"{mock.url}/v1/videos/{video_id}/content", f"{relay.url}/videos/{video_id}/content"


def warm_up(direct_url: str, relay_url: str, relay: Server) -> None:
    """Round one would otherwise pay for cold caches: the first read of the sparse file fills the
    page cache with 1 GiB of zero pages (measured ~400 MB/s then, ~1.5 GB/s after), so the whole
    file once directly; the relay only needs its upstream pool and code paths warm."""
    download(direct_url)
    download(relay_url, headers={**_auth(relay), "Range": f"bytes=0-{WARM_UP_BYTES - 1}"})


def single_downloads(direct_url: str, relay_url: str, relay: Server, *, rounds: int) -> dict[str, Any]:
    """Alternating direct and relayed rounds, so drift (page cache, CPU clocks) hits both alike."""
    auth = _auth(relay)
    direct_runs: list[Download] = []
    relay_runs: list[Download] = []
    memory: list[RssSamples] = []
    relay_cpu: list[float] = []
    for _ in range(rounds):
        direct_runs.append(download(direct_url))
        cpu_before = cpu_seconds(relay.process.pid)
        with sampled_rss(relay.process.pid) as rss:
            relay_runs.append(download(relay_url, headers=auth))
            relay_cpu.append(cpu_seconds(relay.process.pid) - cpu_before)
        memory.append(rss)
    return _comparison(
        [run.mb_per_second for run in direct_runs],
        [run.mb_per_second for run in relay_runs],
        memory,
        # CPU seconds over wall seconds near 1.0 means the one worker is the bottleneck.
        relay_cpu_share=[round(cpu / run.seconds, 2) for cpu, run in zip(relay_cpu, relay_runs, strict=True)],
        direct_runs=[run.as_dict() for run in direct_runs],
        relay_runs=[run.as_dict() for run in relay_runs],
    )


def concurrent_downloads(
    direct_url: str, relay_url: str, relay: Server, *, rounds: int, file_bytes: int, clients: int = CONCURRENT
) -> dict[str, Any]:
    """Each client takes its own 1/`clients` slice by Range, so a round moves the file once per path."""
    auth = _auth(relay)
    slices = range_slices(file_bytes, clients)
    direct_rates: list[float] = []
    relay_rates: list[float] = []
    memory: list[RssSamples] = []
    failures: list[dict[str, Any]] = []
    for _ in range(rounds):
        rate, bad = parallel_downloads(direct_url, {}, slices)
        direct_rates.append(rate)
        failures += bad
        with sampled_rss(relay.process.pid) as rss:
            rate, bad = parallel_downloads(relay_url, auth, slices)
        relay_rates.append(rate)
        memory.append(rss)
        failures += bad
    return {
        "clients": clients,
        "bytes_per_client": slices[0][1] - slices[0][0] + 1,
        **_comparison(direct_rates, relay_rates, memory),
        "failures": failures,
    }


def range_slices(file_bytes: int, clients: int) -> list[tuple[int, int]]:
    size = file_bytes // clients
    return [(index * size, (index + 1) * size - 1) for index in range(clients)]


def parallel_downloads(url: str, headers: dict[str, str], slices: list[tuple[int, int]]) -> tuple[float, list[dict[str, Any]]]:
    """Aggregate MB/s from first connect to last byte; returns also any download that went wrong."""
    results: list[Download | None] = [None] * len(slices)

    def fetch(index: int) -> None:
        first, last = slices[index]
        results[index] = download(url, headers={**headers, "Range": f"bytes={first}-{last}"})

    started = time.perf_counter()
    _run_threads([functools.partial(fetch, index) for index in range(len(slices))])
    seconds = time.perf_counter() - started
    done = [result for result in results if result is not None]
    failures = [result.as_dict() for result in done if result.status != 206 or not result.complete]
    failures += [{"error": "no result"}] * (len(slices) - len(done))
    return sum(result.body_bytes for result in done) / MB / seconds, failures


def _run_threads(targets: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def slow_reader(relay_url: str, relay: Server, mock: Server) -> dict[str, Any]:
    """A reader at 1 MB/s for ~6 s: the relay should hold a few chunks, not buffer the file."""
    with sampled_rss(relay.process.pid) as rss:
        run = download(
            relay_url,
            headers=_auth(relay),
            rate_limit_bytes_per_second=SLOW_RATE,
            stop_after_bytes=int(SLOW_RATE * SLOW_SECONDS),
        )
    release = wait_for_release(mock)
    return {
        "target_mb_per_second": SLOW_RATE / MB,
        "download": run.as_dict(),
        "paced_within_10_percent": abs(run.mb_per_second - SLOW_RATE / MB) <= 0.1 * SLOW_RATE / MB,
        "rss": rss.as_dict(),
        "flat": rss.growth <= RSS_GROWTH_LIMIT_MIB * MIB,
        "upstream_release_after_hang_up": release,
    }


def disconnecting_client(relay_url: str, relay: Server, mock: Server) -> dict[str, Any]:
    """A client gone after 64 MiB: memory should come back and nginx should stop writing."""
    before = rss_bytes(relay.process.pid)
    run = download(relay_url, headers=_auth(relay), stop_after_bytes=DISCONNECT_AFTER)
    release = wait_for_release(mock)
    time.sleep(RSS_SETTLE)
    after = rss_bytes(relay.process.pid)
    return {
        "download": run.as_dict(),
        "rss_before_mib": _mib(before),
        "rss_after_mib": _mib(after),
        "rss_change_mib": _mib(after - before),
        "upstream_release": release,
    }


def wait_for_release(mock: Server, timeout: float = RELEASE_TIMEOUT) -> dict[str, Any]:
    """Poll nginx until it writes no answer: the relay closed its upstream connection."""
    started = time.perf_counter()
    writing = writing_connections(mock)
    while writing > 0 and time.perf_counter() - started < timeout:
        time.sleep(0.05)
        writing = writing_connections(mock)
    return {"released": writing == 0, "seconds": round(time.perf_counter() - started, 3), "writing_connections": writing}


def _comparison(direct_rates: list[float], relay_rates: list[float], memory: list[RssSamples], **extra: Any) -> dict[str, Any]:
    direct = statistics.median(direct_rates)
    relayed = statistics.median(relay_rates)
    growth = [rss.growth for rss in memory]
    return {
        "direct_mb_per_second": round(direct, 1),
        "relay_mb_per_second": round(relayed, 1),
        "ratio_relay_to_direct": round(relayed / direct, 3) if direct else None,
        "direct_rounds_mb_per_second": [round(rate, 1) for rate in direct_rates],
        "relay_rounds_mb_per_second": [round(rate, 1) for rate in relay_rates],
        "relay_rss_growth_mib": _mib(statistics.median(growth)),
        "relay_rss_growth_max_mib": _mib(max(growth)),
        # Peak-over-baseline per round misses memory kept from round to round; this catches it.
        "relay_rss_retained_mib": _mib(memory[-1].end - memory[0].baseline),
        "relay_rss": [rss.as_dict() for rss in memory],
        **extra,
    }


def offload_front(workdir: Path, relay: Server, servers: list[Server]) -> Server:
    """nginx in front of `relay` with downloads offloaded (added to `servers`, to be stopped), as a
    Server whose url and key reach the relay's API through it, and whose process is the relay's
    (the memory and CPU samples read the relay)."""
    nginx = start_offload_front(workdir, f"127.0.0.1:{relay.port}", OFFLOAD_SECRET)
    servers.append(nginx)
    return Server("offloaded", f"{nginx.url}/openai/v1", relay.process, nginx.port, key=relay.key)


def _auth(relay: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {relay.key}"}


def file_size(url: str) -> int:
    """The file's size as nginx reports it, so the caller need not pass it along."""
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.headers["Content-Length"])


def run_streaming(mock: Server, relay: Server, video_id: str, *, rounds: int, proxies: Sequence[Server] = ()) -> dict[str, Any]:
    """All four measurements, in an order where each starts with nginx writing nothing; then the
    first two again through each of `proxies`, under its name: nginx in front of the relay with
    downloads offloaded (offload_front), the proxies that only pass bytes (bench/floors.py), the
    relay with more workers (one worker is one core, which 8 downloads at once keep busy)."""
    started = time.perf_counter()
    direct_url, relay_url = content_urls(mock, relay, video_id)
    file_bytes = file_size(direct_url)
    result: dict[str, Any] = {
        "file_bytes": file_bytes,
        "rounds": rounds,
        "rss_growth_limit_mib": RSS_GROWTH_LIMIT_MIB,
        "relay_rss_start_mib": _mib(rss_bytes(relay.process.pid)),
    }
    warm_up(direct_url, relay_url, relay)
    result["single"] = single_downloads(direct_url, relay_url, relay, rounds=rounds)
    result["concurrent"] = concurrent_downloads(direct_url, relay_url, relay, rounds=rounds, file_bytes=file_bytes)
    for proxy in proxies:
        _, proxy_url = content_urls(mock, proxy, video_id)
        result[proxy.name] = {
            "single": single_downloads(direct_url, proxy_url, proxy, rounds=rounds),
            "concurrent": concurrent_downloads(direct_url, proxy_url, proxy, rounds=rounds, file_bytes=file_bytes),
        }
    result["slow_reader"] = slow_reader(relay_url, relay, mock)
    result["disconnect"] = disconnecting_client(relay_url, relay, mock)
    result["relay_rss_end_mib"] = _mib(rss_bytes(relay.process.pid))
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


# --- python -m bench.streaming --------------------------------------------------------------------


def main() -> None:
    with workspace("bench-streaming-") as (workdir, servers):
        file_bytes = 1024 * MIB
        mock = start_nginx(workdir, file_bytes=file_bytes)
        servers.append(mock)
        env, key = prepare_relay_database(workdir, f"{mock.url}/v1")
        relay = start_relay(workdir, env, key, workers=1)
        servers.append(relay)
        floored = floors.start(floors.FOR_DOWNLOADS, workdir, mock, servers, file_bytes=file_bytes)
        proxies = [offload_front(workdir, relay, servers), *floored]
        result = run_streaming(mock, relay, create_video(relay), rounds=3, proxies=proxies)
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
