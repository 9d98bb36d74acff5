"""Downloads through a relay process: constant memory, backpressure, upstream released on disconnect.

Sizes and rates are bounded (a few hundred MB on loopback); assertions are about memory and
connections, never wall-clock speed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from conftest import RelayProcess, Sandbox
from test_e2e import eventually, operator_setup

pytestmark = pytest.mark.e2e

BIG = 300 * 1024 * 1024
MiB = 1024 * 1024


def big_video(relay: RelayProcess, sandbox: Sandbox, key: str, size: int = BIG) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    video = httpx.post(f"{relay.url}/openai/v1/videos", json={"prompt": f"a long take [bytes={size}]"}, headers=headers).json()
    eventually(
        lambda: httpx.get(f"{relay.url}/openai/v1/videos/{video['id']}", headers=headers).json()["status"] == "completed",
        within=10,
    )
    return f"{relay.url}/openai/v1/videos/{video['id']}/content"


class RssSampler:
    """Samples the relay's resident memory every 0.05 s while a download runs."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay
        self.baseline = relay.rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.relay.rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def test_large_download_streams_in_constant_memory(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = operator_setup(relay, sandbox, "main")
    url = big_video(relay, sandbox, key)
    headers = {"Authorization": f"Bearer {key}"}
    # Warm up code paths and buffers once, so the measurement sees steady state.
    httpx.get(url, headers={**headers, "Range": "bytes=0-1048575"})
    received = 0
    with RssSampler(relay) as rss, httpx.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == BIG
        for chunk in response.iter_raw(1024 * 1024):
            received += len(chunk)
    assert received == BIG
    assert rss.growth < 32 * MiB, f"relay RSS grew by {rss.growth / MiB:.1f} MiB for a {BIG // MiB} MiB download"


def test_slow_reader_gets_backpressure_not_buffering(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = operator_setup(relay, sandbox, "main")
    url = big_video(relay, sandbox, key)
    with RssSampler(relay) as rss, httpx.stream("GET", url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as response:
        received = 0
        started = time.monotonic()
        for chunk in response.iter_raw(64 * 1024):
            received += len(chunk)
            time.sleep(0.01)  # about 6 MB/s against an upstream that could send ~100x faster
            if time.monotonic() - started > 2.0:
                break
    assert received < BIG / 4
    # Without backpressure the relay would have pulled most of the 300 MB into memory by now.
    assert rss.growth < 32 * MiB, f"relay RSS grew by {rss.growth / MiB:.1f} MiB under a slow reader"


def sandbox_stat(sandbox: Sandbox, name: str) -> int:
    return int(httpx.get(f"{sandbox.url}/_sandbox/stats").json()[name])


def test_client_disconnect_releases_the_upstream(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = operator_setup(relay, sandbox, "main")
    url = big_video(relay, sandbox, key)

    def open_streams() -> int:
        return sandbox_stat(sandbox, "open_streams")

    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as response:
        iterator = response.iter_raw(64 * 1024)
        for _ in range(10):
            next(iterator)
        assert open_streams() == 1
    # The client hung up mid-body; the relay must drop its upstream stream too.
    eventually(lambda: open_streams() == 0, within=5)
    # And the relay still serves.
    assert httpx.get(f"{relay.url}/healthz").status_code == 200


def test_head_on_a_download_answers_the_head_and_drops_the_body(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = operator_setup(relay, sandbox, "main")
    url = big_video(relay, sandbox, key)

    def content_bytes_sent() -> int:
        return sandbox_stat(sandbox, "content_bytes_total")

    before = content_bytes_sent()
    with httpx.Client() as client:  # the connection stays open: nothing but the relay ends the upstream stream
        head = client.head(url, headers={"Authorization": f"Bearer {key}"})
        time.sleep(0.5)
        sent = content_bytes_sent() - before
    assert head.status_code == 200 and int(head.headers["content-length"]) == BIG and head.content == b""
    # The upstream stream was closed at once, not read to its end into nowhere, and the attempt recorded.
    eventually(lambda: sandbox_stat(sandbox, "open_streams") == 0)
    assert sent < BIG // 4
    metrics = httpx.get(f"{relay.url}/metrics").text
    assert 'error_class="none",route="videos.content",status_class="2xx"} 1.0' in metrics
    ranged = httpx.get(url, headers={"Authorization": f"Bearer {key}", "Range": "bytes=0-9"})
    assert ranged.status_code == 206 and len(ranged.content) == 10
