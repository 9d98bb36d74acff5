"""Downloads streamed by a front nginx (relay.offload), with the configuration operators copy
(docs/nginx/relay-offload.conf): real nginx, relay and sandbox processes on 127.0.0.1, the
official SDK as the client."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import RelayProcess, Sandbox

from bench.mock import nginx_binary, start_offload_front
from bench.procs import stop as stop_server

pytestmark = pytest.mark.e2e

PADDED: int = 3 * 1024 * 1024 + 17  # a length no other video has: the bytes came from this one


def front_nginx(tmp_path: Path, relay_url: str, secret: str) -> Iterator[str]:
    """nginx with the documented configuration, its marked lines set for this test."""
    if nginx_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing (make test installs Debian's nginx-light)")
        pytest.skip("nginx is missing (make test installs Debian's nginx-light)")
    front = start_offload_front(tmp_path, relay_url.removeprefix("http://"), secret)
    try:
        yield front.url
    finally:
        stop_server(front)


@pytest.fixture
def offloading(relay_process: Any, sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[RelayProcess, str, str, str]]:
    secret = secrets.token_hex(32)
    relay: RelayProcess = relay_process(extra_env={"RELAY_OFFLOAD_SECRET": secret})
    relay.add_accounts(sandbox, "main")
    key = relay.issue_key("alice")
    for front in front_nginx(tmp_path, relay.url, secret):
        yield relay, front, key, secret


def made_video(base_url: str, key: str) -> tuple[openai.OpenAI, str]:
    client = openai.OpenAI(base_url=f"{base_url}/openai/v1", api_key=key, max_retries=0)
    video = client.videos.create_and_poll(model="sora-2", prompt=f"a lighthouse [bytes={PADDED}]", poll_interval_ms=100)
    assert video.status == "completed"
    return client, video.id


def test_nginx_streams_the_download_the_relay_hands_it(offloading: tuple[RelayProcess, str, str, str], sandbox: Sandbox) -> None:
    relay, front, key, _ = offloading
    client, video_id = made_video(front, key)
    streamed_by_relay = httpx.get(f"{relay.url}/openai/v1/videos/{video_id}/content", headers={"Authorization": f"Bearer {key}"})
    assert streamed_by_relay.status_code == 200 and len(streamed_by_relay.content) == PADDED

    sandbox.reset()
    offloaded = client.videos.download_content(video_id)
    assert offloaded.content == streamed_by_relay.content  # byte for byte what the relay itself streams
    assert "x-relay-upstream-url" not in offloaded.response.headers
    assert not any(name.startswith("x-relay-upstream") for name in offloaded.response.headers)
    # The upstream saw the account's credential, not the client's relay key.
    (seen,) = [r for r in sandbox.requests() if r["path"].endswith("/content")]
    assert seen["token"] == "tok-main"
    # nginx made that request, with only the headers the configuration names: the relay would
    # have passed on the SDK's User-Agent.
    sent = {name for name, _ in seen["headers"]}
    assert "user-agent" not in sent and "x-relay-offload" not in sent and "cookie" not in sent
    assert streamed_by_relay.request.headers["user-agent"]  # (the relay's own stream had one)

    ranged = httpx.get(f"{front}/openai/v1/videos/{video_id}/content", headers={"Authorization": f"Bearer {key}", "Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == streamed_by_relay.content[100:200]
    assert ranged.headers["content-range"] == f"bytes 100-199/{PADDED}"

    # Not the key's video: the relay answers (404), nothing is handed over.
    other = httpx.get(f"{front}/openai/v1/videos/video_not_mine/content", headers={"Authorization": f"Bearer {key}"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "video_not_found"
    time.sleep(0.3)  # the relay's access log is written in batches
    assert "route=videos.content status=200 key=alice account=main" in relay.log()


def test_nginx_obeys_no_offload_header_the_upstream_sends(offloading: tuple[RelayProcess, str, str, str], sandbox: Sandbox) -> None:
    relay, front, key, _ = offloading
    client, video_id = made_video(front, key)
    expected = client.videos.download_content(video_id).content
    # An upstream (or something between) answering the download with nginx's own control
    # headers: obeyed, they would redirect nginx to fetch a URL of the upstream's choosing.
    sandbox.fault(
        path_contains="/content",
        times=5,
        headers={
            "X-Accel-Redirect": "/_relay_offload",
            "X-Relay-Upstream-URL": f"{sandbox.url}/_sandbox/requests",
            "X-Accel-Buffering": "yes",
        },
    )
    offloaded = client.videos.download_content(video_id)
    assert offloaded.content == expected  # not what the named URL would have answered


def test_the_relay_hands_nginx_the_upstream_request_only_with_the_secret(offloading: tuple[RelayProcess, str, str, str]) -> None:
    relay, front, key, secret = offloading
    _, video_id = made_video(front, key)
    handed = httpx.get(
        f"{relay.url}/openai/v1/videos/{video_id}/content?variant=video",
        headers={"Authorization": f"Bearer {key}", "X-Relay-Offload": secret},
    )
    assert handed.status_code == 200 and handed.content == b""
    assert handed.headers["x-accel-redirect"] == "/_relay_offload"
    assert handed.headers["x-relay-upstream-url"].endswith(f"/v1/videos/{video_id}/content?variant=video")
    assert handed.headers["x-relay-upstream-authorization"] == "Bearer tok-main"


def test_without_the_secret_no_credential_leaves_the_relay(offloading: tuple[RelayProcess, str, str, str]) -> None:
    relay, front, key, secret = offloading
    _, video_id = made_video(front, key)
    url = f"{relay.url}/openai/v1/videos/{video_id}/content"
    for guessed in (None, "x" * 64, secret[:-1] + ("0" if secret[-1] != "0" else "1")):
        headers = {"Authorization": f"Bearer {key}", **({"X-Relay-Offload": guessed} if guessed else {})}
        answer = httpx.get(url, headers=headers)
        assert answer.status_code == 200 and len(answer.content) == PADDED  # streamed by the relay itself
        assert "tok-main" not in str(answer.headers) and "x-accel-redirect" not in answer.headers
    # A client that sends a header of its own through nginx does not change what nginx sends.
    through_front = httpx.get(
        f"{front}/openai/v1/videos/{video_id}/content", headers={"Authorization": f"Bearer {key}", "X-Relay-Offload": "x" * 64}
    )
    assert through_front.status_code == 200 and len(through_front.content) == PADDED
    assert "tok-main" not in str(through_front.headers)


def test_a_guessable_secret_or_odd_location_stops_the_start() -> None:
    from relay.config import ConfigError, load_settings

    base = {"RELAY_DATABASE": "relay.db"}
    for bad in ({"RELAY_OFFLOAD_SECRET": "short"}, {"RELAY_OFFLOAD_SECRET": "a b" * 20}, {"RELAY_OFFLOAD_LOCATION": "relay offload"}):
        with pytest.raises(ConfigError):
            load_settings({**base, **bad})
    settings = load_settings({**base, "RELAY_OFFLOAD_SECRET": "f" * 64})
    assert settings.offload_secret == "f" * 64 and settings.offload_location == "/_relay_offload"
    assert load_settings(base).offload_secret is None
