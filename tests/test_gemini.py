"""Gemini (Veo) accounts behind the OpenAI front door: the translation's mappings one by one, and
create / retrieve / content / delete / list end to end against the sandbox's Veo emulator."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import ROOT, TOKEN, Relay, Sandbox
from openai import OpenAI
from provider_scenarios import multipart, poll_until_done
from test_relay import CREATE, assert_envelope, auth

from relay.accounts import checked_input
from relay.errors import RelayError
from relay.outcomes import cooldown_seconds, google_retry_delay
from relay.providers import JOB_FIELD, account_type, gemini, public, translating
from relay.records import Account
from relay.upstream import provider_headers, storage_headers

V = "/openai/v1/videos"
VEO = "veo-3.0-generate-001"
VEO_CREATE = {"prompt": "A lighthouse in a storm", "model": VEO, "seconds": "8", "size": "1280x720"}
SAMPLE = (ROOT / "relay" / "sandbox_assets" / "sample.mp4").read_bytes()
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def payload_of(request: gemini.CreateRequest) -> dict[str, Any]:
    assert request.call.body is not None
    return json.loads(request.call.body)  # type: ignore[no-any-return]


def google(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": status, "status": code, "message": message}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


# --------------------------------------------------------------------------- the mappings


def test_a_json_create_becomes_predict_long_running() -> None:
    request = gemini.create_request(json.dumps({**VEO_CREATE, "negative_prompt": "rain"}).encode(), "application/json")
    assert (request.call.method, request.call.path) == ("POST", f"/models/{VEO}:predictLongRunning")
    assert payload_of(request) == {
        "instances": [{"prompt": "A lighthouse in a storm"}],
        "parameters": {"aspectRatio": "16:9", "resolution": "720p", "durationSeconds": 8, "negativePrompt": "rain"},
    }
    assert (request.model, request.size, request.seconds) == (VEO, "1280x720", "8")


@pytest.mark.parametrize(
    ("size", "aspect", "resolution"),
    [
        ("1280x720", "16:9", "720p"),
        ("720x1280", "9:16", "720p"),
        ("1920x1080", "16:9", "1080p"),
        ("1080x1920", "9:16", "1080p"),
        ("1792x1024", "16:9", "720p"),
    ],
)
def test_sizes_become_an_aspect_ratio_and_a_resolution(size: str, aspect: str, resolution: str) -> None:
    assert gemini.aspect_and_resolution(size) == (aspect, resolution)


@pytest.mark.parametrize("size", ["1024x1024", "big", "1280x", "0x720"])
def test_a_size_veo_cannot_render_is_the_clients_400(size: str) -> None:
    with pytest.raises(RelayError) as refused:
        gemini.aspect_and_resolution(size)
    assert refused.value.status == 400 and refused.value.param == "size"


def test_seconds_become_a_whole_duration_and_the_defaults_are_veos() -> None:
    assert gemini.duration_seconds("4") == 4 and gemini.duration_seconds(6) == 6
    for bad in ("4.5", "-1", "eight", True):
        with pytest.raises(RelayError):
            gemini.duration_seconds(bad)
    request = gemini.create_request(json.dumps({"prompt": "p", "model": f"models/{VEO}"}).encode(), "application/json")
    assert payload_of(request)["parameters"] == {"aspectRatio": "16:9", "resolution": "720p", "durationSeconds": 8}
    assert request.model == VEO


def test_input_reference_as_a_data_url_or_image_url_becomes_the_instance_image() -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    expected = {"bytesBase64Encoded": base64.b64encode(PNG).decode(), "mimeType": "image/png"}
    for reference in (data_url, {"image_url": data_url}):
        request = gemini.create_request(json.dumps({**VEO_CREATE, "input_reference": reference}).encode(), "application/json")
        assert payload_of(request)["instances"][0]["image"] == expected
    # An http(s) URL is left for the relay to fetch (relay.providers.images), then attached.
    for url in ("https://example.com/a.png", {"image_url": "https://example.com/a.png"}):
        pending = gemini.create_request(json.dumps({**VEO_CREATE, "input_reference": url}).encode(), "application/json")
        assert pending.image_url == "https://example.com/a.png" and "image" not in payload_of(pending)["instances"][0]
        assert payload_of(gemini.with_image(pending, PNG, "image/png"))["instances"][0]["image"] == expected
    for bad in ("ftp://example.com/a.png", {"file_id": "file_1"}, "data:text/plain;base64,aGk="):
        with pytest.raises(RelayError) as refused:
            gemini.create_request(json.dumps({**VEO_CREATE, "input_reference": bad}).encode(), "application/json")
        assert refused.value.param == "input_reference"


def test_a_multipart_create_with_an_uploaded_image() -> None:
    body, content_type = multipart({**VEO_CREATE, "size": "720x1280"}, PNG)
    payload = payload_of(gemini.create_request(body, content_type))
    assert payload["instances"] == [
        {"prompt": "A lighthouse in a storm", "image": {"bytesBase64Encoded": base64.b64encode(PNG).decode(), "mimeType": "image/png"}}
    ]
    assert payload["parameters"]["aspectRatio"] == "9:16"


def test_fields_veo_cannot_carry_are_refused_by_name() -> None:
    with pytest.raises(RelayError) as refused:
        gemini.create_request(json.dumps({**VEO_CREATE, "character_ids": ["c"]}).encode(), "application/json")
    assert refused.value.param == "character_ids"
    with pytest.raises(RelayError) as refused:
        gemini.create_request(json.dumps({**VEO_CREATE, "model": "../x"}).encode(), "application/json")
    assert refused.value.param == "model"


NAME = f"models/{VEO}/operations/abc123"


def test_the_create_answer_keeps_the_operation_privately() -> None:
    request = gemini.create_request(json.dumps(VEO_CREATE).encode(), "application/json")
    video = gemini.created(json.dumps({"name": NAME}).encode(), request, "video_1", 100.0)
    assert video is not None and video[JOB_FIELD] == {"operation": NAME}
    assert public(video) == {
        "id": "video_1",
        "object": "video",
        "model": VEO,
        "status": "queued",
        "progress": 0,
        "created_at": 100,
        "completed_at": None,
        "expires_at": None,
        "size": "1280x720",
        "seconds": "8",
        "remixed_from_video_id": None,
        "prompt": "A lighthouse in a storm",
        "error": None,
    }
    assert gemini.poll_call(video) == gemini.UpstreamCall("GET", f"/{NAME}")
    assert gemini.created(b'{"name": "../../etc"}', request, "video_1", 100.0) is None


def test_an_operation_maps_to_the_openai_status() -> None:
    video = {"id": "video_1", "status": "queued", JOB_FIELD: {"operation": NAME}}
    running = gemini.job_state(video, json.dumps({"name": NAME}).encode(), 5.0)
    assert running is not None and running["status"] == "in_progress"
    uri = "http://host/v1beta/files/f1:download?alt=media"
    done = {"name": NAME, "done": True, "response": {"generateVideoResponse": {"generatedSamples": [{"video": {"uri": uri}}]}}}
    completed = gemini.job_state(video, json.dumps(done).encode(), 5.0)
    assert completed is not None and (completed["status"], completed["progress"], completed["error"]) == ("completed", 100, None)
    assert gemini.content_url(json.dumps(done).encode()) == uri
    failed = gemini.job_state(video, json.dumps({"name": NAME, "done": True, "error": {"code": 3, "message": "nope"}}).encode(), 5.0)
    assert failed is not None and failed["status"] == "failed"
    assert failed["error"] == {"code": "video_generation_failed", "message": "nope"}
    filtered = {
        "name": NAME,
        "done": True,
        "response": {"generateVideoResponse": {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": ["unsafe"]}},
    }
    blocked = gemini.job_state(video, json.dumps(filtered).encode(), 5.0)
    assert blocked is not None and blocked["status"] == "failed" and blocked["error"] == {"code": "moderation_blocked", "message": "unsafe"}
    assert gemini.content_url(json.dumps(filtered).encode()) is None
    assert gemini.job_state(video, b"not json", 5.0) is None


def test_googles_errors_become_the_openai_envelope_with_the_status_the_account_follows() -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7.5s"}
    limited = gemini.error(429, google(429, "RESOURCE_EXHAUSTED", "quota", [retry]), creating=True)
    assert limited.status == 429 and limited.body["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers == {"retry-after-ms": "7500", "retry-after": "8"}
    key_invalid = google(400, "INVALID_ARGUMENT", "API key not valid.", [{"reason": "API_KEY_INVALID"}])
    assert gemini.error(400, key_invalid, creating=False).status == 401
    assert gemini.error(401, google(401, "UNAUTHENTICATED", "no"), creating=True).status == 401
    assert gemini.error(403, google(403, "PERMISSION_DENIED", "no"), creating=True).status == 401
    assert gemini.error(403, google(403, "PERMISSION_DENIED", "no"), creating=False).status == 403
    assert (
        gemini.error(400, google(400, "INVALID_ARGUMENT", "Veo is only accessible to billed users at this time."), creating=True).status
        == 402
    )
    invalid = gemini.error(400, google(400, "INVALID_ARGUMENT", "`durationSeconds` must be one of 4, 6, 8."), creating=True)
    assert invalid.status == 400 and invalid.body["error"]["param"] == "seconds"
    assert set(invalid.body["error"]) == {"message", "type", "param", "code"}
    missing = gemini.error(404, google(404, "NOT_FOUND", "models/x is not found"), creating=True)
    assert missing.status == 400 and missing.body["error"]["param"] == "model"
    assert gemini.error(500, b"<html>", creating=True).status == 500


def test_retry_info_is_a_cooldown_hint() -> None:
    body = google(429, "RESOURCE_EXHAUSTED", "q", [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "42s"}])
    assert google_retry_delay(body) == 42.0
    assert cooldown_seconds({}, body, now=0.0, default=60.0, maximum=3600.0) == (42.0, "retry_info")
    assert google_retry_delay(google(429, "RESOURCE_EXHAUSTED", "q")) is None


def test_a_gemini_account_sends_its_key_as_x_goog_api_key_and_storage_gets_no_key() -> None:
    assert dict(provider_headers(account_type("gemini").auth("AIza-key"), json_body=True)) == {
        b"x-goog-api-key": b"AIza-key",
        b"accept-encoding": b"identity",
        b"content-type": b"application/json",
    }
    client = [(b"authorization", b"Bearer rk"), (b"range", b"bytes=0-9"), (b"x-goog-api-key", b"k")]
    assert storage_headers(client) == [(b"range", b"bytes=0-9"), (b"accept-encoding", b"identity")]
    assert account_type("gemini").translation is gemini.GEMINI and account_type("openai-responses").translation is None


def account(type: str, models: tuple[str, ...] | None = None) -> Account:
    return Account(1, "a", type, "http://x", 1, True, "active", None, None, None, None, None, 0.0, "", models=models)


def test_a_veo_account_without_a_list_serves_veo_models_only_and_openai_ones_everything_else() -> None:
    assert account("gemini").serves(VEO) and not account("gemini").serves("sora-2")
    for kind in ("openai-responses", "openai", "azure-openai"):
        assert account(kind).serves("sora-2") and not account(kind).serves(VEO)
    assert account("gemini", ("custom",)).serves("custom")


def test_the_default_base_is_googles() -> None:
    _, base = checked_input(name="v", type="gemini", credential="AIza", base_api=None, priority=100, proxy=None)
    assert base == "https://generativelanguage.googleapis.com/v1beta"


def test_relayctl_adds_a_gemini_account(cli: Any) -> None:
    added = json.loads(cli("accounts", "add", "v", "--type", "gemini", "--token-stdin", "--json", input=TOKEN).output)
    assert added["type"] == "gemini"
    listed = json.loads(cli("accounts", "list", "--json").output)
    assert [(a["name"], a["type"], a["base_api"]) for a in listed] == [("v", "gemini", "https://generativelanguage.googleapis.com/v1beta")]


# --------------------------------------------------------------------------- end to end


def veo_account(relay: Relay, sandbox: Sandbox, name: str = "veo", priority: int = 100) -> None:
    relay.add_account(name, f"{sandbox.url}/v1beta", token=f"AIza-{name}-key-0123456789", type="gemini", priority=priority)


def sdk(relay: Relay, key: str) -> OpenAI:
    return OpenAI(api_key=key, base_url=f"{relay.client.base_url}/openai/v1", http_client=relay.client, max_retries=0)


def test_the_sdk_creates_polls_downloads_and_lists_a_veo_video(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    client = sdk(relay, key)
    video = client.videos.create_and_poll(model=VEO, prompt="A lighthouse in a storm", seconds="8", size="1280x720", poll_interval_ms=100)
    assert video.status == "completed" and video.id.startswith("video_") and video.model == VEO
    content = client.videos.download_content(video.id)
    assert content.read() == SAMPLE
    ranged = relay.client.get(f"{V}/{video.id}/content", headers={**auth(key), "range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.content == SAMPLE[:8]
    listed = client.videos.list()
    assert [v.id for v in listed.data] == [video.id]
    assert JOB_FIELD not in relay.client.get(f"{V}/{video.id}", headers=auth(key)).json()
    assert JOB_FIELD not in relay.client.get(V, headers=auth(key)).json()["data"][0]
    recorded = sandbox.requests()
    created = next(r for r in recorded if r["path"].endswith(":predictLongRunning"))
    assert json.loads(base64.b64decode(created["body_b64"]))["parameters"] == {
        "aspectRatio": "16:9",
        "resolution": "720p",
        "durationSeconds": 8,
    }
    # The key went to Google's API only, never to the storage its download redirected to.
    assert {r["token"] for r in recorded if not r["path"].startswith("/_gcs")} == {"AIza-veo-key-0123456789"}
    storage = [r for r in recorded if r["path"].startswith("/_gcs")]
    assert storage and all(r["token"] is None for r in storage)
    assert all(name.lower() != "authorization" for r in recorded for name, _ in r["headers"])
    deleted = client.videos.delete(video.id)
    assert deleted.deleted is True
    assert relay.client.get(f"{V}/{video.id}", headers=auth(key)).status_code == 404
    assert client.videos.list().data == []


def test_a_multipart_create_with_an_image_through_the_sdk(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    video = sdk(relay, key).videos.create(model=VEO, prompt="Animate this", input_reference=("a.png", PNG, "image/png"))
    assert video.status == "queued"
    created = next(r for r in sandbox.requests() if r["path"].endswith(":predictLongRunning"))
    instance = json.loads(base64.b64decode(created["body_b64"]))["instances"][0]
    assert instance["image"] == {"bytesBase64Encoded": base64.b64encode(PNG).decode(), "mimeType": "image/png"}


@pytest.mark.parametrize(("marker", "code"), [("[fail]", "video_generation_failed"), ("[filtered]", "moderation_blocked")])
def test_a_failed_or_filtered_operation_is_failed_with_an_error(relay: Relay, sandbox: Sandbox, marker: str, code: str) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    created = relay.client.post(V, json={**VEO_CREATE, "prompt": f"A storm {marker}"}, headers=auth(key))
    assert created.status_code == 200, created.text
    finished = poll_until_done(relay, key, created.json()["id"])
    assert finished["status"] == "failed" and finished["error"]["code"] == code and finished["error"]["message"]
    refused = relay.client.get(f"{V}/{created.json()['id']}/content", headers=auth(key))
    assert_envelope(refused, 409, "video_failed")


def test_content_before_completion_is_a_clear_409(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    created = relay.client.post(V, json=VEO_CREATE, headers=auth(key)).json()
    early = relay.client.get(f"{V}/{created['id']}/content", headers=auth(key))
    assert_envelope(early, 409, "video_not_ready")


def test_a_429_with_retry_info_rests_the_account_and_fails_over(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox, "first", priority=1)
    veo_account(relay, sandbox, "second", priority=2)
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=42, provider="gemini", token="AIza-first-key-0123456789", times=1)
    created = relay.client.post(V, json=VEO_CREATE, headers=auth(key))
    assert created.status_code == 200, created.text
    first = relay.state.store.account("first")
    assert first.state == "rate_limited" and first.state_reason == "upstream 429 (cooldown from retry_info)"
    assert first.state_until is not None and first.state_since is not None
    assert first.state_until - first.state_since == pytest.approx(42)
    assert [r["token"] for r in sandbox.requests()] == ["AIza-first-key-0123456789", "AIza-second-key-0123456789"]


def test_a_lone_rate_limited_account_answers_the_openai_429(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=9, provider="gemini", times=1)
    limited = relay.client.post(V, json=VEO_CREATE, headers=auth(key))
    error = assert_envelope(limited, 429, "rate_limit_exceeded")
    assert limited.headers["retry-after-ms"] == "9000" and "RESOURCE_EXHAUSTED" not in json.dumps(error)


def test_an_invalid_key_takes_the_account_out_of_rotation(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    sandbox.fault(preset="unauthorized", provider="gemini", times=1)
    refused = relay.client.post(V, json=VEO_CREATE, headers=auth(key))
    assert_envelope(refused, 503, "upstream_account_unauthorized")
    assert relay.state.store.account("veo").state == "unauthorized"


def test_invalid_argument_is_the_clients_400_naming_the_param(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    refused = relay.client.post(V, json={**VEO_CREATE, "seconds": "12"}, headers=auth(key))
    error = assert_envelope(refused, 400)
    assert error["param"] == "seconds" and "durationSeconds" in error["message"]
    assert relay.state.store.account("veo").state == "active"


def test_a_mixed_pool_routes_each_model_to_its_provider(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("sora", sandbox.base_api(), token="tok-sora", priority=1)
    veo_account(relay, sandbox, priority=2)
    key = relay.issue_key()
    for body, path_start in ((CREATE, "/v1/videos"), (VEO_CREATE, f"/v1beta/models/{VEO}"), (CREATE, "/v1/videos")):
        sandbox.reset()
        answer = relay.client.post(V, json=body, headers=auth(key))
        assert answer.status_code == 200, answer.text
        assert [r["path"][: len(path_start)] for r in sandbox.requests()] == [path_start]


def test_remix_of_a_veo_video_is_a_400_naming_the_account_type(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    video_id = relay.client.post(V, json=VEO_CREATE, headers=auth(key)).json()["id"]
    sandbox.reset()
    refused = relay.client.post(f"{V}/{video_id}/remix", json={"prompt": "again"}, headers=auth(key))
    error = assert_envelope(refused, 400, "unsupported_for_account_type")
    assert "gemini" in error["message"]
    assert sandbox.requests() == []


def test_a_repeated_create_with_an_idempotency_key_starts_one_operation(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    headers = {**auth(key), "Idempotency-Key": "veo-1"}
    first = relay.client.post(V, json=VEO_CREATE, headers=headers)
    again = relay.client.post(V, json=VEO_CREATE, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert first.json() == again.json() and JOB_FIELD not in again.json()
    assert len([r for r in sandbox.requests() if r["path"].endswith(":predictLongRunning")]) == 1


def test_a_veo_video_has_no_thumbnail(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    video_id = relay.client.post(V, json=VEO_CREATE, headers=auth(key)).json()["id"]
    refused = relay.client.get(f"{V}/{video_id}/content?variant=thumbnail", headers=auth(key))
    assert assert_envelope(refused, 400, "invalid_variant")["param"] == "variant"


def test_the_key_goes_only_to_the_accounts_own_origin() -> None:
    base = "https://generativelanguage.googleapis.com/v1beta"
    assert translating._same_origin("https://generativelanguage.googleapis.com/v1beta/files/x:download?alt=media", base)
    assert not translating._same_origin("https://elsewhere.example/v1beta/files/x", base)
    assert not translating._same_origin("http://generativelanguage.googleapis.com/v1beta/files/x", base)


def test_a_daily_quota_is_insufficient_quota_which_clients_do_not_retry(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    sandbox.fault(preset="insufficient_quota", provider="gemini", times=1)
    spent = relay.client.post(V, json=VEO_CREATE, headers=auth(key))
    assert_envelope(spent, 429, "insufficient_quota")
    assert spent.headers["x-should-retry"] == "false"
    assert relay.state.store.account("veo").state == "rate_limited"
