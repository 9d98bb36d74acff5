"""fal accounts end to end, as an operator and a client meet them: a real relay process, the
sandbox process emulating fal's queue (`/fal`) and CDN (`/_falcdn`), accounts added with relayctl,
and the official openai SDK as the only client of the relay."""

from __future__ import annotations

import base64
import json
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

T2V: Final = "fal-ai/kling-video/v2.1/master/text-to-video"
I2V: Final = "fal-ai/kling-video/v2.1/master/image-to-video"
PNG_DATA_URL: Final = "data:image/png;base64," + base64.b64encode(PNG).decode("ascii")


def fal_key(name: str) -> str:
    return f"fal-key-{name}:0123456789abcdef0123456789abcdef"


def add_fal_account(relay: RelayProcess, sandbox: Sandbox, name: str, *options: str) -> None:
    add_account(relay, name, "fal", f"{sandbox.url}/fal", fal_key(name), *options)


def submits(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["method"] == "POST" and r["path"].startswith("/fal/")]


def cooldown_of(relay: RelayProcess, name: str) -> dict[str, Any]:
    listed = relay.relayctl("cooldowns", "--json")
    assert listed.returncode == 0, listed.stderr
    return next(row for row in json.loads(listed.stdout) if row["account"] == name)


def test_create_and_poll_completes_and_downloads_the_bytes_fals_cdn_serves(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(
        model=T2V, prompt=f"A paper boat on a river [bytes={PADDED_BYTES}]", seconds="8", size="720x1280", poll_interval_ms=POLL_INTERVAL_MS
    )
    assert video.status == "completed" and video.error is None and video.model == T2V
    assert (video.seconds, video.size) == ("8", "720x1280")
    assert traffic.statuses and set(traffic.statuses) <= OPENAI_STATUSES and traffic.statuses[-1] == "completed"
    [submitted] = submits(sandbox)
    assert submitted["path"] == f"/fal/{T2V}"
    assert recorded_body(submitted) == {
        "prompt": f"A paper boat on a river [bytes={PADDED_BYTES}]",
        "aspect_ratio": "9:16",
        "resolution": "720p",
        "duration": "8",
    }
    # The relay asks fal by the app id, as fal's status and result URLs have it.
    reads = {r["path"] for r in sandbox.requests() if r["method"] == "GET" and r["path"].startswith("/fal/")}
    assert reads and all(path.startswith("/fal/fal-ai/kling-video/requests/") for path in reads)
    assert any(path.endswith("/status") for path in reads) and any(not path.endswith("/status") for path in reads)

    downloaded = client.videos.download_content(video.id).read()
    [cdn] = [r for r in sandbox.requests() if r["path"].startswith("/_falcdn/")]
    served = httpx.get(f"{sandbox.url}{cdn['path']}")
    assert served.status_code == 200
    assert downloaded == served.content
    assert len(downloaded) == PADDED_BYTES and downloaded.startswith(SAMPLE)
    # The key went to fal's queue only, as `Authorization: Key ...`, and never to its CDN.
    assert cdn["token"] is None and header_values(cdn, "authorization") == []
    queue = [r for r in sandbox.requests() if r["path"].startswith("/fal/")]
    assert queue and all(header_values(r, "authorization") == [f"Key {fal_key('fal')}"] for r in queue)
    assert all(header_values(r, "x-fal-no-retry") == [] for r in queue)


def test_an_uploaded_image_reaches_fal_as_a_data_url(relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create(model=I2V, prompt="Animate this picture", input_reference=("ref.png", PNG, "image/png"))
    assert video.status in OPENAI_STATUSES
    [sent] = [r for r in traffic.requests if r.method == "POST"]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    [submitted] = submits(sandbox)
    assert submitted["path"] == f"/fal/{I2V}"
    assert recorded_body(submitted) == {"prompt": "Animate this picture", "image_url": PNG_DATA_URL}
    assert client.videos.retrieve(video.id).model == I2V


@pytest.mark.parametrize("reference", [PNG_DATA_URL, "https://images.example/first-frame.png"])
def test_a_data_url_or_image_url_reaches_fal_as_image_url(relay_process: Any, sandbox: Sandbox, make_sdk: Any, reference: str) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))

    # JSON, as older SDKs create; fal fetches an image URL itself, so the relay fetches nothing.
    video = client.post(
        "/videos", body={"model": I2V, "prompt": "Animate this picture", "input_reference": reference}, cast_to=openai.types.Video
    )
    assert video.status == "queued"
    [submitted] = submits(sandbox)
    assert recorded_body(submitted)["image_url"] == reference


