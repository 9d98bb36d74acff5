"""Provider accounts end to end, as an operator and a client meet them: a real relay process, the
sandbox process emulating OpenAI (`/v1`), Azure (`/openai/v1`) and Gemini (`/v1beta`), accounts
added with relayctl, and the official openai SDK as the only client of the relay."""

from __future__ import annotations

import base64
import json
import random
import struct
import zlib
from collections.abc import Iterator
from typing import Any, Final

import httpx
import httpx2
import openai
import pytest
from conftest import ROOT, RelayProcess, Sandbox

pytestmark = pytest.mark.e2e

VEO: Final = "veo-3.1-generate-preview"
SORA: Final = "sora-2"
OPENAI_STATUSES: Final = frozenset({"queued", "in_progress", "completed", "failed"})
SAMPLE: Final = (ROOT / "relay" / "sandbox_assets" / "sample.mp4").read_bytes()
# The sandbox pads a video to the length a prompt's [bytes=N] marker names: a length no other video
# has shows the bytes came from this one.
PADDED_BYTES: Final = len(SAMPLE) + 4099
POLL_INTERVAL_MS: Final = 50
# create_and_poll polls until the video is done, with no limit of its own; this bounds each test.
MAX_SDK_REQUESTS: Final = 200


def png_image(width: int = 32, height: int = 32, seed: int = 7) -> bytes:
    """A real RGB PNG of noise: some kilobytes whose bytes include CR, LF and dashes, as a multipart
    boundary parser must carry them."""
    noise = random.Random(seed)
    rows = b"".join(b"\x00" + noise.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b"")


PNG: Final = png_image()


# --------------------------------------------------------------------------- the operator's side


def add_account(relay: RelayProcess, name: str, account_type: str, base_api: str, credential: str, *options: str) -> None:
    """`relayctl accounts add`, the credential piped in as an operator would."""
    done = relay.relayctl(
        "accounts", "add", name, "--type", account_type, "--token-stdin", "--base-api", base_api, *options, input=f"{credential}\n"
    )
    assert done.returncode == 0, done.stderr


def gemini_key(name: str) -> str:
    return f"AIza-{name}-key-0123456789"


def add_veo_account(relay: RelayProcess, sandbox: Sandbox, name: str, *options: str) -> None:
    add_account(relay, name, "gemini", f"{sandbox.url}/v1beta", gemini_key(name), *options)


