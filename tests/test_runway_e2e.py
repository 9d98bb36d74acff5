"""Runway accounts end to end, as an operator and a client meet them: a real relay process, the
sandbox process emulating Runway's API (`/runway/v1`) and CDN (`/runway/cdn`), accounts added with
relayctl, and the official openai SDK as the only client of the relay."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any, Final

import httpx
import httpx2
import openai
import pytest
from conftest import RelayProcess, Sandbox
from test_providers_e2e import (
    OPENAI_STATUSES,
    PADDED_BYTES,
    PNG,
    POLL_INTERVAL_MS,
    SAMPLE,
    SdkTraffic,
    accounts_by_name,
    add_account,
    header_values,
    recorded_body,
)

pytestmark = pytest.mark.e2e

T2V: Final = "veo3.1"
I2V: Final = "gen4_turbo"
PNG_DATA_URL: Final = "data:image/png;base64," + base64.b64encode(PNG).decode("ascii")


def runway_key(name: str) -> str:
    return f"key_{name}_" + "0123456789abcdef" * 4


def add_runway_account(relay: RelayProcess, sandbox: Sandbox, name: str, *options: str) -> None:
    add_account(relay, name, "runway", f"{sandbox.url}/runway/v1", runway_key(name), *options)


def api_requests(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith("/runway/v1/")]


def creates(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in api_requests(sandbox) if r["method"] == "POST"]


@pytest.fixture
def traffic() -> SdkTraffic:
    return SdkTraffic()


@pytest.fixture
def make_sdk(traffic: SdkTraffic) -> Iterator[Any]:
    """The official SDK pointed at a relay, every request and status it saw kept in `traffic`."""
    opened: list[httpx2.Client] = []

    def make(relay: RelayProcess, key: str) -> openai.OpenAI:
        http = httpx2.Client(timeout=20, event_hooks={"request": [traffic.on_request], "response": [traffic.on_response]})
        opened.append(http)
        # No SDK retries: each outcome is the relay's own (its failover, its errors).
        return openai.OpenAI(base_url=f"{relay.url}/openai/v1", api_key=key, max_retries=0, http_client=http)

    yield make
    for http in opened:
        http.close()


def cooldown_of(relay: RelayProcess, name: str) -> dict[str, Any]:
    listed = relay.relayctl("cooldowns", "--json")
    assert listed.returncode == 0, listed.stderr
    return next(row for row in json.loads(listed.stdout) if row["account"] == name)  # type: ignore[no-any-return]


def test_create_and_poll_completes_and_downloads_the_bytes_runways_cdn_serves(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(
        model=T2V, prompt=f"A lighthouse in a storm [bytes={PADDED_BYTES}]", seconds="8", size="720x1280", poll_interval_ms=POLL_INTERVAL_MS
    )
    assert video.status == "completed" and video.error is None and video.progress == 100
    assert video.id.startswith("video_") and (video.model, video.size, video.seconds) == (T2V, "720x1280", "8")
    assert traffic.statuses and set(traffic.statuses) <= OPENAI_STATUSES and traffic.statuses[-1] == "completed"
    assert client.videos.retrieve(video.id).status == "completed"

    [created] = creates(sandbox)
    assert created["path"] == "/runway/v1/text_to_video"
    assert recorded_body(created) == {
        "model": T2V,
        "promptText": f"A lighthouse in a storm [bytes={PADDED_BYTES}]",
        "ratio": "720:1280",
        "duration": 8,
    }
    # Every call to Runway's API: the Bearer key and the API version, nothing of the client's.
    for record in api_requests(sandbox):
        assert header_values(record, "authorization") == [f"Bearer {runway_key('rw')}"], record
        assert header_values(record, "x-runway-version") == ["2024-11-06"], record

    downloaded = client.videos.download_content(video.id).read()
    [cdn] = [r for r in sandbox.requests() if r["path"].startswith("/runway/cdn/")]
    assert cdn["token"] is None and header_values(cdn, "x-runway-version") == []  # the key stayed with the API
    served = httpx.get(f"{sandbox.url}{cdn['path']}?{cdn['query']}")
    assert served.status_code == 200
    assert downloaded == served.content
    assert len(downloaded) == PADDED_BYTES and downloaded.startswith(SAMPLE)


def test_an_uploaded_image_goes_to_image_to_video_as_a_data_uri(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(
        model=I2V, prompt="Animate this picture", input_reference=("ref.png", PNG, "image/png"), poll_interval_ms=POLL_INTERVAL_MS
    )
    assert video.status == "completed" and (video.size, video.seconds) == ("1280x720", "5")
    [sent] = [r for r in traffic.requests if r.method == "POST"]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    [created] = creates(sandbox)
    assert created["path"] == "/runway/v1/image_to_video"
    assert recorded_body(created) == {
        "model": I2V,
        "promptImage": PNG_DATA_URL,
        "promptText": "Animate this picture",
        "ratio": "1280:720",
        "duration": 5,
    }


@pytest.mark.parametrize(
    ("reference", "prompt_image"),
    [
        ({"image_url": PNG_DATA_URL}, PNG_DATA_URL),
        (PNG_DATA_URL, PNG_DATA_URL),
        ("https://images.example.com/first-frame.png", "https://images.example.com/first-frame.png"),
    ],
)
def test_a_data_url_or_an_https_image_url_reaches_runway_as_prompt_image(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, reference: Any, prompt_image: str
) -> None:
    relay = relay_process()  # no RELAY_IMAGE_URL_HOSTS: Runway fetches URLs itself, the relay none
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create(model="gen4.5", prompt="The scene comes to life", extra_body={"input_reference": reference})
    assert video.status == "queued"
    [created] = creates(sandbox)
    assert created["path"] == "/runway/v1/image_to_video" and recorded_body(created)["promptImage"] == prompt_image


@pytest.mark.parametrize(("marker", "code"), [("[fail]", "INTERNAL.BAD_OUTPUT"), ("[moderated]", "SAFETY.INPUT.TEXT")])
def test_a_failed_task_ends_failed_with_runways_failure_code(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, marker: str, code: str
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(model=T2V, prompt=f"A storm at sea {marker}", poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "failed"
    assert video.error is not None and video.error.code == code and marker in video.error.message
    with pytest.raises(openai.ConflictError) as refused:
        client.videos.download_content(video.id)
    assert refused.value.code == "video_failed"
    assert accounts_by_name(relay)["rw"]["state"] == "active"  # the job failed, not the account


def test_a_429_fails_over_and_rests_the_account_for_the_default_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process(extra_env={"RELAY_DEFAULT_COOLDOWN_SECONDS": "77"})
    add_runway_account(relay, sandbox, "first", "--priority", "1")
    add_runway_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    # Runway's 429 names no time to wait: the relay's default cooldown applies.
    sandbox.fault(preset="rate_limited", provider="runway", token=runway_key("first"), times=1)

    video = client.videos.create_and_poll(model=T2V, prompt="A lighthouse in a storm", poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "completed"
    assert [r["token"] for r in creates(sandbox)] == [runway_key("first"), runway_key("second")]
    # The video lives on the account that made it: every later call went there.
    polls = [r for r in api_requests(sandbox) if r["method"] == "GET"]
    assert polls and {r["token"] for r in polls} == {runway_key("second")}
    accounts = accounts_by_name(relay)
    assert (accounts["first"]["state"], accounts["second"]["state"]) == ("rate_limited", "active")
    cooldown = cooldown_of(relay, "first")
    assert cooldown["reason"] == "upstream 429 (cooldown from default)"
    assert 60 < cooldown["seconds_left"] <= 77


def test_a_retry_after_on_a_429_sets_the_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "first", "--priority", "1")
    add_runway_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    # A gateway in front of Runway may add one; the relay trusts it.
    sandbox.fault(preset="rate_limited", provider="runway", token=runway_key("first"), times=1, headers={"retry-after": "42"})

    assert client.videos.create(model=T2V, prompt="A lighthouse").status == "queued"
    cooldown = cooldown_of(relay, "first")
    assert cooldown["reason"] == "upstream 429 (cooldown from retry_after)"
    assert 30 < cooldown["seconds_left"] <= 42


def test_a_lone_rate_limited_account_answers_the_openai_429(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="rate_limited", provider="runway", times=1)

    with pytest.raises(openai.RateLimitError) as limited:
        client.videos.create(model=T2V, prompt="A lighthouse")
    assert limited.value.code == "rate_limit_exceeded" and "Too many requests" in limited.value.message


@pytest.mark.parametrize(("preset", "reason"), [("unauthorized", "upstream 401"), ("payment_required", "upstream 402")])
def test_an_invalid_key_or_no_credits_takes_the_account_out_of_rotation_and_the_create_moves_on(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, preset: str, reason: str
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "first", "--priority", "1")
    add_runway_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset=preset, provider="runway", token=runway_key("first"), times=1)

    assert client.videos.create(model=T2V, prompt="A lighthouse").status == "queued"
    assert [r["token"] for r in creates(sandbox)] == [runway_key("first"), runway_key("second")]
    accounts = accounts_by_name(relay)
    assert (accounts["first"]["state"], accounts["second"]["state"]) == ("unauthorized", "active")
    assert cooldown_of(relay, "first")["reason"].startswith(reason)


def test_remix_and_character_creates_are_400s_naming_the_type_and_reach_nothing(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))
    video = client.videos.create_and_poll(model=T2V, prompt="A fox", poll_interval_ms=POLL_INTERVAL_MS)
    sandbox.reset()

    with pytest.raises(openai.BadRequestError) as remix:
        client.videos.remix(video.id, prompt="The same fox at dawn")
    assert remix.value.code == "unsupported_for_account_type"
    assert "Remix requests are not supported on runway accounts" in remix.value.message
    with pytest.raises(openai.BadRequestError) as character:
        client.videos.create_character(name="Fox", video=("fox.mp4", SAMPLE, "video/mp4"))
    assert character.value.code == "unsupported_for_account_type" and "runway" in character.value.message
    with pytest.raises(openai.BadRequestError) as thumbnail:
        client.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.value.code == "invalid_variant"
    assert api_requests(sandbox) == []


def test_a_size_the_model_cannot_render_is_a_400_and_nothing_is_sent(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))

    with pytest.raises(openai.BadRequestError) as refused:
        client.videos.create(model=T2V, prompt="A fox", size="1024x1792")
    assert refused.value.param == "size" and "1280x720" in refused.value.message
    assert api_requests(sandbox) == []
    assert accounts_by_name(relay)["rw"]["state"] == "active"


def test_delete_cancels_the_task_at_runway_and_forgets_the_video(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))
    video = client.videos.create(model=T2V, prompt="A fox")
    [created] = creates(sandbox)

    deleted = client.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id
    [sent] = [r for r in api_requests(sandbox) if r["method"] == "DELETE"]
    assert sent["path"].startswith("/runway/v1/tasks/") and sent["token"] == runway_key("rw")
    assert header_values(sent, "x-runway-version") == ["2024-11-06"]
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    # Runway cancelled it.
    task = httpx.get(
        f"{sandbox.url}{sent['path']}", headers={"Authorization": f"Bearer {runway_key('rw')}", "X-Runway-Version": "2024-11-06"}
    )
    assert task.json()["status"] == "CANCELLED" and created["path"] == "/runway/v1/text_to_video"
