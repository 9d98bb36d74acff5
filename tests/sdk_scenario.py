"""The video lifecycle as a user writes it with the official openai SDK, pointed at the relay.

Run by tests/test_sdk.py under each SDK version the project supports (a 2.x before 2.27, which
creates with JSON, and the newest, which creates with multipart):

    python tests/sdk_scenario.py RELAY_URL KEY OTHER_KEY SANDBOX_URL

It prints one JSON object with what it saw; any failed expectation raises.
"""

from __future__ import annotations

import json
import sys

import httpx
import openai


def main(relay_url: str, key: str, other_key: str, sandbox_url: str) -> None:
    client = openai.OpenAI(base_url=f"{relay_url}/openai/v1", api_key=key, max_retries=0, timeout=30)
    seen: dict[str, object] = {"sdk": openai.__version__}

    video = client.videos.create_and_poll(prompt="A calico cat playing a piano on stage", model="sora-2", seconds="4", size="720x1280")
    assert video.status == "completed", video
    seen["created"] = video.id

    content = client.videos.download_content(video.id)
    seen["content_bytes"] = len(content.read())
    thumbnail = client.videos.download_content(video.id, variant="thumbnail")
    seen["thumbnail_bytes"] = len(thumbnail.read())

    remix = client.videos.remix(video.id, prompt="The same cat, now at night")
    assert remix.remixed_from_video_id == video.id, remix
    seen["remix"] = remix.id

    more = [client.videos.create(prompt=f"scene {i}").id for i in range(3)]
    listed = [item.id for item in client.videos.list(limit=2)]
    expected = {video.id, remix.id, *more}
    assert set(listed) == expected and len(listed) == len(expected), (listed, expected)
    first_page = client.videos.list(limit=2)
    assert first_page.has_more and len(first_page.data) == 2
    seen["listed"] = len(listed)

    deleted = client.videos.delete(more[0])
    assert deleted.deleted and deleted.id == more[0]

    stranger = openai.OpenAI(base_url=f"{relay_url}/openai/v1", api_key=other_key, max_retries=0)
    try:
        stranger.videos.retrieve(video.id)
    except openai.NotFoundError:
        seen["other_key"] = "not_found"
    else:
        raise AssertionError("another key could read this key's video")

    # OTHER_KEY has a $0.50 daily budget: an 8-second sora-2 video ($0.80) is refused by the
    # relay itself, and `x-should-retry: false` stops the SDK from retrying for hours.
    capped = openai.OpenAI(base_url=f"{relay_url}/openai/v1", api_key=other_key, max_retries=2, timeout=30)
    try:
        capped.videos.create(prompt="too dear", model="sora-2", seconds="8", size="720x1280")
    except openai.RateLimitError as error:
        seen["budget"] = error.code
    else:
        raise AssertionError("expected the relay to refuse a create over budget")

    # The upstream resets the connection after receiving a create: it may be rendering. The relay
    # says so with `x-should-retry: false`, so a retrying SDK does not send the create again.
    def creates_received() -> int:
        received = httpx.get(f"{sandbox_url}/_sandbox/requests").json()
        return sum(1 for r in received if r["method"] == "POST" and r["path"].endswith("/videos"))

    before = creates_received()
    httpx.post(f"{sandbox_url}/_sandbox/faults", json={"action": "reset", "method": "POST", "times": 3}).raise_for_status()
    retrying = openai.OpenAI(base_url=f"{relay_url}/openai/v1", api_key=key, max_retries=2, timeout=30)
    try:
        retrying.videos.create(prompt="lost in transit")
    except openai.APIStatusError as error:
        seen["outcome_unknown"] = [error.status_code, creates_received() - before]
    else:
        raise AssertionError("expected a 502")
    httpx.delete(f"{sandbox_url}/_sandbox/faults").raise_for_status()

    httpx.post(f"{sandbox_url}/_sandbox/faults", json={"preset": "rate_limited", "resets_in_seconds": 30, "times": 1}).raise_for_status()
    try:
        client.videos.create(prompt="one too many")
    except openai.RateLimitError as error:
        seen["rate_limited"] = error.status_code
    else:
        raise AssertionError("expected a RateLimitError")

    bad = openai.OpenAI(base_url=f"{relay_url}/openai/v1", api_key="rk-0123456789abcdef-wrong", max_retries=0)
    try:
        bad.videos.retrieve(video.id)
    except openai.AuthenticationError as error:
        seen["bad_key"] = error.status_code
    else:
        raise AssertionError("expected an AuthenticationError")

    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:5])