def accounts_by_name(relay: RelayProcess) -> dict[str, dict[str, Any]]:
    listed = relay.relayctl("accounts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {account["name"]: account for account in json.loads(listed.stdout)}


# --------------------------------------------------------------------------- the client's side


class SdkTraffic:
    """What the SDK sent to the relay, and every video status it was told; refuses to go on forever."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.statuses: list[str] = []

    def on_request(self, request: httpx2.Request) -> None:
        self.requests.append(request)
        if len(self.requests) > MAX_SDK_REQUESTS:
            raise RuntimeError(f"the SDK sent more than {MAX_SDK_REQUESTS} requests: the video never finished")

    def on_response(self, response: httpx2.Response) -> None:
        is_video_resource = response.request.method in ("GET", "POST") and "/content" not in response.request.url.path
        if is_video_resource and response.status_code == 200 and response.headers.get("content-type", "").startswith("application/json"):
            response.read()
            status = response.json().get("status")
            if status is not None:
                self.statuses.append(status)


@pytest.fixture
def traffic() -> SdkTraffic:
    return SdkTraffic()


@pytest.fixture
def make_sdk(traffic: SdkTraffic) -> Iterator[Any]:
    opened: list[httpx2.Client] = []

    def make(relay: RelayProcess, key: str) -> openai.OpenAI:
        http = httpx2.Client(timeout=20, event_hooks={"request": [traffic.on_request], "response": [traffic.on_response]})
        opened.append(http)
        # No SDK retries: each outcome is the relay's own (its failover, its errors).
        return openai.OpenAI(base_url=f"{relay.url}/openai/v1", api_key=key, max_retries=0, http_client=http)

    yield make
    for http in opened:
        http.close()


def recorded_body(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(record["body_b64"]))  # type: ignore[no-any-return]


def header_values(record: dict[str, Any], name: str) -> list[str]:
    return [value for header, value in record["headers"] if header.lower() == name]


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

    video = client.videos.create_and_poll(
        model=VEO, prompt=f"A lighthouse in a storm [bytes={PADDED_BYTES}]", poll_interval_ms=POLL_INTERVAL_MS
    )
    assert video.status == "completed" and video.error is None
    assert video.id.startswith("video_") and video.model == VEO
    assert client.videos.retrieve(video.id).status == "completed"
    # The create's answer and every answer create_and_poll polled: OpenAI's statuses, never Google's.
    assert traffic.statuses and set(traffic.statuses) <= OPENAI_STATUSES and traffic.statuses[-1] == "completed"

    downloaded = client.videos.download_content(video.id).read()
    # What the relay fetched from the redirect target, fetched again straight from the sandbox.
    [storage] = [r for r in sandbox.requests() if r["path"].startswith("/_gcs/")]
    served = httpx.get(f"{sandbox.url}{storage['path']}?{storage['query']}")
    assert served.status_code == 200
    assert downloaded == served.content
    assert len(downloaded) == PADDED_BYTES and downloaded.startswith(SAMPLE)
    assert storage["token"] is None  # the Gemini key stayed with Google's API


def test_a_multipart_image_through_the_sdk_reaches_veo_as_the_instance_image(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, traffic: SdkTraffic
) -> None:
    relay = relay_process()
    add_veo_account(relay, sandbox, "veo")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create(model=VEO, prompt="Animate this picture", input_reference=("ref.png", PNG, "image/png"))
    assert video.status in OPENAI_STATUSES
    [sent] = [r for r in traffic.requests if r.method == "POST"]
    assert sent.headers["content-type"].startswith("multipart/form-data")

    [created] = creates(sandbox)
    assert created["path"] == f"/v1beta/models/{VEO}:predictLongRunning"
    instance = recorded_body(created)["instances"][0]
    assert instance["prompt"] == "Animate this picture"
    assert instance["image"] == {"bytesBase64Encoded": base64.b64encode(PNG).decode("ascii"), "mimeType": "image/png"}


@pytest.mark.parametrize(("marker", "code"), [("[fail]", "video_generation_failed"), ("[filtered]", "moderation_blocked")])
def test_a_failed_or_filtered_veo_operation_ends_failed_with_an_error_code(
    relay_process: Any, sandbox: Sandbox, make_sdk: Any, marker: str, code: str
) -> None:
    relay = relay_process()
    add_veo_account(relay, sandbox, "veo")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(model=VEO, prompt=f"A storm at sea {marker}", poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "failed"
    assert video.error is not None and video.error.code == code and video.error.message
    with pytest.raises(openai.ConflictError) as refused:
        client.videos.download_content(video.id)
    assert refused.value.code == "video_failed"


def test_a_resource_exhausted_veo_account_fails_over_and_rests(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_veo_account(relay, sandbox, "first", "--priority", "1")
    add_veo_account(relay, sandbox, "second", "--priority", "2")
    client = make_sdk(relay, relay.issue_key("alice"))
    # Google's RESOURCE_EXHAUSTED with a RetryInfo, for the first account's key only, once.
    sandbox.fault(preset="rate_limited", resets_in_seconds=42, provider="gemini", token=gemini_key("first"), times=1)

    video = client.videos.create_and_poll(model=VEO, prompt="A lighthouse in a storm", poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "completed"
    assert [r["token"] for r in creates(sandbox)] == [gemini_key("first"), gemini_key("second")]
    [rule] = httpx.get(f"{sandbox.url}/_sandbox/faults").json()
    assert rule["hits"] == 1
    # The video lives on the account that made it: every later call went there.
    polls = [r for r in sandbox.requests() if r["method"] == "GET"]
    assert polls and {r["token"] for r in polls} == {gemini_key("second")}

    accounts = accounts_by_name(relay)
    assert accounts["first"]["state"] == "rate_limited" and accounts["first"]["until"] is not None
    assert accounts["second"]["state"] == "active"


# --------------------------------------------------------------------------- a mixed pool


def test_a_mixed_pool_routes_each_model_to_an_account_that_serves_it(relay_process: Any, sandbox: Sandbox, make_sdk: Any) -> None:
    relay = relay_process()
    add_account(relay, "oai", "openai-responses", f"{sandbox.url}/v1", "tok-oai", "--models", SORA)
    add_account(relay, "az", "azure-openai", f"{sandbox.url}/openai/v1", "azure-key-az", "--models", SORA)
    add_veo_account(relay, sandbox, "veo")
    client = make_sdk(relay, relay.issue_key("alice"))
    contract_accounts = {("/v1/videos", "tok-oai"), ("/openai/v1/videos", "azure-key-az")}

    for _ in range(2):
        sandbox.reset()
        sora = client.videos.create_and_poll(model=SORA, prompt="Surfers at sunrise", poll_interval_ms=POLL_INTERVAL_MS)
        assert sora.status == "completed" and sora.model == SORA
        [created] = creates(sandbox)
        assert (created["path"], created["token"]) in contract_accounts
        # Polls went to the same OpenAI-contract account, none to Google.
        assert {r["token"] for r in sandbox.requests()} == {created["token"]}

        sandbox.reset()
        veo = client.videos.create_and_poll(model=VEO, prompt="A lighthouse in a storm", poll_interval_ms=POLL_INTERVAL_MS)
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
    add_account(relay, "az", "azure-openai", f"{sandbox.url}/openai/v1", "azure-key-az")
    client = make_sdk(relay, relay.issue_key("alice"))

    video = client.videos.create_and_poll(
        model=SORA, prompt=f"Surfers at sunrise [bytes={PADDED_BYTES}]", poll_interval_ms=POLL_INTERVAL_MS
    )
    assert video.status == "completed" and video.model == SORA
    assert set(traffic.statuses) <= OPENAI_STATUSES
    downloaded = client.videos.download_content(video.id).read()

    recorded = sandbox.requests()
    assert recorded and all(r["path"].startswith("/openai/v1/videos") for r in recorded)
    for record in recorded:
        assert header_values(record, "api-key") == ["azure-key-az"], record
        assert header_values(record, "authorization") == [], record
    # Fetched again straight from the Azure emulator, with the account's own key.
    [upstream] = [r for r in recorded if r["path"].endswith("/content")]
    served = httpx.get(f"{sandbox.url}{upstream['path']}", headers={"api-key": "azure-key-az"})
    assert served.status_code == 200
    assert downloaded == served.content
    assert len(downloaded) == PADDED_BYTES and downloaded.startswith(SAMPLE)
