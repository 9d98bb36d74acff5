"""Provider accounts end to end, as an operator and a client meet them: a real relay process, the
sandbox process emulating OpenAI (`/v1`), Azure (`/openai/v1`) and Gemini (`/v1beta`), accounts
added with relayctl, and the official openai SDK as the only client of the relay."""

from __future__ import annotations

import base64
from typing import Any, Final

import httpx
import openai
import provider_scenarios as scenario
import pytest
from conftest import RelayProcess, Sandbox
from provider_scenarios import SdkTraffic, make_sdk, traffic

pytestmark = pytest.mark.e2e
__all__ = ["make_sdk", "traffic"]  # the SDK-as-client fixtures, for pytest

VEO: Final = "veo-3.1-generate-preview"
SORA: Final = "sora-2"


def gemini_key(name: str) -> str:
    return f"AIza-{name}-key-0123456789"


def add_veo_account(relay: RelayProcess, sandbox: Sandbox, name: str, *options: str) -> None:
    scenario.add_account(relay, name, "gemini", f"{sandbox.url}/v1beta", gemini_key(name), *options)


def creates(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The creates the sandbox received, any provider: a Veo predictLongRunning or a contract POST .../videos."""
    return [
        r
        for r in sandbox.requests()
        if r["method"] == "POST" and (r["path"].endswith(":predictLongRunning") or r["path"].endswith("/videos"))
    ]


# --------------------------------------------------------------------------- Veo


def test_veo_create_and_poll_completes_and_downloads_the_bytes_the_sandbox_serves(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_veo_account(relay, sandbox, "veo")
    client = make_sdk(relay, relay.issue_key("alice"))

    # The create's answer and every answer create_and_poll polled: OpenAI's statuses, never Google's.
    video = scenario.completes(client, traffic, model=VEO, prompt=f"A lighthouse in a storm [bytes={scenario.PADDED_BYTES}]")
    assert client.videos.retrieve(video.id).status == "completed"
    # What the relay fetched from the redirect target, without the Gemini key.
    scenario.downloads_from_storage(client, video.id, sandbox, "/_gcs/")


def test_a_multipart_image_through_the_sdk_reaches_veo_as_the_instance_image(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_veo_account(relay, sandbox, "veo")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create(model=VEO, prompt="Animate this picture", input_reference=("ref.png", scenario.PNG, "image/png"))
    assert video.status in scenario.OPENAI_STATUSES
    assert traffic.posted().headers["content-type"].startswith("multipart/form-data")

    [created] = creates(sandbox)
    assert created["path"] == f"/v1beta/models/{VEO}:predictLongRunning"
    instance = scenario.recorded_body(created)["instances"][0]
    assert instance["prompt"] == "Animate this picture"
    assert instance["image"] == {"bytesBase64Encoded": base64.b64encode(scenario.PNG).decode("ascii"), "mimeType": "image/png"}


@pytest.mark.parametrize(("marker", "code"), [("[fail]", "video_generation_failed"), ("[filtered]", "moderation_blocked")])
def test_a_failed_or_filtered_veo_operation_ends_failed_with_an_error_code(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, marker: str, code: str
) -> None:
    relay = relay_process()
    add_veo_account(relay, sandbox, "veo")
    client = make_sdk(relay, relay.issue_key("alice"))

    scenario.fails_with(client, VEO, f"A storm at sea {marker}", code)


def test_a_resource_exhausted_veo_account_fails_over_and_rests(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_veo_account(relay, sandbox, "first", "--priority", "1")
    add_veo_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    # Google's RESOURCE_EXHAUSTED with a RetryInfo, for the first account's key only, once.
    sandbox.fault(preset="rate_limited", resets_in_seconds=42, provider="gemini", token=gemini_key("first"), times=1)

    keys = (gemini_key("first"), gemini_key("second"))
    scenario.fails_over(relay, sandbox, client, model=VEO, creates=creates, keys=keys, first_state="rate_limited", poll=True)
    [rule] = httpx.get(f"{sandbox.url}/_sandbox/faults").json()
    assert rule["hits"] == 1
    assert scenario.accounts_by_name(relay)["first"]["until"] is not None


# --------------------------------------------------------------------------- a mixed pool


def test_a_mixed_pool_routes_each_model_to_an_account_that_serves_it(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    scenario.add_account(relay, "oai", "openai-responses", f"{sandbox.url}/v1", "tok-oai", "--models", SORA)
    scenario.add_account(relay, "az", "azure-openai", f"{sandbox.url}/openai/v1", "azure-key-az", "--models", SORA)
    add_veo_account(relay, sandbox, "veo")
    client = make_sdk(relay, relay.issue_key("alice"))
    contract_accounts = {("/v1/videos", "tok-oai"), ("/openai/v1/videos", "azure-key-az")}

    for _ in range(2):
        sandbox.reset()
        sora = client.videos.create_and_poll(model=SORA, prompt="Surfers at sunrise", poll_interval_ms=scenario.POLL_INTERVAL_MS)
        assert sora.status == "completed" and sora.model == SORA
        [created] = creates(sandbox)
        assert (created["path"], created["token"]) in contract_accounts
        # Polls went to the same OpenAI-contract account, none to Google.
        assert {r["token"] for r in sandbox.requests()} == {created["token"]}

        sandbox.reset()
        veo = client.videos.create_and_poll(model=VEO, prompt="A lighthouse in a storm", poll_interval_ms=scenario.POLL_INTERVAL_MS)
        assert veo.status == "completed" and veo.model == VEO
        [created] = creates(sandbox)
        assert (created["path"], created["token"]) == (f"/v1beta/models/{VEO}:predictLongRunning", gemini_key("veo"))
        assert all(r["path"].startswith("/v1beta/") for r in sandbox.requests())

    sandbox.reset()
    with pytest.raises(openai.BadRequestError) as refused:
        client.videos.create(model="kling-1", prompt="No account lists this model")
    assert refused.value.code == "model_not_found"
    assert sandbox.requests() == []


# --------------------------------------------------------------------------- Azure


def test_an_azure_account_sends_api_key_never_authorization_and_serves_create_poll_download(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    scenario.add_account(relay, "az", "azure-openai", f"{sandbox.url}/openai/v1", "azure-key-az")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(
        model=SORA, prompt=f"Surfers at sunrise [bytes={scenario.PADDED_BYTES}]", poll_interval_ms=scenario.POLL_INTERVAL_MS
    )
    assert video.status == "completed" and video.model == SORA
    assert set(traffic.statuses) <= scenario.OPENAI_STATUSES
    downloaded = client.videos.download_content(video.id).read()

    recorded = sandbox.requests()
    assert recorded and all(r["path"].startswith("/openai/v1/videos") for r in recorded)
    for record in recorded:
        assert scenario.header_values(record, "api-key") == ["azure-key-az"], record
        assert scenario.header_values(record, "authorization") == [], record
    # Fetched again straight from the Azure emulator, with the account's own key.
    [upstream] = [r for r in recorded if r["path"].endswith("/content")]
    served = httpx.get(f"{sandbox.url}{upstream['path']}", headers={"api-key": "azure-key-az"})
    assert served.status_code == 200
    assert downloaded == served.content
    assert len(downloaded) == scenario.PADDED_BYTES and downloaded.startswith(scenario.SAMPLE)