def test_a_failed_request_ends_the_video_failed_with_the_error(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(model=T2V, prompt="A storm at sea [fail]", poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "failed"
    assert video.error is not None and video.error.code == "video_generation_failed" and "[fail]" in video.error.message
    with pytest.raises(openai.ConflictError) as refused:
        client.videos.download_content(video.id)
    assert refused.value.code == "video_failed"
    # The model's failure is the video's, not the account's.
    assert accounts_by_name(relay)["fal"]["state"] == "active"


def test_a_rate_limited_account_fails_over_and_rests_for_the_default_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process(extra_env={"RELAY_DEFAULT_COOLDOWN_SECONDS": "77"})
    add_fal_account(relay, sandbox, "first", "--priority", "1")
    add_fal_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    # fal's 429 names no time to wait: the relay's default cooldown applies.
    sandbox.fault(preset="rate_limited", provider="fal", token=fal_key("first"), times=1)

    video = client.videos.create_and_poll(model=T2V, prompt="A lighthouse in a storm", poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "completed"
    assert [r["token"] for r in submits(sandbox)] == [fal_key("first"), fal_key("second")]
    polls = [r for r in sandbox.requests() if r["method"] == "GET" and r["path"].startswith("/fal/")]
    assert polls and {r["token"] for r in polls} == {fal_key("second")}
    accounts = accounts_by_name(relay)
    assert (accounts["first"]["state"], accounts["second"]["state"]) == ("rate_limited", "active")
    cooldown = cooldown_of(relay, "first")
    assert cooldown["reason"] == "upstream 429 (cooldown from default)"
    assert 60 < cooldown["seconds_left"] <= 77


def test_a_retry_after_on_fals_429_sets_the_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "first", "--priority", "1")
    add_fal_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="rate_limited", provider="fal", token=fal_key("first"), times=1, headers={"retry-after": "42"})

    assert client.videos.create(model=T2V, prompt="A lighthouse").status == "queued"
    cooldown = cooldown_of(relay, "first")
    assert cooldown["reason"] == "upstream 429 (cooldown from retry_after)"
    assert 30 < cooldown["seconds_left"] <= 42


def test_an_invalid_key_marks_the_account_unauthorized_and_the_create_moves_on(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "first", "--priority", "1")
    add_fal_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="unauthorized", provider="fal", token=fal_key("first"))

    assert client.videos.create(model=T2V, prompt="A red fox").status == "queued"
    assert [r["token"] for r in submits(sandbox)] == [fal_key("first"), fal_key("second")]
    accounts = accounts_by_name(relay)
    assert (accounts["first"]["state"], accounts["second"]["state"]) == ("unauthorized", "active")


def test_an_exhausted_balance_takes_the_account_out_of_rotation(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="payment_required", provider="fal", times=1)

    with pytest.raises(openai.APIStatusError) as refused:
        client.videos.create(model=T2V, prompt="A red fox")
    assert refused.value.status_code == 503
    assert accounts_by_name(relay)["fal"]["state"] == "unauthorized"
    cooldown = cooldown_of(relay, "fal")
    assert cooldown["reason"] == "upstream 402 payment_required"


def test_remix_and_characters_are_a_400_naming_the_type(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))
    video = client.videos.create(model=T2V, prompt="A red fox")
    sandbox.reset()

    with pytest.raises(openai.BadRequestError) as remix:
        client.videos.remix(video.id, prompt="The same fox at night")
    assert remix.value.code == "unsupported_for_account_type" and "fal" in str(remix.value.message)
    with pytest.raises(openai.BadRequestError) as character:
        client.videos.create_character(name="Fox", video=("fox.mp4", SAMPLE, "video/mp4"))
    assert character.value.code == "unsupported_for_account_type" and "fal" in str(character.value.message)
    with pytest.raises(openai.BadRequestError) as field:
        client.videos.create(model=T2V, prompt="A fox", extra_body={"character_ids": ["char_1"]})
    assert field.value.code == "invalid_value" and "fal" in str(field.value.message)
    assert sandbox.requests() == []
