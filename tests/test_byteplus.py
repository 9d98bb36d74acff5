"""BytePlus ModelArk (Seedance) accounts: the translation's mappings one by one, and the sandbox's
emulator of the tasks API (in process, on a clock the tests move)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import ManualClock
from hypothesis import given, settings, strategies as st
from starlette.testclient import TestClient

from relay.accounts import checked_input
from relay.errors import RelayError
from relay.outcomes import answer_class, cooldown_seconds
from relay.pricing import DEFAULT_PRICES
from relay.providers import JOB_FIELD, account_type, byteplus, public, translating, unsupported_message
from relay.providers.byteplus import BYTEPLUS, ratio_and_resolution
from relay.records import Account
from relay.sandbox import create_sandbox_app
from relay.upstream import provider_headers

PRO = "seedance-1-0-pro-250528"
LITE_T2V = "seedance-1-0-lite-t2v-250428"
LITE_I2V = "seedance-1-0-lite-i2v-250428"
CREATE = {"prompt": "A red fox in fresh snow", "model": PRO, "seconds": "5", "size": "1280x720"}
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
KEY = "ark-sandbox-key-alpha"
BEARER = {"Authorization": f"Bearer {KEY}"}
TASKS = "/byteplus/api/v3/contents/generations/tasks"


def payload_of(request: byteplus.CreateRequest) -> dict[str, Any]:
    assert request.call.body is not None
    return json.loads(request.call.body)  # type: ignore[no-any-return]


def create(fields: dict[str, Any]) -> byteplus.CreateRequest:
    return byteplus.create_request(json.dumps(fields).encode(), "application/json")


def ark(status: int, code: str, message: str, param: str = "", kind: str = "BadRequest") -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "param": param, "type": kind}}).encode()


def task(status: str, **extra: Any) -> bytes:
    return json.dumps({"id": "cgt-1", "model": PRO, "status": status, "error": None, **extra}).encode()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "relay-test-boundary"
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, data, kind) in files.items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: {kind}\r\n\r\n'.encode()
        )
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------- the create


def test_a_json_create_becomes_a_task_with_text_ratio_resolution_and_duration() -> None:
    request = create({**CREATE, "seed": 7, "camera_fixed": True})
    assert (request.call.method, request.call.path) == ("POST", "/contents/generations/tasks")
    assert payload_of(request) == {
        "model": PRO,
        "content": [{"type": "text", "text": "A red fox in fresh snow"}],
        "ratio": "16:9",
        "resolution": "720p",
        "duration": 5,
        "seed": 7,
        "camera_fixed": True,
    }
    assert (request.model, request.size, request.seconds, request.prompt, request.image_url) == (
        PRO,
        "1280x720",
        "5",
        CREATE["prompt"],
        None,
    )


def test_the_defaults_are_seedances_16_9_at_720p_for_5_seconds() -> None:
    request = create({"prompt": "A fox", "model": PRO})
    assert {key: payload_of(request)[key] for key in ("ratio", "resolution", "duration")} == {
        "ratio": "16:9",
        "resolution": "720p",
        "duration": 5,
    }
    assert (request.size, request.seconds) == ("1280x720", "5")
    assert account_type("byteplus").default_seconds == 5.0


@pytest.mark.parametrize(
    ("size", "ratio", "resolution"),
    [
        ("1280x720", "16:9", "720p"),
        ("720x1280", "9:16", "720p"),
        ("1920x1080", "16:9", "1080p"),
        ("1080x1920", "9:16", "1080p"),
        ("1792x1024", "16:9", "720p"),
        ("1024x1792", "9:16", "720p"),
        ("864x480", "16:9", "480p"),
        ("1024x1024", "1:1", "720p"),
        ("960x720", "4:3", "720p"),
        ("720x960", "3:4", "720p"),
        ("2520x1080", "21:9", "1080p"),
    ],
)
def test_sizes_become_a_ratio_and_a_resolution(size: str, ratio: str, resolution: str) -> None:
    assert ratio_and_resolution(size) == (ratio, resolution)


@pytest.mark.parametrize("size", ["1280x1000", "big", "0x720", "1280*720", "4000x100"])
def test_a_size_seedance_has_no_ratio_for_is_the_clients_400(size: str) -> None:
    with pytest.raises(RelayError) as refused:
        create({**CREATE, "size": size})
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "size", "invalid_value")


@given(st.integers(16, 8000), st.integers(16, 8000))
@settings(max_examples=200, deadline=None)
def test_any_size_is_a_known_ratio_and_resolution_or_a_400(width: int, height: int) -> None:
    try:
        ratio, resolution = ratio_and_resolution(f"{width}x{height}")
    except RelayError as refused:
        assert refused.status == 400 and refused.param == "size"
        return
    assert ratio in byteplus.RATIOS and resolution in ("480p", "720p", "1080p")
    assert abs((width / height) / byteplus.RATIOS[ratio] - 1) <= byteplus.RATIO_TOLERANCE


@given(st.one_of(st.text(max_size=8), st.integers(-5, 2000), st.booleans(), st.floats(allow_nan=True)))
@settings(max_examples=200, deadline=None)
def test_seconds_are_a_whole_number_or_a_400(seconds: Any) -> None:
    try:
        request = create({**CREATE, "seconds": seconds})
    except RelayError as refused:
        assert refused.status == 400 and refused.param in ("seconds", None)
        return
    assert payload_of(request)["duration"] == int(str(seconds if seconds else 5).strip())


@given(st.binary(max_size=64), st.sampled_from(["application/json", "multipart/form-data; boundary=x", "text/plain", None]))
@settings(max_examples=200, deadline=None)
def test_any_body_is_a_task_or_a_clients_400(body: bytes, content_type: str | None) -> None:
    try:
        byteplus.create_request(body, content_type)
    except RelayError as refused:
        assert 400 <= refused.status < 500


def test_an_image_becomes_the_first_frame_as_a_data_url_or_an_image_url() -> None:
    for reference, url in [
        (PNG_URL, PNG_URL),
        ({"image_url": PNG_URL}, PNG_URL),
        ({"image_url": {"url": "https://images.example/fox.png"}}, "https://images.example/fox.png"),
        ("https://images.example/fox.png", "https://images.example/fox.png"),
        # BytePlus wants the media type in lower case.
        ("data:IMAGE/PNG;base64," + base64.b64encode(PNG).decode(), PNG_URL),
    ]:
        request = create({**CREATE, "input_reference": reference})
        assert payload_of(request)["content"][1] == {"type": "image_url", "image_url": {"url": url}, "role": "first_frame"}
        # BytePlus fetches an image URL itself: the relay fetches nothing.
        assert request.image_url is None


def test_a_multipart_create_with_an_uploaded_image_and_seedance_fields() -> None:
    body, kind = multipart({**CREATE, "watermark": "false", "seed": "42"}, {"input_reference": ("a.png", PNG, "image/png")})
    payload = payload_of(byteplus.create_request(body, kind))
    assert payload["content"] == [
        {"type": "text", "text": CREATE["prompt"]},
        {"type": "image_url", "image_url": {"url": PNG_URL}, "role": "first_frame"},
    ]
    assert (payload["watermark"], payload["seed"]) == (False, 42)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({**CREATE, "character_ids": ["c"]}, "character_ids"),
        ({**CREATE, "input_reference": "file-123"}, "input_reference"),
        ({**CREATE, "input_reference": "data:image/svg+xml;base64,PHN2Zz4="}, "input_reference"),
        ({**CREATE, "input_reference": "data:image/png;base64,@@@"}, "input_reference"),
        ({**CREATE, "input_reference": 7}, "input_reference"),
        ({**CREATE, "prompt": " "}, "prompt"),
        ({**CREATE, "model": "bad model"}, "model"),
        ({**CREATE, "camera_fixed": "sometimes"}, "camera_fixed"),
        ({**CREATE, "seed": "x"}, "seed"),
        ({**CREATE, "seconds": "4.5"}, "seconds"),
    ],
)
def test_what_seedance_cannot_carry_is_a_400_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(RelayError) as refused:
        create(fields)
    assert (refused.value.status, refused.value.param) == (400, param)


def test_an_upload_of_another_kind_than_an_image_is_refused() -> None:
    body, kind = multipart(CREATE, {"input_reference": ("a.mp4", b"\x00\x00", "video/mp4")})
    with pytest.raises(RelayError) as refused:
        byteplus.create_request(body, kind)
    assert refused.value.param == "input_reference"


# --------------------------------------------------------------------------- the task


def created_video() -> dict[str, Any]:
    video = byteplus.created(b'{"id": "cgt-20261205-abc12"}', create(CREATE), "video_1", 1000.0)
    assert video is not None
    return video


def test_the_create_answer_keeps_the_task_privately() -> None:
    video = created_video()
    assert video[JOB_FIELD] == {"task": "cgt-20261205-abc12", "status": "queued"}
    assert public(video) == {
        "id": "video_1",
        "object": "video",
        "model": PRO,
        "status": "queued",
        "progress": 0,
        "created_at": 1000,
        "completed_at": None,
        "expires_at": None,
        "size": "1280x720",
        "seconds": "5",
        "remixed_from_video_id": None,
        "prompt": CREATE["prompt"],
        "error": None,
    }
    assert byteplus.poll_call(video) == byteplus.UpstreamCall("GET", "/contents/generations/tasks/cgt-20261205-abc12")
    for answer in (b"{}", b'{"id": "../x"}', b"[]", b"not json", b'{"id": 5}'):
        assert byteplus.created(answer, create(CREATE), "video_1", 1.0) is None


@pytest.mark.parametrize(
    ("upstream", "status", "error"),
    [
        ("queued", "queued", None),
        ("running", "in_progress", None),
        ("cancelled", "failed", "video_cancelled"),
        ("expired", "failed", "video_expired"),
    ],
)
def test_each_task_status_maps_to_the_openai_one(upstream: str, status: str, error: str | None) -> None:
    updated = byteplus.job_state(created_video(), task(upstream), 1005.0)
    assert updated is not None and updated["status"] == status
    assert (updated["error"] or {}).get("code") == error
    assert updated[JOB_FIELD]["status"] == upstream
    assert byteplus.content_url(task(upstream)) is None


def test_a_succeeded_task_is_completed_and_its_video_url_is_the_content() -> None:
    answer = task("succeeded", content={"video_url": "https://ark-content.tos.example/v.mp4?X-Tos-Signature=s"})
    updated = byteplus.job_state(created_video(), answer, 1005.0)
    assert updated is not None and (updated["status"], updated["progress"], updated["completed_at"]) == ("completed", 100, 1005)
    assert byteplus.content_url(answer) == "https://ark-content.tos.example/v.mp4?X-Tos-Signature=s"
    # A success without a video cannot be downloaded: it is failed, not completed.
    empty = byteplus.job_state(created_video(), task("succeeded", content={}), 1005.0)
    assert empty is not None and empty["status"] == "failed"


def test_a_failed_task_carries_its_error_and_moderation_is_named() -> None:
    failed = byteplus.job_state(created_video(), task("failed", error={"code": "InternalServiceError", "message": "boom"}), 1005.0)
    assert failed is not None and failed["error"] == {"code": "video_generation_failed", "message": "boom"}
    blocked = task("failed", error={"code": "OutputVideoSensitiveContentDetected", "message": "sensitive"})
    moderated = byteplus.job_state(created_video(), blocked, 1005.0)
    assert moderated is not None and moderated["error"] == {"code": "moderation_blocked", "message": "sensitive"}
    for unreadable in (b"nope", task("paused"), b'{"status": 3}'):
        assert byteplus.job_state(created_video(), unreadable, 1005.0) is None


def test_delete_goes_upstream_except_for_a_cancelled_task() -> None:
    video = created_video()
    assert byteplus.delete_call(video) == byteplus.UpstreamCall("DELETE", "/contents/generations/tasks/cgt-20261205-abc12")
    cancelled = byteplus.job_state(video, task("cancelled"), 1005.0)
    assert cancelled is not None and byteplus.delete_call(cancelled) is None
    assert byteplus.delete_call({"id": "video_1"}) is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "creating", "client_status", "code", "param"),
    [
        (429, ark(429, "RateLimitExceeded.EndpointRPMExceeded", "RPM", kind="TooManyRequests"), True, 429, "rate_limit_exceeded", None),
        (429, ark(429, "ServerOverloaded", "busy", kind="TooManyRequests"), True, 429, "rate_limit_exceeded", None),
        (429, ark(429, "QuotaExceeded", "You have exceeded the 5-hour usage quota."), True, 429, "insufficient_quota", None),
        (429, ark(429, "QuotaExceeded", "Account x has exhausted the free trial quota for model y."), True, 402, "payment_required", None),
        (429, ark(429, "SetLimitExceeded", "safe experience mode"), True, 402, "payment_required", None),
        (401, ark(401, "AuthenticationError", "the API key sk-abcdefghij is invalid"), False, 401, "invalid_api_key", None),
        (403, ark(403, "AccountOverdueError", "overdue"), True, 402, "payment_required", None),
        (403, ark(403, "AccessDenied", "IP not allowed"), True, 401, "invalid_api_key", None),
        (403, ark(403, "AccessDenied", "IP not allowed"), False, 403, "permission_denied", None),
        (404, ark(404, "ModelNotOpen", "not activated"), True, 403, "model_not_activated", "model"),
        (404, ark(404, "InvalidEndpointOrModel.NotFound", "no such model"), True, 400, "model_not_found", "model"),
        (404, ark(404, "NotFound.TaskId", "no such task"), False, 404, "not_found", None),
        (
            400,
            ark(400, "InvalidParameter", "The parameter `duration` specified in the request is not valid."),
            True,
            400,
            "invalid_value",
            "seconds",
        ),
        (400, ark(400, "InvalidParameter.ratio", "bad"), True, 400, "invalid_value", "size"),
        (400, ark(400, "InvalidParameter", "bad", param="resolution"), True, 400, "invalid_value", "size"),
        (400, ark(400, "InputTextSensitiveContentDetected", "sensitive"), True, 400, "moderation_blocked", None),
        (400, ark(400, "InvalidImageURL.InvalidFormat", "bad image"), True, 400, "invalid_value", "input_reference"),
        (409, ark(409, "TaskRunningCannotCancel", "running"), False, 409, "video_in_progress", None),
        (500, ark(500, "InternalServiceError", "oops", kind="InternalServerError"), True, 500, "upstream_error", None),
        (502, b"<html>bad gateway</html>", False, 502, "upstream_error", None),
    ],
)
def test_modelarks_errors_become_the_openai_envelope_with_the_status_the_account_follows(
    status: int, body: bytes, creating: bool, client_status: int, code: str, param: str | None
) -> None:
    translated = byteplus.error(status, body, creating=creating)
    assert translated.status == client_status
    error = translated.body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["code"], error["param"]) == (code, param)
    assert "sk-abcdefghij" not in error["message"]


def test_what_each_error_does_to_the_account() -> None:
    assert answer_class(byteplus.error(429, ark(429, "RateLimitExceeded", "x"), creating=True).status, b"") == "rate_limited"
    assert answer_class(byteplus.error(401, ark(401, "AuthenticationError", "x"), creating=True).status, b"") == "unauthorized"
    assert answer_class(byteplus.error(403, ark(403, "AccountOverdueError", "x"), creating=True).status, b"") == "payment_required"
    assert answer_class(byteplus.error(400, ark(400, "InvalidParameter", "x"), creating=True).status, b"") == "client_error"


def test_a_429_rests_for_a_retry_after_if_one_came_else_the_default() -> None:
    hints = account_type("byteplus").cooldown_hints
    body = ark(429, "RateLimitExceeded.EndpointRPMExceeded", "RPM")
    assert cooldown_seconds({}, body, now=0.0, default=60.0, maximum=3600.0, hints=hints) == (60.0, "default")
    assert cooldown_seconds({"retry-after": "42"}, body, now=0.0, default=60.0, maximum=3600.0, hints=hints) == (42.0, "retry_after")
    # A body field another provider uses is not BytePlus's.
    spoofed = json.dumps({"error": {"code": "x", "resets_in_seconds": 5}}).encode()
    assert cooldown_seconds({}, spoofed, now=0.0, default=60.0, maximum=3600.0, hints=hints) == (60.0, "default")


# --------------------------------------------------------------------------- the account type


def test_the_type_sends_a_bearer_serves_seedance_and_carries_nothing_beyond_create() -> None:
    kind = account_type("byteplus")
    assert kind.translation is BYTEPLUS and kind.default_base_api == "https://ark.ap-southeast.bytepluses.com/api/v3"
    assert (b"authorization", b"Bearer ark-key") in provider_headers(kind.auth("ark-key"), json_body=True)
    for operation in ("remix", "edit", "extension", "character"):
        assert not kind.carries(operation)
    assert unsupported_message("remix", ["byteplus"]) == (
        "Remix requests are not supported on byteplus accounts, which serve create, retrieve, content, delete and list only."
    )
    account = Account(1, "a", "byteplus", "http://x", 1, True, "active", None, None, None, None, None, 0.0, "")
    assert account.serves(PRO) and account.serves("dreamina-seedance-2-0-260128") and not account.serves("sora-2")
    openai_account = Account(1, "o", "openai-responses", "http://x", 1, True, "active", None, None, None, None, None, 0.0, "")
    assert not openai_account.serves(PRO)


def test_the_default_base_is_modelarks_and_storage_links_get_no_key() -> None:
    _, base = checked_input(name="b", type="byteplus", credential="ark-key", base_api=None, priority=100, proxy=None)
    assert base == "https://ark.ap-southeast.bytepluses.com/api/v3"
    video_url = "https://ark-content-generation-ap-southeast-1.tos-ap-southeast-1.volces.com/x.mp4?X-Tos-Signature=s"
    assert not translating._same_origin(video_url, base)


def test_the_default_prices_name_seedance_models() -> None:
    assert DEFAULT_PRICES[(PRO, "1280x720")] < DEFAULT_PRICES[(PRO, "1920x1080")]
    assert DEFAULT_PRICES[(LITE_T2V, "*")] > 0


# --------------------------------------------------------------------------- the emulator


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(clock: ManualClock) -> TestClient:
    return TestClient(create_sandbox_app(complete_after_seconds=10, clock=clock))


def task_body(model: str = PRO, prompt: str = "A fox", **extra: Any) -> dict[str, Any]:
    return {"model": model, "content": [{"type": "text", "text": prompt}], **extra}


def assert_ark_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "param", "type"} and error["code"] == code
    return error  # type: ignore[no-any-return]


def test_a_task_is_queued_then_running_then_succeeded_with_a_video_that_needs_no_key(sandbox: TestClient, clock: ManualClock) -> None:
    created = sandbox.post(TASKS, json=task_body(ratio="9:16", resolution="1080p", duration=6), headers=BEARER)
    assert created.status_code == 200 and set(created.json()) == {"id"}
    task_id = created.json()["id"]
    assert created.headers["x-request-id"]
    assert sandbox.get(f"{TASKS}/{task_id}", headers=BEARER).json()["status"] == "queued"
    clock.now += 6
    assert sandbox.get(f"{TASKS}/{task_id}", headers=BEARER).json()["status"] == "running"
    clock.now += 5
    done = sandbox.get(f"{TASKS}/{task_id}", headers=BEARER).json()
    assert (done["status"], done["ratio"], done["resolution"], done["duration"], done["error"]) == ("succeeded", "9:16", "1080p", 6, None)
    assert done["usage"]["completion_tokens"] == 1920 * 1088 * 24 * 6 // 1024
    url = done["content"]["video_url"]
    served = sandbox.get(url)
    assert served.status_code == 200 and served.headers["content-type"] == "video/mp4" and served.content.startswith(b"\x00\x00")
    ranged = sandbox.get(url, headers={"range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == served.content[:4]
    assert sandbox.get(url.replace("X-Tos-Signature=", "X-Tos-Signature=0")).status_code == 403
    [record] = [r for r in sandbox.get("/_sandbox/requests").json() if r["path"].startswith("/byteplus/tos/")][:1]
    assert record["token"] is None


def test_tasks_are_per_key_and_need_a_bearer(sandbox: TestClient) -> None:
    assert_ark_error(sandbox.post(TASKS, json=task_body()), 401, "AuthenticationError")
    assert_ark_error(sandbox.post(TASKS, json=task_body(), headers={"Authorization": "Basic x"}), 401, "AuthenticationError")
    task_id = sandbox.post(TASKS, json=task_body(), headers=BEARER).json()["id"]
    assert_ark_error(sandbox.get(f"{TASKS}/{task_id}", headers={"Authorization": "Bearer other"}), 404, "NotFound.TaskId")
    recorded = sandbox.get("/_sandbox/requests").json()
    assert [r["token"] for r in recorded] == [None, None, KEY, "other"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (task_body(ratio="5:4"), 400, "InvalidParameter.ratio"),
        (task_body(resolution="4k"), 400, "InvalidParameter.resolution"),
        (task_body(duration=30), 400, "InvalidParameter"),
        (task_body(frames_per_second=30), 400, "InvalidParameter.frames_per_second"),
        (
            task_body(model=LITE_T2V) | {"content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]},
            400,
            "InvalidParameter",
        ),
        (task_body(model=LITE_I2V), 400, "MissingParameter"),
        ({"model": PRO}, 400, "MissingParameter"),
        ({"content": []}, 400, "MissingParameter"),
        (
            task_body() | {"content": [{"type": "image_url", "image_url": {"url": "data:image/PNG;base64,AAAA"}}]},
            400,
            "InvalidImageURL.InvalidFormat",
        ),
        (task_body(model="kling-1"), 404, "InvalidEndpointOrModel.NotFound"),
    ],
)
def test_bad_tasks_are_modelarks_errors(sandbox: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    assert_ark_error(sandbox.post(TASKS, json=body, headers=BEARER), status, code)


def test_an_image_to_video_task_takes_a_data_url_or_an_image_url(sandbox: TestClient) -> None:
    for url in (PNG_URL, "https://images.example/fox.png"):
        content = [{"type": "text", "text": "go"}, {"type": "image_url", "image_url": {"url": url}, "role": "first_frame"}]
        assert sandbox.post(TASKS, json={"model": LITE_I2V, "content": content}, headers=BEARER).status_code == 200


@pytest.mark.parametrize(("marker", "code"), [("[fail]", "InternalServiceError"), ("[filtered]", "OutputVideoSensitiveContentDetected")])
def test_prompt_markers_end_the_task_failed(sandbox: TestClient, clock: ManualClock, marker: str, code: str) -> None:
    task_id = sandbox.post(TASKS, json=task_body(prompt=f"A fox {marker}"), headers=BEARER).json()["id"]
    clock.now += 11
    failed = sandbox.get(f"{TASKS}/{task_id}", headers=BEARER).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == code and "content" not in failed


def test_delete_cancels_a_queued_task_refuses_a_running_one_and_deletes_a_finished_one(sandbox: TestClient, clock: ManualClock) -> None:
    queued = sandbox.post(TASKS, json=task_body(), headers=BEARER).json()["id"]
    assert sandbox.delete(f"{TASKS}/{queued}", headers=BEARER).status_code == 200
    assert sandbox.get(f"{TASKS}/{queued}", headers=BEARER).json()["status"] == "cancelled"
    running = sandbox.post(TASKS, json=task_body(), headers=BEARER).json()["id"]
    clock.now += 6
    assert_ark_error(sandbox.delete(f"{TASKS}/{running}", headers=BEARER), 409, "TaskRunningCannotCancel")
    clock.now += 5
    assert sandbox.delete(f"{TASKS}/{running}", headers=BEARER).status_code == 200
    assert_ark_error(sandbox.get(f"{TASKS}/{running}", headers=BEARER), 404, "NotFound.TaskId")


@pytest.mark.parametrize(
    ("preset", "status", "code"),
    [
        ("rate_limited", 429, "RateLimitExceeded.EndpointRPMExceeded"),
        ("insufficient_quota", 429, "QuotaExceeded"),
        ("unauthorized", 401, "AuthenticationError"),
        ("payment_required", 403, "AccountOverdueError"),
        ("server_error", 500, "InternalServiceError"),
    ],
)
def test_presets_use_modelarks_envelope_and_rules_match_byteplus(sandbox: TestClient, preset: str, status: int, code: str) -> None:
    assert sandbox.post("/_sandbox/faults", json={"preset": preset, "provider": "byteplus", "times": 1}).status_code == 200
    response = sandbox.post(TASKS, json=task_body(), headers=BEARER)
    assert_ark_error(response, status, code)
    # ModelArk says nothing of when to retry.
    assert "retry-after" not in response.headers and "retry-after-ms" not in response.headers
    # The translation reads the preset as the account state it stands for.
    translated = byteplus.error(status, response.content, creating=True)
    assert translated.status == {"rate_limited": 429, "insufficient_quota": 429, "unauthorized": 401}.get(
        preset, {"payment_required": 402, "server_error": 500}.get(preset)
    )
    assert sandbox.post(TASKS, json=task_body(), headers=BEARER).status_code == 200
