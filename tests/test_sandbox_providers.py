"""Tests of the sandbox's Azure and Gemini emulators (relay/sandbox/azure.py, gemini.py, storage.py).

In-process ASGI clients for the shapes and the lifecycle; one real socket for Gemini's download
redirect; the session's `python -m relay.sandbox` process for one port serving every provider.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from conftest import ManualClock, Sandbox
from starlette.testclient import TestClient

from relay.sandbox import create_sandbox_app

ASSETS = Path(__file__).resolve().parent.parent / "relay" / "sandbox_assets"
SAMPLE_MP4 = (ASSETS / "sample.mp4").read_bytes()

AZURE_KEY = "azure-key-alpha"
AZURE = {"api-key": AZURE_KEY}
ACCESS_DENIED = {
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
        "active subscription and use a correct regional API endpoint for your resource.",
    }
}

GEMINI_KEY = "gemini-key-alpha"
GEMINI = {"x-goog-api-key": GEMINI_KEY}
OTHER_GEMINI = {"x-goog-api-key": "gemini-key-beta"}
MODEL = "veo-3.0-generate-001"
PREDICT = f"/v1beta/models/{MODEL}:predictLongRunning"
RESPONSE_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_sandbox_app(complete_after_seconds=0))


def add_fault(client: TestClient, **rule: Any) -> str:
    response = client.post("/_sandbox/faults", json=rule)
    assert response.status_code == 200, response.text
    rule_id: str = response.json()["id"]
    return rule_id


def last_request(client: TestClient) -> dict[str, Any]:
    record: dict[str, Any] = client.get("/_sandbox/requests").json()[-1]
    return record


def veo_body(prompt: str = "a calico cat", **parameters: Any) -> dict[str, Any]:
    return {"instances": [{"prompt": prompt}], "parameters": parameters}


def start_operation(client: TestClient, prompt: str = "a calico cat", headers: dict[str, str] = GEMINI, **parameters: Any) -> str:
    response = client.post(PREDICT, json=veo_body(prompt, **parameters), headers=headers)
    assert response.status_code == 200, response.text
    name: str = response.json()["name"]
    return name


def finished(client: TestClient, name: str, headers: dict[str, str] = GEMINI) -> dict[str, Any]:
    response = client.get(f"/v1beta/{name}", headers=headers)
    assert response.status_code == 200, response.text
    operation: dict[str, Any] = response.json()
    assert operation["done"] is True
    return operation


def sample_uris(operation: dict[str, Any]) -> list[str]:
    return [sample["video"]["uri"] for sample in operation["response"]["generateVideoResponse"]["generatedSamples"]]


def assert_google_error(response: httpx.Response, code: int, status: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["status"]) == (code, status)
    assert isinstance(error["message"], str) and error["message"]
    return error


def storage_link(client: TestClient, uri: str, headers: dict[str, str] = GEMINI) -> str:
    response = client.get(uri, headers=headers, follow_redirects=False)
    assert response.status_code == 302, response.text
    location: str = response.headers["location"]
    return location


# --------------------------------------------------------------------------- Azure


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {AZURE_KEY}"}, {"api-key": ""}])
def test_azure_takes_the_api_key_header_only(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/openai/v1/videos", json={"prompt": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == ACCESS_DENIED
    assert client.get("/openai/v1/videos", headers=headers).json() == ACCESS_DENIED


def test_azure_serves_the_contract_and_records_the_api_key_as_token(client: TestClient) -> None:
    video = client.post("/openai/v1/videos", json={"prompt": "a cat", "seconds": "8"}, headers=AZURE).json()
    assert (video["object"], video["status"], video["seconds"]) == ("video", "queued", "8")
    assert re.fullmatch(r"video_[0-9a-f]{32}", video["id"])
    created = last_request(client)
    assert (created["method"], created["path"], created["token"]) == ("POST", "/openai/v1/videos", AZURE_KEY)
    done = client.get(f"/openai/v1/videos/{video['id']}", headers=AZURE)
    assert done.json()["status"] == "completed"
    assert done.headers["apim-request-id"] == done.headers["x-request-id"]
    content = client.get(f"/openai/v1/videos/{video['id']}/content", headers={**AZURE, "Range": "bytes=0-9"})
    assert (content.status_code, content.content) == (206, SAMPLE_MP4[:10])


def test_azure_jobs_are_azures_own_and_per_key(client: TestClient) -> None:
    video = client.post("/openai/v1/videos", json={"prompt": "x"}, headers=AZURE).json()
    # The same string as an OpenAI bearer token, or another Azure key, does not reach Azure's job.
    assert client.get(f"/v1/videos/{video['id']}", headers={"Authorization": f"Bearer {AZURE_KEY}"}).status_code == 404
    assert client.get(f"/openai/v1/videos/{video['id']}", headers={"api-key": "azure-key-beta"}).status_code == 404
    assert [item["id"] for item in client.get("/openai/v1/videos", headers=AZURE).json()["data"]] == [video["id"]]


def test_azure_unknown_path_is_azures_404(client: TestClient) -> None:
    response = client.get("/openai/v1/nothing-here", headers=AZURE)
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_azure_through_the_official_sdk_with_an_api_key_header() -> None:
    app = create_sandbox_app(complete_after_seconds=0)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http_client:
            sdk = openai.AsyncOpenAI(
                api_key="not-the-azure-key",
                base_url="http://sandbox/openai/v1",
                default_headers=AZURE,
                http_client=http_client,  # type: ignore[arg-type]
                max_retries=0,
            )
            video = await sdk.videos.create(prompt="sdk cat")
            assert (await sdk.videos.retrieve(video.id)).status == "completed"
            assert (await sdk.videos.download_content(video.id)).content == SAMPLE_MP4

    asyncio.run(scenario())
    assert {record["token"] for record in app.state.sandbox.requests} == {AZURE_KEY}


def test_azure_rate_limited_preset_carries_retry_after_ms(client: TestClient) -> None:
    add_fault(client, preset="rate_limited", resets_in_seconds=2.5)
    response = client.post("/openai/v1/videos", json={"prompt": "x"}, headers=AZURE)
    assert response.status_code == 429
    assert (response.headers["retry-after-ms"], response.headers["retry-after"]) == ("2500", "3")
    error = response.json()["error"]
    assert error["code"] == "429" and "Please retry after 3 seconds" in error["message"]
    # The same rule answers the OpenAI contract in OpenAI's words, and lists them.
    openai_reply = client.post("/v1/videos", json={"prompt": "x"}, headers={"Authorization": "Bearer sk-x"})
    assert openai_reply.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after-ms" not in openai_reply.headers
    [rule] = client.get("/_sandbox/faults").json()
    assert rule["body"]["error"]["code"] == "rate_limit_exceeded" and rule["hits"] == 2
    assert "provider_replies" not in rule


def test_azure_quota_and_unauthorized_presets(client: TestClient) -> None:
    add_fault(client, preset="unauthorized", times=1)
    assert client.get("/openai/v1/videos", headers=AZURE).json() == ACCESS_DENIED
    add_fault(client, preset="insufficient_quota", times=1)
    quota = client.get("/openai/v1/videos", headers=AZURE)
    assert (quota.status_code, quota.headers["retry-after"], quota.headers["retry-after-ms"]) == (429, "86400", "86400000")


# --------------------------------------------------------------------------- Gemini: auth and shapes


def test_gemini_without_a_key_is_permission_denied_and_a_bearer_is_unauthenticated(client: TestClient) -> None:
    assert_google_error(client.post(PREDICT, json=veo_body()), 403, "PERMISSION_DENIED")
    error = assert_google_error(client.post(PREDICT, json=veo_body(), headers={"Authorization": "Bearer x"}), 401, "UNAUTHENTICATED")
    assert error["details"][0]["reason"] == "ACCESS_TOKEN_TYPE_UNSUPPORTED"


def test_gemini_key_in_header_or_query_is_the_recorded_token(client: TestClient) -> None:
    name = start_operation(client)
    assert re.fullmatch(rf"models/{MODEL}/operations/[a-z0-9]{{12}}", name)
    assert last_request(client)["token"] == GEMINI_KEY
    response = client.get(f"/v1beta/{name}?key={GEMINI_KEY}")
    assert response.status_code == 200
    assert last_request(client)["token"] == GEMINI_KEY


def test_gemini_operation_runs_until_complete_after_then_names_its_samples() -> None:
    clock = ManualClock()
    client = TestClient(create_sandbox_app(complete_after_seconds=10, clock=clock))
    name = start_operation(client, aspectRatio="9:16", resolution="1080p", durationSeconds=8, negativePrompt="dogs")
    clock.now = 1009.9
    # proto3 JSON leaves a false `done` out, as Google does.
    assert client.get(f"/v1beta/{name}", headers=GEMINI).json() == {"name": name}
    clock.now = 1010.0
    operation = finished(client, name)
    [uri] = sample_uris(operation)
    file_id = re.fullmatch(r"http://testserver/v1beta/files/([a-z0-9]{12}):download\?alt=media", uri)
    assert file_id is not None
    assert operation == {
        "name": name,
        "done": True,
        "response": {
            "@type": RESPONSE_TYPE,
            "generateVideoResponse": {"generatedSamples": [{"video": {"uri": uri}}]},
        },
    }


def test_gemini_operations_are_per_key_and_per_model(client: TestClient) -> None:
    name = start_operation(client)
    assert_google_error(client.get(f"/v1beta/{name}", headers=OTHER_GEMINI), 404, "NOT_FOUND")
    assert_google_error(client.get(f"/v1beta/{name.replace(MODEL, 'veo-2.0-generate-001')}", headers=GEMINI), 404, "NOT_FOUND")


def test_gemini_image_to_video_and_several_samples(client: TestClient) -> None:
    body = {"instances": [{"image": {"bytesBase64Encoded": PNG, "mimeType": "image/png"}}], "parameters": {"sampleCount": 2}}
    response = client.post(PREDICT, json=body, headers=GEMINI)
    assert response.status_code == 200, response.text
    uris = sample_uris(finished(client, response.json()["name"]))
    assert len(set(uris)) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        {"instances": [{"prompt": "x"}], "config": {}},
        {"parameters": {}},
        {"instances": []},
        {"instances": [{"prompt": "x"}, {"prompt": "y"}]},
        {"instances": [{"prompt": "   "}]},
        {"instances": [{"prompt": 7}]},
        {"instances": [{"prompt": "x", "mask": {}}]},
        veo_body(aspectRatio="4:3"),
        veo_body(resolution="4k"),
        veo_body(durationSeconds=5),
        veo_body(durationSeconds=True),
        veo_body(sampleCount=0),
        veo_body(personGeneration="everyone"),
        veo_body(seed=7),
        veo_body(generateAudio=True),
        veo_body("[bytes=12]"),
        {"instances": [{"prompt": "x", "image": {"bytesBase64Encoded": "%%%", "mimeType": "image/png"}}]},
        {"instances": [{"prompt": "x", "image": {"bytesBase64Encoded": PNG, "mimeType": "image/gif"}}]},
        {"instances": [{"prompt": "x", "image": {"gcsUri": "gs://b/o.png", "mimeType": "image/png"}}]},
        {"instances": [{"prompt": "x", "referenceImages": [{"image": {"bytesBase64Encoded": PNG, "mimeType": "image/png"}}]}]},
    ],
)
def test_gemini_bad_bodies_are_invalid_argument(client: TestClient, body: bytes | dict[str, Any]) -> None:
    content = body if isinstance(body, bytes) else None
    payload = body if isinstance(body, dict) else None
    response = client.post(PREDICT, content=content, json=payload, headers={**GEMINI, "content-type": "application/json"})
    assert_google_error(response, 400, "INVALID_ARGUMENT")
    assert client.get("/_sandbox/stats").json()["requests_total"] == 1


def test_gemini_veo2_takes_its_own_durations_and_unknown_models_are_not_found(client: TestClient) -> None:
    veo2 = client.post("/v1beta/models/veo-2.0-generate-001:predictLongRunning", json=veo_body(durationSeconds=5), headers=GEMINI)
    assert veo2.status_code == 200, veo2.text
    unknown = client.post("/v1beta/models/gemini-2.5-flash:predictLongRunning", json=veo_body(), headers=GEMINI)
    error = assert_google_error(unknown, 404, "NOT_FOUND")
    assert "models/gemini-2.5-flash is not found" in error["message"]


def test_gemini_unknown_paths_get_googles_html_404(client: TestClient) -> None:
    for response in (client.get("/v1beta/nothing", headers=GEMINI), client.get(PREDICT, headers=GEMINI)):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "was not found on this server" in response.text


# --------------------------------------------------------------------------- Gemini: outcomes


def test_gemini_fail_marker_ends_the_operation_with_an_error(client: TestClient) -> None:
    name = start_operation(client, "a cat [fail]")
    operation = finished(client, name)
    assert set(operation) == {"name", "done", "error"}
    assert operation["error"]["code"] == 3 and operation["error"]["message"]


def test_gemini_filtered_marker_ends_with_rai_counts_and_no_samples(client: TestClient) -> None:
    name = start_operation(client, "a cat [filtered]")
    videos = finished(client, name)["response"]["generateVideoResponse"]
    assert set(videos) == {"raiMediaFilteredCount", "raiMediaFilteredReasons"}
    assert videos["raiMediaFilteredCount"] == 1 and len(videos["raiMediaFilteredReasons"]) == 1


# --------------------------------------------------------------------------- Gemini: downloads


def test_gemini_download_redirects_to_storage_that_needs_no_key(client: TestClient) -> None:
    [uri] = sample_uris(finished(client, start_operation(client)))
    location = storage_link(client, uri)
    assert re.fullmatch(r"http://testserver/_gcs/[a-z0-9]{12}\?expires=\d+&signature=[0-9a-f]{32}", location)
    whole = client.get(location)
    assert (whole.status_code, whole.content, whole.headers["content-type"]) == (200, SAMPLE_MP4, "video/mp4")
    stored = last_request(client)
    assert stored["path"].startswith("/_gcs/") and stored["token"] is None
    part = client.get(location, headers={"Range": "bytes=4-7"})
    assert (part.status_code, part.content, part.headers["content-range"]) == (206, b"ftyp", f"bytes 4-7/{len(SAMPLE_MP4)}")
    unsatisfiable = client.get(location, headers={"Range": f"bytes={len(SAMPLE_MP4)}-"})
    assert unsatisfiable.status_code == 416 and "<Code>InvalidRange</Code>" in unsatisfiable.text
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(SAMPLE_MP4)}"


def test_storage_records_a_key_that_follows_the_redirect(client: TestClient) -> None:
    [uri] = sample_uris(finished(client, start_operation(client)))
    # A client that follows the redirect with its key still gets the bytes; the log shows the leak.
    followed = client.get(uri, headers=GEMINI, follow_redirects=True)
    assert followed.content == SAMPLE_MP4
    stored = last_request(client)
    assert stored["path"].startswith("/_gcs/") and stored["token"] == GEMINI_KEY
    assert ["x-goog-api-key", GEMINI_KEY] in stored["headers"]
    client.get(storage_link(client, uri), headers={"Authorization": "Bearer leaked-token"})
    assert last_request(client)["token"] == "leaked-token"


def test_storage_links_are_signed_and_expire() -> None:
    clock = ManualClock()
    client = TestClient(create_sandbox_app(complete_after_seconds=0, clock=clock))
    [uri] = sample_uris(finished(client, start_operation(client)))
    location = storage_link(client, uri)
    forged = re.sub(r"signature=[0-9a-f]+", "signature=" + "0" * 32, location)
    denied = client.get(forged)
    assert denied.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in denied.text
    assert client.get(location.split("?")[0]).status_code == 403
    clock.now += 601
    expired = client.get(location)
    assert expired.status_code == 400 and "<Code>ExpiredToken</Code>" in expired.text
    assert client.get(storage_link(client, uri)).content == SAMPLE_MP4


def test_gemini_download_needs_the_owner_key_a_done_operation_and_alt_media() -> None:
    clock = ManualClock()
    client = TestClient(create_sandbox_app(complete_after_seconds=10, clock=clock))
    name = start_operation(client)
    clock.now += 10
    [uri] = sample_uris(finished(client, name))
    assert_google_error(client.get(uri, follow_redirects=False), 403, "PERMISSION_DENIED")
    assert_google_error(client.get(uri, headers=OTHER_GEMINI, follow_redirects=False), 403, "PERMISSION_DENIED")
    assert_google_error(client.get(uri.split("?")[0], headers=GEMINI, follow_redirects=False), 400, "INVALID_ARGUMENT")
    # Before the operation is done its files do not exist yet.
    early = start_operation(client)
    clock.now += 10
    [early_uri] = sample_uris(finished(client, early))
    clock.now -= 10
    assert_google_error(client.get(early_uri, headers=GEMINI, follow_redirects=False), 403, "PERMISSION_DENIED")


def test_gemini_bytes_marker_pads_the_download(client: TestClient) -> None:
    total = len(SAMPLE_MP4) + 1000
    [uri] = sample_uris(finished(client, start_operation(client, f"long [bytes={total}]")))
    data = client.get(storage_link(client, uri)).content
    assert len(data) == total and data[: len(SAMPLE_MP4)] == SAMPLE_MP4
    assert struct.unpack(">I4s", data[len(SAMPLE_MP4) : len(SAMPLE_MP4) + 8]) == (1000, b"free")


# --------------------------------------------------------------------------- Gemini: faults


def test_gemini_rate_limited_says_when_in_a_retry_info(client: TestClient) -> None:
    add_fault(client, preset="rate_limited", resets_in_seconds=1.5, times=1)
    response = client.post(PREDICT, json=veo_body(), headers=GEMINI)
    error = assert_google_error(response, 429, "RESOURCE_EXHAUSTED")
    [retry] = [detail for detail in error["details"] if detail["@type"] == RETRY_INFO]
    assert retry == {"@type": RETRY_INFO, "retryDelay": "1.5s"}
    assert "retry-after" not in response.headers
    add_fault(client, preset="rate_limited", times=1)
    default = assert_google_error(client.post(PREDICT, json=veo_body(), headers=GEMINI), 429, "RESOURCE_EXHAUSTED")
    assert {"@type": RETRY_INFO, "retryDelay": "7s"} in default["details"]


@pytest.mark.parametrize(
    ("preset", "code", "status"),
    [
        ("unauthorized", 400, "INVALID_ARGUMENT"),
        ("insufficient_quota", 429, "RESOURCE_EXHAUSTED"),
        ("payment_required", 400, "INVALID_ARGUMENT"),
        ("server_error", 500, "INTERNAL"),
    ],
)
def test_gemini_presets_use_googles_envelope(client: TestClient, preset: str, code: int, status: str) -> None:
    add_fault(client, preset=preset, provider="gemini")
    error = assert_google_error(client.get(f"/v1beta/models/{MODEL}/operations/abc", headers=GEMINI), code, status)
    assert not any(detail["@type"] == RETRY_INFO for detail in error.get("details", []))
    if preset == "unauthorized":
        assert error["details"][0]["reason"] == "API_KEY_INVALID"
    # `provider` keeps the rule off the other providers.
    assert client.get("/openai/v1/videos", headers=AZURE).status_code == 200


def test_fail_option_fails_every_provider_in_its_own_words() -> None:
    client = TestClient(create_sandbox_app(fail="429"))
    assert client.get("/v1/videos", headers={"Authorization": "Bearer sk-x"}).json()["error"]["type"] == "rate_limit_error"
    assert "retry-after-ms" in client.get("/openai/v1/videos", headers=AZURE).headers
    assert_google_error(client.post(PREDICT, json=veo_body(), headers=GEMINI), 429, "RESOURCE_EXHAUSTED")


def test_rules_match_by_provider_and_reject_unknown_ones(client: TestClient) -> None:
    add_fault(client, status=503, body={"error": "busy"}, provider="azure")
    assert client.get("/openai/v1/videos", headers=AZURE).status_code == 503
    assert client.get("/v1/videos", headers={"Authorization": "Bearer sk-x"}).status_code == 200
    assert client.post(PREDICT, json=veo_body(), headers=GEMINI).status_code == 200
    assert client.get("/_sandbox/faults").json()[0]["provider"] == "azure"
    assert client.post("/_sandbox/faults", json={"status": 500, "provider": "bedrock"}).status_code == 400


def test_gemini_reset_and_delay_faults(client: TestClient) -> None:
    add_fault(client, action="reset", times=1, provider="gemini")
    with pytest.raises(httpx.ReadError):
        client.post(PREDICT, json=veo_body(), headers=GEMINI)
    rule_id = add_fault(client, preset="slow", delay_seconds=0.01, token=GEMINI_KEY, times=1)
    assert client.post(PREDICT, json=veo_body(), headers=GEMINI).status_code == 200
    hits = {rule["id"]: rule["hits"] for rule in client.get("/_sandbox/faults").json()}
    assert hits[rule_id] == 1


# --------------------------------------------------------------------------- real sockets


@pytest.fixture(scope="module")
def live_sandbox() -> Iterator[str]:
    app = create_sandbox_app(complete_after_seconds=0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(5)
    sock.close()


def test_redirect_download_over_tcp(live_sandbox: str) -> None:
    with httpx.Client(base_url=live_sandbox) as http_client:
        name = http_client.post(PREDICT, json=veo_body(), headers=GEMINI).json()["name"]
        [uri] = sample_uris(http_client.get(f"/v1beta/{name}", headers=GEMINI).json())
        assert uri.startswith(f"{live_sandbox}/v1beta/files/")
        redirect = http_client.get(uri, headers=GEMINI)
        assert redirect.status_code == 302
        location = redirect.headers["location"]
        assert location.startswith(f"{live_sandbox}/_gcs/")
        with httpx.Client() as storage_client:  # a fresh client: nothing of the API's rides along
            whole = storage_client.get(location)
            tail = storage_client.get(location, headers={"Range": "bytes=-16"})
        assert whole.content == SAMPLE_MP4
        assert (tail.status_code, tail.content) == (206, SAMPLE_MP4[-16:])
        storage_requests = [r for r in http_client.get("/_sandbox/requests").json() if r["path"].startswith("/_gcs/")]
        assert len(storage_requests) == 2 and all(r["token"] is None for r in storage_requests)


def test_one_process_serves_every_provider(sandbox: Sandbox) -> None:
    openai_reply = httpx.post(f"{sandbox.url}/v1/videos", json={"prompt": "x"}, headers={"Authorization": "Bearer sk-one"})
    azure_reply = httpx.post(f"{sandbox.url}/openai/v1/videos", json={"prompt": "x"}, headers={"api-key": "az-one"})
    gemini_reply = httpx.post(f"{sandbox.url}{PREDICT}", json=veo_body(), headers={"x-goog-api-key": "g-one"})
    assert [openai_reply.status_code, azure_reply.status_code, gemini_reply.status_code] == [200, 200, 200]
    assert [(r["path"], r["token"]) for r in sandbox.requests()] == [
        ("/v1/videos", "sk-one"),
        ("/openai/v1/videos", "az-one"),
        (PREDICT, "g-one"),
    ]
