"""Runway accounts end to end, as an operator and a client meet them: a real relay process, the
sandbox process emulating Runway's API (`/runway/v1`) and CDN (`/runway/cdn`), accounts added with
relayctl, and the official openai SDK as the only client of the relay."""

from __future__ import annotations

from typing import Any, Final

import httpx
import openai
import provider_scenarios as scenario
import pytest
from conftest import RelayProcess, Sandbox
from provider_scenarios import SdkTraffic, make_sdk, traffic

pytestmark = pytest.mark.e2e
__all__ = ["make_sdk", "traffic"]  # the SDK-as-client fixtures, for pytest

T2V: Final = "veo3.1"
I2V: Final = "gen4_turbo"


def runway_key(name: str) -> str:
    return f"key_{name}_" + "0123456789abcdef" * 4


def add_runway_account(relay: RelayProcess, sandbox: Sandbox, name: str, *options: str) -> None:
    scenario.add_account(relay, name, "runway", f"{sandbox.url}/runway/v1", runway_key(name), *options)


def api_requests(sandbox: Sandbox) -> list[dict[str, Any]]:
    return scenario.recorded_under(sandbox, "/runway/v1/")


def creates(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in api_requests(sandbox) if r["method"] == "POST"]


def test_create_and_poll_completes_and_downloads_the_bytes_runways_cdn_serves(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = scenario.completes(
        client, traffic, model=T2V, prompt=f"A lighthouse in a storm [bytes={scenario.PADDED_BYTES}]", seconds="8", size="720x1280"
    )
    assert video.progress == 100 and (video.size, video.seconds) == ("720x1280", "8")
    assert client.videos.retrieve(video.id).status == "completed"

    [created] = creates(sandbox)
    assert created["path"] == "/runway/v1/text_to_video"
    assert scenario.recorded_body(created) == {
        "model": T2V,
        "promptText": f"A lighthouse in a storm [bytes={scenario.PADDED_BYTES}]",
        "ratio": "720:1280",
        "duration": 8,
    }
    # Every call to Runway's API: the Bearer key and the API version, nothing of the client's.
    for record in api_requests(sandbox):
        assert scenario.header_values(record, "authorization") == [f"Bearer {runway_key('rw')}"], record
        assert scenario.header_values(record, "x-runway-version") == ["2024-11-06"], record

    cdn = scenario.downloads_from_storage(client, video.id, sandbox, "/runway/cdn/")
    assert scenario.header_values(cdn, "x-runway-version") == []  # the key and the version stayed with the API


def test_an_uploaded_image_goes_to_image_to_video_as_a_data_uri(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = scenario.completes(
        client, traffic, model=I2V, prompt="Animate this picture", input_reference=("ref.png", scenario.PNG, "image/png")
    )
    assert (video.size, video.seconds) == ("1280x720", "5")
    assert traffic.posted().headers["content-type"].startswith("multipart/form-data")
    [created] = creates(sandbox)
    assert created["path"] == "/runway/v1/image_to_video"
    assert scenario.recorded_body(created) == {
        "model": I2V,
        "promptImage": scenario.PNG_DATA_URL,
        "promptText": "Animate this picture",
        "ratio": "1280:720",
        "duration": 5,
    }


@pytest.mark.parametrize(
    ("reference", "prompt_image"),
    [
        ({"image_url": scenario.PNG_DATA_URL}, scenario.PNG_DATA_URL),
        (scenario.PNG_DATA_URL, scenario.PNG_DATA_URL),
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
    assert created["path"] == "/runway/v1/image_to_video" and scenario.recorded_body(created)["promptImage"] == prompt_image


@pytest.mark.parametrize(("marker", "code"), [("[fail]", "INTERNAL.BAD_OUTPUT"), ("[moderated]", "SAFETY.INPUT.TEXT")])
def test_a_failed_task_ends_failed_with_runways_failure_code(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, marker: str, code: str
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = scenario.fails_with(client, T2V, f"A storm at sea {marker}", code)
    assert marker in video.error.message
    assert scenario.accounts_by_name(relay)["rw"]["state"] == "active"  # the job failed, not the account


def test_a_429_fails_over_and_rests_the_account_for_the_default_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process(extra_env={"RELAY_DEFAULT_COOLDOWN_SECONDS": "77"})
    add_runway_account(relay, sandbox, "first", "--priority", "1")
    add_runway_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    # Runway's 429 names no time to wait: the relay's default cooldown applies.
    sandbox.fault(preset="rate_limited", provider="runway", token=runway_key("first"), times=1)

    keys = (runway_key("first"), runway_key("second"))
    scenario.fails_over(relay, sandbox, client, model=T2V, creates=creates, keys=keys, first_state="rate_limited", poll=True)
    scenario.rests_for(relay, "first", "default", 77)
    assert scenario.account_details(relay, "first")["last_error"] == "Too many requests. Please slow down and try again later."


def test_a_retry_after_on_a_429_sets_the_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "first", "--priority", "1")
    add_runway_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    # A gateway in front of Runway may add one; the relay trusts it.
    scenario.retry_after_rests_the_account(relay, sandbox, client, model=T2V, provider="runway", first_key=runway_key("first"))


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

    keys = (runway_key("first"), runway_key("second"))
    scenario.fails_over(relay, sandbox, client, model=T2V, creates=creates, keys=keys, first_state="unauthorized")
    assert scenario.cooldown_of(relay, "first")["reason"].startswith(reason)
    # What the account shows is Runway's own `error`, not only the status.
    shown = {"unauthorized": "Incorrect or missing API key", "payment_required": "enough credits"}[preset]
    assert shown in scenario.account_details(relay, "first")["last_error"]


def test_remix_and_character_creates_are_400s_naming_the_type_and_reach_nothing(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any
) -> None:
    relay = relay_process()
    add_runway_account(relay, sandbox, "rw")
    client = make_sdk(relay, relay.issue_key("alice"))
    video = client.videos.create_and_poll(model=T2V, prompt="A fox", poll_interval_ms=scenario.POLL_INTERVAL_MS)
    assert video.status == "completed"
    sandbox.reset()

    scenario.refuses_remix_and_characters(client, video.id, "runway")
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
    assert scenario.accounts_by_name(relay)["rw"]["state"] == "active"


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
    assert scenario.header_values(sent, "x-runway-version") == ["2024-11-06"]
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    # Runway cancelled it.
    task = httpx.get(
        f"{sandbox.url}{sent['path']}", headers={"Authorization": f"Bearer {runway_key('rw')}", "X-Runway-Version": "2024-11-06"}
    )
    assert task.json()["status"] == "CANCELLED" and created["path"] == "/runway/v1/text_to_video"
