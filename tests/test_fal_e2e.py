"""fal accounts end to end, as an operator and a client meet them: a real relay process, the
sandbox process emulating fal's queue (`/fal`) and CDN (`/_falcdn`), accounts added with relayctl,
and the official openai SDK as the only client of the relay."""

from __future__ import annotations

from typing import Any, Final

import openai
import provider_scenarios as scenario
import pytest
from conftest import RelayProcess, Sandbox
from provider_scenarios import SdkTraffic, make_sdk, traffic

pytestmark = pytest.mark.e2e
__all__ = ["make_sdk", "traffic"]  # the SDK-as-client fixtures, for pytest

T2V: Final = "fal-ai/kling-video/v2.1/master/text-to-video"
I2V: Final = "fal-ai/kling-video/v2.1/master/image-to-video"


def fal_key(name: str) -> str:
    return f"fal-key-{name}:0123456789abcdef0123456789abcdef"


def add_fal_account(relay: RelayProcess, sandbox: Sandbox, name: str, *options: str) -> None:
    scenario.add_account(relay, name, "fal", f"{sandbox.url}/fal", fal_key(name), *options)


def submits(sandbox: Sandbox) -> list[dict[str, Any]]:
    return scenario.recorded_under(sandbox, "/fal/", "POST")


def test_create_and_poll_completes_and_downloads_the_bytes_fals_cdn_serves(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = scenario.completes(
        client, traffic, model=T2V, prompt=f"A paper boat on a river [bytes={scenario.PADDED_BYTES}]", seconds="8", size="720x1280"
    )
    assert (video.seconds, video.size) == ("8", "720x1280")
    [submitted] = submits(sandbox)
    assert submitted["path"] == f"/fal/{T2V}"
    assert scenario.recorded_body(submitted) == {
        "prompt": f"A paper boat on a river [bytes={scenario.PADDED_BYTES}]",
        "aspect_ratio": "9:16",
        "resolution": "720p",
        "duration": "8",
    }
    # The relay asks fal by the app id, as fal's status and result URLs have it.
    reads = {r["path"] for r in scenario.recorded_under(sandbox, "/fal/", "GET")}
    assert reads and all(path.startswith("/fal/fal-ai/kling-video/requests/") for path in reads)
    assert any(path.endswith("/status") for path in reads) and any(not path.endswith("/status") for path in reads)

    # The key went to fal's queue only, as `Authorization: Key ...`, and never to its CDN.
    scenario.downloads_from_storage(client, video.id, sandbox, "/_falcdn/")
    queue = scenario.recorded_under(sandbox, "/fal/")
    assert queue and all(scenario.header_values(r, "authorization") == [f"Key {fal_key('fal')}"] for r in queue)
    assert all(scenario.header_values(r, "x-fal-no-retry") == [] for r in queue)


def test_an_uploaded_image_reaches_fal_as_a_data_url(relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create(model=I2V, prompt="Animate this picture", input_reference=("ref.png", scenario.PNG, "image/png"))
    assert video.status in scenario.OPENAI_STATUSES
    assert traffic.posted().headers["content-type"].startswith("multipart/form-data")
    [submitted] = submits(sandbox)
    assert submitted["path"] == f"/fal/{I2V}"
    assert scenario.recorded_body(submitted) == {"prompt": "Animate this picture", "image_url": scenario.PNG_DATA_URL}
    assert client.videos.retrieve(video.id).model == I2V


@pytest.mark.parametrize("reference", [scenario.PNG_DATA_URL, "https://images.example/first-frame.png"])
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
    assert scenario.recorded_body(submitted)["image_url"] == reference


def test_a_failed_request_ends_the_video_failed_with_the_error(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = scenario.fails_with(client, T2V, "A storm at sea [fail]", "video_generation_failed")
    assert "[fail]" in video.error.message
    # The model's failure is the video's, not the account's.
    assert scenario.accounts_by_name(relay)["fal"]["state"] == "active"


def test_a_rate_limited_account_fails_over_and_rests_for_the_default_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process(extra_env={"RELAY_DEFAULT_COOLDOWN_SECONDS": "77"})
    add_fal_account(relay, sandbox, "first", "--priority", "1")
    add_fal_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    # fal's 429 names no time to wait: the relay's default cooldown applies.
    sandbox.fault(preset="rate_limited", provider="fal", token=fal_key("first"), times=1)

    keys = (fal_key("first"), fal_key("second"))
    scenario.fails_over(relay, sandbox, client, model=T2V, creates=submits, keys=keys, first_state="rate_limited", poll=True)
    scenario.rests_for(relay, "first", "default", 77)
    # What the account shows is fal's own `detail`, not only the status.
    assert "exceeded your rate limit" in scenario.account_details(relay, "first")["last_error"]


def test_a_retry_after_on_fals_429_sets_the_cooldown(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "first", "--priority", "1")
    add_fal_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    scenario.retry_after_rests_the_account(relay, sandbox, client, model=T2V, provider="fal", first_key=fal_key("first"))


def test_an_invalid_key_marks_the_account_unauthorized_and_the_create_moves_on(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "first", "--priority", "1")
    add_fal_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="unauthorized", provider="fal", token=fal_key("first"))

    scenario.fails_over(
        relay, sandbox, client, model=T2V, creates=submits, keys=(fal_key("first"), fal_key("second")), first_state="unauthorized"
    )


def test_an_exhausted_balance_takes_the_account_out_of_rotation(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))
    sandbox.fault(preset="payment_required", provider="fal", times=1)

    with pytest.raises(openai.APIStatusError) as refused:
        client.videos.create(model=T2V, prompt="A red fox")
    assert refused.value.status_code == 503
    assert scenario.accounts_by_name(relay)["fal"]["state"] == "unauthorized"
    cooldown = scenario.cooldown_of(relay, "fal")
    assert cooldown["reason"] == "upstream 402 payment_required"
    assert "Exhausted balance" in scenario.account_details(relay, "fal")["last_error"]


def test_remix_and_characters_are_a_400_naming_the_type(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_fal_account(relay, sandbox, "fal")
    client = make_sdk(relay, relay.issue_key("alice"))
    video = client.videos.create(model=T2V, prompt="A red fox")
    sandbox.reset()

    scenario.refuses_remix_and_characters(client, video.id, "fal")
    with pytest.raises(openai.BadRequestError) as field:
        client.videos.create(model=T2V, prompt="A fox", extra_body={"character_ids": ["char_1"]})
    assert field.value.code == "invalid_value" and "fal" in str(field.value.message)
    assert sandbox.requests() == []
