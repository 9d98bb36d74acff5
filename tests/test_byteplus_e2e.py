"""BytePlus Seedance accounts end to end, as an operator and a client meet them: a real relay process,
the sandbox process emulating ModelArk (`/byteplus/api/v3`), accounts added with relayctl, and the
official openai SDK as the only client of the relay."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import httpx
import openai
import provider_scenarios as scenario
import pytest
from conftest import RelayProcess, Sandbox
from provider_scenarios import SdkTraffic, make_sdk, traffic

pytestmark = pytest.mark.e2e
__all__ = ["make_sdk", "traffic"]  # the SDK-as-client fixtures, for pytest

PRO: Final = "seedance-1-0-pro-250528"
I2V: Final = "seedance-1-0-lite-i2v-250428"
TASKS: Final = "/byteplus/api/v3/contents/generations/tasks"
COOLDOWN_SECONDS: Final = 42


def ark_key(name: str) -> str:
    return f"ark-{name}-key-0123456789"


def add_byteplus_account(relay: RelayProcess, sandbox: Sandbox, name: str, *options: str) -> None:
    scenario.add_account(relay, name, "byteplus", f"{sandbox.url}/byteplus/api/v3", ark_key(name), *options)


def task_creates(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == TASKS]


def test_create_and_poll_completes_downloads_the_sandbox_bytes_and_deletes_the_task(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "ark")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = scenario.completes(
        client, traffic, model=PRO, prompt=f"A red fox in fresh snow [bytes={scenario.PADDED_BYTES}]", size="720x1280", seconds="8"
    )
    assert (video.size, video.seconds) == ("720x1280", "8")
    [created] = task_creates(sandbox)
    assert scenario.recorded_body(created) == {
        "model": PRO,
        "content": [{"type": "text", "text": f"A red fox in fresh snow [bytes={scenario.PADDED_BYTES}]"}],
        "ratio": "9:16",
        "resolution": "720p",
        "duration": 8,
    }
    assert scenario.header_values(created, "authorization") == [f"Bearer {ark_key('ark')}"]

    # The video_url the relay followed: a storage link on another origin, which needs no key and got none.
    stored = scenario.downloads_from_storage(client, video.id, sandbox, "/byteplus/tos/")
    assert stored["token"] is None and scenario.header_values(stored, "authorization") == []

    sandbox.reset()
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True
    [removal] = sandbox.requests()
    assert removal["method"] == "DELETE" and removal["path"].startswith(f"{TASKS}/cgt-") and removal["token"] == ark_key("ark")
    # The task is gone at BytePlus too.
    assert httpx.get(f"{sandbox.url}{removal['path']}", headers={"Authorization": f"Bearer {ark_key('ark')}"}).status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


def test_an_uploaded_image_and_an_image_url_reach_seedance_as_the_first_frame(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "ark")
    key = relay.issue_key("alice")
    client = make_sdk(relay, key)

    scenario.completes(client, traffic, model=I2V, prompt="The fox turns its head", input_reference=("fox.png", scenario.PNG, "image/png"))
    assert traffic.posted().headers["content-type"].startswith("multipart/form-data")
    [created] = task_creates(sandbox)
    assert scenario.recorded_body(created)["content"] == [
        {"type": "text", "text": "The fox turns its head"},
        {"type": "image_url", "image_url": {"url": scenario.PNG_DATA_URL}, "role": "first_frame"},
    ]

    # An image URL travels as it is: BytePlus fetches it, the relay does not (no RELAY_IMAGE_URL_HOSTS needed).
    sandbox.reset()
    url = "https://images.example/fox.png"
    body = {"model": I2V, "prompt": "The fox runs", "input_reference": {"image_url": url}}
    answer = httpx.post(f"{relay.url}/openai/v1/videos", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    [created] = task_creates(sandbox)
    assert scenario.recorded_body(created)["content"][1] == {"type": "image_url", "image_url": {"url": url}, "role": "first_frame"}


@pytest.mark.parametrize(("marker", "code"), [("[fail]", "video_generation_failed"), ("[filtered]", "moderation_blocked")])
def test_a_failed_task_ends_failed_with_an_error_and_has_no_content(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, marker: str, code: str
) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "ark")
    client = make_sdk(relay, relay.issue_key("alice"))

    scenario.fails_with(client, PRO, f"A storm at sea {marker}", code)


def test_a_rate_limited_account_fails_over_and_rests_for_the_default_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    # ModelArk's 429s carry no retry hint: the account rests for the configured default.
    relay = relay_process(extra_env={"RELAY_DEFAULT_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS)})
    add_byteplus_account(relay, sandbox, "first", "--priority", "1")
    add_byteplus_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="rate_limited", provider="byteplus", token=ark_key("first"), times=1)

    keys = (ark_key("first"), ark_key("second"))
    scenario.fails_over(relay, sandbox, client, model=PRO, creates=task_creates, keys=keys, first_state="rate_limited", poll=True)
    first = scenario.account_details(relay, "first")
    assert first["state"] == "rate_limited" and "cooldown from default" in first["state_reason"]
    rested = datetime.fromisoformat(first["until"]) - datetime.fromisoformat(first["state_since"])
    assert abs(rested.total_seconds() - COOLDOWN_SECONDS) <= 2
    assert first["last_error"] and "RPM" in first["last_error"]


def test_a_retry_after_in_front_of_modelark_is_the_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "first", "--priority", "1")
    add_byteplus_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    scenario.retry_after_rests_the_account(
        relay, sandbox, client, model=PRO, provider="byteplus", first_key=ark_key("first"), seconds=300, header="Retry-After"
    )


def test_an_invalid_key_marks_the_account_unauthorized_and_the_create_moves_on(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "first", "--priority", "1")
    add_byteplus_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="unauthorized", provider="byteplus", token=ark_key("first"))

    keys = (ark_key("first"), ark_key("second"))
    scenario.fails_over(relay, sandbox, client, model=PRO, creates=task_creates, keys=keys, first_state="unauthorized")
    assert "AK/SK" in scenario.account_details(relay, "first")["last_error"]


def test_remix_and_characters_are_a_400_naming_the_type(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "ark")
    client = make_sdk(relay, relay.issue_key("alice"))
    video = client.videos.create(model=PRO, prompt="A red fox")
    sandbox.reset()

    scenario.refuses_remix_and_characters(client, video.id, "byteplus")
    with pytest.raises(openai.BadRequestError) as field:
        client.videos.create(model=PRO, prompt="A fox", extra_body={"character_ids": ["char_1"]})
    assert field.value.code == "invalid_value" and "byteplus" in str(field.value.message)
    with pytest.raises(openai.BadRequestError) as thumbnail:
        client.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.value.code == "invalid_variant" and "byteplus" in str(thumbnail.value.message)
    assert sandbox.requests() == []
