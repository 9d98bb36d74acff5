"""BytePlus Seedance accounts end to end, as an operator and a client meet them: a real relay process,
the sandbox process emulating ModelArk (`/byteplus/api/v3`), accounts added with relayctl, and the
official openai SDK as the only client of the relay."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Final

import httpx
import openai
import pytest
import test_providers_e2e as providers_e2e
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

# The SDK-as-client fixtures of the provider end-to-end tests, shared rather than copied.
traffic = providers_e2e.traffic
make_sdk = providers_e2e.make_sdk

PRO: Final = "seedance-1-0-pro-250528"
I2V: Final = "seedance-1-0-lite-i2v-250428"
TASKS: Final = "/byteplus/api/v3/contents/generations/tasks"
COOLDOWN_SECONDS: Final = 42


def ark_key(name: str) -> str:
    return f"ark-{name}-key-0123456789"


def add_byteplus_account(relay: RelayProcess, sandbox: Sandbox, name: str, *options: str) -> None:
    add_account(relay, name, "byteplus", f"{sandbox.url}/byteplus/api/v3", ark_key(name), *options)


def task_creates(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == TASKS]


def account_details(relay: RelayProcess, name: str) -> dict[str, Any]:
    shown = relay.relayctl("accounts", "show", name, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def test_create_and_poll_completes_downloads_the_sandbox_bytes_and_deletes_the_task(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "ark")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(
        model=PRO, prompt=f"A red fox in fresh snow [bytes={PADDED_BYTES}]", size="720x1280", seconds="8", poll_interval_ms=POLL_INTERVAL_MS
    )
    assert video.status == "completed" and video.error is None
    assert video.id.startswith("video_") and (video.model, video.size, video.seconds) == (PRO, "720x1280", "8")
    assert traffic.statuses and set(traffic.statuses) <= OPENAI_STATUSES and traffic.statuses[-1] == "completed"
    [created] = task_creates(sandbox)
    assert recorded_body(created) == {
        "model": PRO,
        "content": [{"type": "text", "text": f"A red fox in fresh snow [bytes={PADDED_BYTES}]"}],
        "ratio": "9:16",
        "resolution": "720p",
        "duration": 8,
    }
    assert header_values(created, "authorization") == [f"Bearer {ark_key('ark')}"]

    downloaded = client.videos.download_content(video.id).read()
    # The video_url the relay followed, fetched again straight from the sandbox (it needs no key).
    [stored] = [r for r in sandbox.requests() if r["path"].startswith("/byteplus/tos/")]
    served = httpx.get(f"{sandbox.url}{stored['path']}?{stored['query']}")
    assert served.status_code == 200
    assert downloaded == served.content
    assert len(downloaded) == PADDED_BYTES and downloaded.startswith(SAMPLE)

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

    video = client.videos.create_and_poll(
        model=I2V, prompt="The fox turns its head", input_reference=("fox.png", PNG, "image/png"), poll_interval_ms=POLL_INTERVAL_MS
    )
    assert video.status == "completed"
    [sent] = [r for r in traffic.requests if r.method == "POST"]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    [created] = task_creates(sandbox)
    assert recorded_body(created)["content"] == [
        {"type": "text", "text": "The fox turns its head"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}, "role": "first_frame"},
    ]

    # An image URL travels as it is: BytePlus fetches it, the relay does not (no RELAY_IMAGE_URL_HOSTS needed).
    sandbox.reset()
    url = "https://images.example/fox.png"
    body = {"model": I2V, "prompt": "The fox runs", "input_reference": {"image_url": url}}
    answer = httpx.post(f"{relay.url}/openai/v1/videos", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    [created] = task_creates(sandbox)
    assert recorded_body(created)["content"][1] == {"type": "image_url", "image_url": {"url": url}, "role": "first_frame"}


@pytest.mark.parametrize(("marker", "code"), [("[fail]", "video_generation_failed"), ("[filtered]", "moderation_blocked")])
def test_a_failed_task_ends_failed_with_an_error_and_has_no_content(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, marker: str, code: str
) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "ark")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(model=PRO, prompt=f"A storm at sea {marker}", poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "failed"
    assert video.error is not None and video.error.code == code and video.error.message
    with pytest.raises(openai.ConflictError) as refused:
        client.videos.download_content(video.id)
    assert refused.value.code == "video_failed"


def test_a_rate_limited_account_fails_over_and_rests_for_the_default_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    # ModelArk's 429s carry no retry hint: the account rests for the configured default.
    relay = relay_process(extra_env={"RELAY_DEFAULT_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS)})
    add_byteplus_account(relay, sandbox, "first", "--priority", "1")
    add_byteplus_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="rate_limited", provider="byteplus", token=ark_key("first"), times=1)

    video = client.videos.create_and_poll(model=PRO, prompt="A red fox in fresh snow", poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "completed"
    assert [r["token"] for r in task_creates(sandbox)] == [ark_key("first"), ark_key("second")]
    polls = [r for r in sandbox.requests() if r["method"] == "GET" and r["path"].startswith(TASKS)]
    assert polls and {r["token"] for r in polls} == {ark_key("second")}

    assert accounts_by_name(relay)["second"]["state"] == "active"
    first = account_details(relay, "first")
    assert first["state"] == "rate_limited" and "cooldown from default" in first["state_reason"]
    rested = datetime.fromisoformat(first["until"]) - datetime.fromisoformat(first["state_since"])
    assert abs(rested.total_seconds() - COOLDOWN_SECONDS) <= 2
    assert first["last_error"] and "RPM" in first["last_error"]


def test_a_retry_after_in_front_of_modelark_is_the_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "first", "--priority", "1")
    add_byteplus_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="rate_limited", provider="byteplus", token=ark_key("first"), times=1, headers={"Retry-After": "300"})

    assert client.videos.create(model=PRO, prompt="A red fox").status == "queued"
    first = account_details(relay, "first")
    assert first["state"] == "rate_limited" and "cooldown from retry_after" in first["state_reason"]
    rested = datetime.fromisoformat(first["until"]) - datetime.fromisoformat(first["state_since"])
    assert abs(rested.total_seconds() - 300) <= 2


def test_an_invalid_key_marks_the_account_unauthorized_and_the_create_moves_on(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "first", "--priority", "1")
    add_byteplus_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="unauthorized", provider="byteplus", token=ark_key("first"))

    assert client.videos.create(model=PRO, prompt="A red fox").status == "queued"
    assert [r["token"] for r in task_creates(sandbox)] == [ark_key("first"), ark_key("second")]
    accounts = accounts_by_name(relay)
    assert (accounts["first"]["state"], accounts["second"]["state"]) == ("unauthorized", "active")
    assert "AK/SK" in account_details(relay, "first")["last_error"]


def test_remix_and_characters_are_a_400_naming_the_type(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_byteplus_account(relay, sandbox, "ark")
    client = make_sdk(relay, relay.issue_key("alice"))
    video = client.videos.create(model=PRO, prompt="A red fox")
    sandbox.reset()

    with pytest.raises(openai.BadRequestError) as remix:
        client.videos.remix(video.id, prompt="The same fox at night")
    assert remix.value.code == "unsupported_for_account_type" and "byteplus" in str(remix.value.message)
    with pytest.raises(openai.BadRequestError) as character:
        client.videos.create_character(name="Fox", video=("fox.mp4", SAMPLE, "video/mp4"))
    assert character.value.code == "unsupported_for_account_type" and "byteplus" in str(character.value.message)
    with pytest.raises(openai.BadRequestError) as field:
        client.videos.create(model=PRO, prompt="A fox", extra_body={"character_ids": ["char_1"]})
    assert field.value.code == "invalid_value" and "byteplus" in str(field.value.message)
    assert sandbox.requests() == []
