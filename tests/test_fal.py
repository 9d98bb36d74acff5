"""fal accounts behind the OpenAI front door: the translation's mappings one by one, the seam's
error outcomes, and create / retrieve / content / delete against the sandbox's fal emulator with
the relay in process."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from conftest import ROOT, TOKEN, Relay, Sandbox
from hypothesis import given, strategies as st
from provider_scenarios import multipart, poll_until_done
from test_relay import assert_envelope, auth

from relay.accounts import checked_input
from relay.errors import RelayError
from relay.outcomes import cooldown_seconds
from relay.providers import JOB_FIELD, CreateRequest, UpstreamCall, account_type, fal, public, runway, serves_by_default
from relay.upstream import provider_headers

V = "/openai/v1/videos"
KLING = "fal-ai/kling-video/v2.1/master/text-to-video"
KLING_I2V = "fal-ai/kling-video/v2.1/master/image-to-video"
CREATE = {"prompt": "A paper boat on a river", "model": KLING, "seconds": "5", "size": "1280x720"}
SAMPLE = (ROOT / "relay" / "sandbox_assets" / "sample.mp4").read_bytes()
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
REQUEST_ID = "764cabcf-b745-4b3e-ae38-1200304cf45b"


def payload_of(request: CreateRequest) -> dict[str, Any]:
    assert request.call.body is not None
    return json.loads(request.call.body)  # type: ignore[no-any-return]


def create(body: dict[str, Any]) -> CreateRequest:
    return fal.create_request(json.dumps(body).encode(), "application/json")


# --------------------------------------------------------------------------- create


def test_a_json_create_becomes_a_queue_submit_to_the_model_id() -> None:
    request = create(CREATE)
    assert (request.call.method, request.call.path) == ("POST", f"/{KLING}")
    assert payload_of(request) == {"prompt": "A paper boat on a river", "aspect_ratio": "16:9", "resolution": "720p", "duration": "5"}
    assert (request.model, request.size, request.seconds, request.prompt) == (KLING, "1280x720", "5", "A paper boat on a river")


@pytest.mark.parametrize(
    ("size", "aspect", "resolution"),
    [
        ("1280x720", "16:9", "720p"),
        ("720x1280", "9:16", "720p"),
        ("1920x1080", "16:9", "1080p"),
        ("1024x1024", "1:1", "1080p"),
        ("1792x1024", "16:9", "1080p"),
        ("640x480", "4:3", "480p"),
        ("854x480", "16:9", "480p"),
    ],
)
def test_sizes_become_the_nearest_aspect_ratio_and_resolution(size: str, aspect: str, resolution: str) -> None:
    assert fal.size_fields(size) == {"aspect_ratio": aspect, "resolution": resolution}


@given(st.integers(10, 99999), st.integers(10, 99999))
def test_every_readable_size_maps_to_names_fal_uses(width: int, height: int) -> None:
    fields = fal.size_fields(f"{width}x{height}")
    assert fields["aspect_ratio"] in fal.ASPECT_RATIOS
    assert int(fields["resolution"].removesuffix("p")) in fal.RESOLUTIONS


@given(st.text(max_size=20))
def test_any_size_text_maps_or_is_the_clients_400_naming_size(size: str) -> None:
    try:
        fields = fal.size_fields(size)
    except RelayError as refused:
        assert refused.status == 400 and refused.param == "size"
    else:
        assert set(fields) == {"aspect_ratio", "resolution"}


@given(st.one_of(st.text(max_size=8), st.integers(-5, 2000), st.booleans(), st.none()))
def test_seconds_are_a_whole_number_or_the_clients_400(seconds: Any) -> None:
    try:
        whole = fal.whole_seconds(seconds)
    except RelayError as refused:
        assert refused.status == 400 and refused.param == "seconds"
    else:
        assert 1 <= whole <= 999 and str(whole) == str(seconds).strip().lstrip("0")


def test_without_seconds_or_size_the_model_renders_its_defaults_and_the_relay_books_five_seconds() -> None:
    request = create({"prompt": "p", "model": KLING})
    assert payload_of(request) == {"prompt": "p"}
    assert (request.seconds, request.size) == ("5", "1280x720")
    assert account_type("fal").default_seconds == 5.0


def test_model_specific_fields_pass_through_and_win_over_the_mapped_ones() -> None:
    veo = create({"prompt": "p", "model": "fal-ai/veo3", "seconds": "8", "duration": "8s", "generate_audio": False, "negative_prompt": "x"})
    assert payload_of(veo) == {"prompt": "p", "duration": "8s", "generate_audio": False, "negative_prompt": "x"}
    assert veo.seconds == "8"  # booked from the model's own spelling of the duration
    wan = create({"prompt": "p", "model": "fal-ai/wan-pro/text-to-video", "size": "1280x720", "resolution": "580p", "cfg_scale": 0.5})
    assert payload_of(wan) == {"prompt": "p", "aspect_ratio": "16:9", "resolution": "580p", "cfg_scale": 0.5}


def test_the_relays_session_field_stays_with_the_relay() -> None:
    assert "session_id" not in payload_of(create({**CREATE, "session_id": "chat-1"}))


def test_input_reference_becomes_image_url_a_data_url_or_the_url_fal_fetches() -> None:
    for reference in (PNG_URL, {"image_url": PNG_URL}, {"image_url": {"url": PNG_URL}}):
        assert payload_of(create({**CREATE, "model": KLING_I2V, "input_reference": reference}))["image_url"] == PNG_URL
    for reference in ("https://example.com/a.png", {"image_url": "https://example.com/a.png"}):
        request = create({**CREATE, "input_reference": reference})
        # fal fetches it: the relay fetches nothing (and its host allow-list does not apply).
        assert payload_of(request)["image_url"] == "https://example.com/a.png" and request.image_url is None
    for bad in ("ftp://example.com/a.png", {"file_id": "file_1"}, "data:text/plain;base64,aGk=", "data:image/png;base64,@@@", 7):
        with pytest.raises(RelayError) as refused:
            create({**CREATE, "input_reference": bad})
        assert refused.value.status == 400 and refused.value.param == "input_reference"


def test_a_multipart_create_uploads_the_image_as_a_data_url_and_reads_form_booleans() -> None:
    body, content_type = multipart({"prompt": "Animate", "model": KLING_I2V, "seconds": "10", "generate_audio": "true", "seed": "42"}, PNG)
    payload = payload_of(fal.create_request(body, content_type))
    assert payload == {"prompt": "Animate", "duration": "10", "image_url": PNG_URL, "generate_audio": True, "seed": "42"}
    body, content_type = multipart({"prompt": "Animate", "model": KLING_I2V}, b"GIF89a", "image/gif")
    with pytest.raises(RelayError) as refused:
        fal.create_request(body, content_type)
    assert refused.value.param == "input_reference"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CREATE, "character_ids": ["char_1"]}, "character_ids"),
        ({**CREATE, "model": "kling"}, "model"),
        ({**CREATE, "model": "fal-ai/../admin"}, "model"),
        ({**CREATE, "model": "fal-ai//x"}, "model"),
        ({**CREATE, "model": "workflows/only"}, "model"),
        ({**CREATE, "model": None}, "model"),
        ({**CREATE, "prompt": ""}, "prompt"),
        ({**CREATE, "seconds": "4.5"}, "seconds"),
        ({**CREATE, "size": "big"}, "size"),
        ({**CREATE, "bad-field": 1}, "bad-field"),
    ],
)
def test_what_fal_cannot_carry_is_the_clients_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RelayError) as refused:
        create(body)
    assert refused.value.status == 400 and refused.value.param == param


def test_a_character_field_names_the_account_type() -> None:
    with pytest.raises(RelayError) as refused:
        create({**CREATE, "character_ids": ["char_1"]})
    assert "fal accounts" in refused.value.message


def test_other_bodies_are_refused() -> None:
    for body, content_type in ((b"not json", "application/json"), (b"[]", "application/json"), (b"prompt=x", "text/plain")):
        with pytest.raises(RelayError) as refused:
            fal.create_request(body, content_type)
        assert refused.value.status == 400


@given(st.dictionaries(st.text(max_size=12), st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none()), max_size=6))
def test_any_json_create_is_a_submit_or_the_clients_400(extra: dict[str, Any]) -> None:
    try:
        request = create({**extra, "prompt": "p", "model": KLING})
    except RelayError as refused:
        assert refused.status == 400 and refused.param is not None
    else:
        assert request.call.path == f"/{KLING}" and payload_of(request)["prompt"] == "p"


# --------------------------------------------------------------------------- jobs


@pytest.mark.parametrize(
    ("model", "app"),
    [
        (KLING, "fal-ai/kling-video"),
        ("fal-ai/veo3", "fal-ai/veo3"),
        ("workflows/acme/my-flow/run", "workflows/acme/my-flow"),
    ],
)
def test_status_result_and_cancel_use_the_app_id(model: str, app: str) -> None:
    request = create({**CREATE, "model": model})
    video = fal.created(json.dumps({"request_id": REQUEST_ID, "status": "IN_QUEUE"}).encode(), request, "video_1", 100.0)
    assert video is not None and video[JOB_FIELD] == {"request_id": REQUEST_ID, "app": app}
    assert fal.poll_call(video) == UpstreamCall("GET", f"/{app}/requests/{REQUEST_ID}/status")
    completed = json.dumps({"status": "COMPLETED", "request_id": REQUEST_ID}).encode()
    assert fal.result_call(video, completed) == UpstreamCall("GET", f"/{app}/requests/{REQUEST_ID}")
    assert fal.delete_call(video) == UpstreamCall("PUT", f"/{app}/requests/{REQUEST_ID}/cancel")


def test_the_create_answer_keeps_the_request_privately() -> None:
    request = create(CREATE)
    video = fal.created(json.dumps({"request_id": REQUEST_ID}).encode(), request, "video_1", 100.0)
    assert video is not None
    assert public(video) == {
        "id": "video_1",
        "object": "video",
        "model": KLING,
        "status": "queued",
        "progress": 0,
        "created_at": 100,
        "completed_at": None,
        "expires_at": None,
        "size": "1280x720",
        "seconds": "5",
        "remixed_from_video_id": None,
        "prompt": "A paper boat on a river",
        "error": None,
    }
    for answer in (b'{"request_id": "../../etc"}', b"{}", b"nope"):
        assert fal.created(answer, request, "video_1", 100.0) is None
    assert fal.poll_call({"id": "video_1", JOB_FIELD: {"request_id": REQUEST_ID, "app": "fal-ai/../x"}}) is None


def stored() -> dict[str, Any]:
    video = fal.created(json.dumps({"request_id": REQUEST_ID}).encode(), create(CREATE), "video_1", 100.0)
    assert video is not None
    return video


def test_the_queue_statuses_map_to_the_openai_statuses() -> None:
    video = stored()
    queued = fal.job_state(video, json.dumps({"status": "IN_QUEUE", "queue_position": 3}).encode(), 5.0)
    assert queued is not None and (queued["status"], queued["progress"]) == ("queued", 0)
    running = fal.job_state(video, json.dumps({"status": "IN_PROGRESS", "logs": None}).encode(), 5.0)
    assert running is not None and running["status"] == "in_progress"
    for answer in (b'{"status": "IN_QUEUE"}', b'{"status": "IN_PROGRESS"}'):
        assert fal.result_call(video, answer) is None
    url = "https://v3.fal.media/files/tiger/abc.mp4"
    result = json.dumps({"video": {"url": url, "content_type": "video/mp4"}, "seed": 1}).encode()
    completed = fal.job_state(video, result, 7.0)
    assert completed is not None and (completed["status"], completed["progress"], completed["completed_at"]) == ("completed", 100, 7)
    assert fal.content_url(result) == url
    assert fal.content_url(json.dumps({"videos": [{"url": url}]}).encode()) == url
    assert fal.content_url(b'{"status": "COMPLETED"}') is None
    empty = fal.job_state(video, b'{"images": []}', 7.0)
    assert empty is not None and empty["status"] == "failed" and empty["error"]["code"] == "video_generation_failed"
    assert fal.job_state(video, b"not json", 5.0) is None


def test_a_finished_requests_error_result_is_a_failed_video_not_an_error() -> None:
    video = stored()
    # The translation the relay calls is these functions (other providers leave both out).
    assert fal.FAL.failed_result is fal.failed_result and fal.FAL.cancelled is fal.cancelled
    assert runway.RUNWAY.failed_result(video, 500, b'{"error": "x"}', 9.0) is None and not runway.RUNWAY.cancelled(400, b"{}")
    runner = json.dumps({"detail": "Runner crashed", "error_type": "runner_server_error"}).encode()
    failed = fal.failed_result(video, 500, runner, 9.0)
    assert failed is not None and failed["status"] == "failed" and failed["completed_at"] == 9
    assert failed["error"] == {"code": "video_generation_failed", "message": "Runner crashed"}
    policy = json.dumps({"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]}).encode()
    blocked = fal.failed_result(video, 422, policy, 9.0)
    assert blocked is not None and blocked["error"] == {"code": "moderation_blocked", "message": "flagged"}
    # About the account, the request id, or no body fal would write: an error, as for any other call.
    for status in (401, 403, 404, 429):
        assert fal.failed_result(video, status, runner, 9.0) is None
    assert fal.failed_result(video, 502, b"<html>bad gateway</html>", 9.0) is None


def test_only_a_queued_video_is_cancelled_and_a_cancel_of_a_finished_one_counts_as_done() -> None:
    video = stored()
    assert fal.delete_call(video) is not None
    assert fal.delete_call({**video, "status": "in_progress"}) is None
    assert fal.delete_call({**video, "status": "completed"}) is None
    assert fal.cancelled(400, b'{"status": "ALREADY_COMPLETED"}')
    assert not fal.cancelled(400, b'{"detail": "bad"}') and not fal.cancelled(401, b'{"status": "ALREADY_COMPLETED"}')


# --------------------------------------------------------------------------- errors


def fal_error(status: int, detail: Any, **extra: Any) -> bytes:
    return json.dumps({"detail": detail, **extra}).encode()


def test_fals_errors_become_the_openai_envelope_with_the_status_the_account_follows() -> None:
    limited = fal.error(429, fal_error(429, "Too many requests"), creating=True)
    assert limited.status == 429 and limited.body["error"]["code"] == "rate_limit_exceeded"
    assert fal.error(401, fal_error(401, "No user found for Key ID and Secret"), creating=True).status == 401
    locked = fal.error(403, fal_error(403, "User is locked. Reason: Exhausted balance."), creating=False)
    assert locked.status == 402
    assert fal.error(403, fal_error(403, "Cannot access application"), creating=True).status == 401
    assert fal.error(403, fal_error(403, "Cannot access application"), creating=False).status == 403
    refusal = [{"loc": ["body", "duration"], "msg": "Input should be '5' or '10'", "type": "literal_error"}]
    invalid = fal.error(422, fal_error(422, refusal), creating=True)
    assert invalid.status == 400 and invalid.body["error"]["param"] == "seconds"
    assert invalid.body["error"]["message"] == "Input should be '5' or '10'"
    assert set(invalid.body["error"]) == {"message", "type", "param", "code"}
    extra = fal.error(422, fal_error(422, [{"loc": ["body", "cfg_scale"], "msg": "too big", "type": "x"}]), creating=True)
    assert extra.body["error"]["param"] == "cfg_scale"
    missing = fal.error(404, fal_error(404, "Application 'x' not found"), creating=True)
    assert missing.status == 400 and missing.body["error"]["code"] == "model_not_found"
    assert fal.error(404, fal_error(404, "Request not found"), creating=False).status == 404
    assert fal.error(500, b"<html>", creating=True).status == 500


def test_a_retry_after_is_the_only_cooldown_hint_fal_accounts_read() -> None:
    hints = account_type("fal").cooldown_hints
    body = fal_error(429, "Too many requests", resets_in_seconds=99)
    assert cooldown_seconds({}, body, now=0.0, default=60.0, maximum=3600.0, hints=hints) == (60.0, "default")
    assert cooldown_seconds({"retry-after": "42"}, body, now=0.0, default=60.0, maximum=3600.0, hints=hints) == (42.0, "retry_after")


# --------------------------------------------------------------------------- the account type


def test_a_fal_account_sends_its_key_with_the_key_scheme() -> None:
    assert dict(provider_headers(account_type("fal").auth("id:secret"), json_body=True)) == {
        b"authorization": b"Key id:secret",
        b"accept-encoding": b"identity",
        b"content-type": b"application/json",
    }
    assert account_type("openai-responses").auth("sk")[1] == b"Bearer sk"
    assert account_type("fal").translation is fal.FAL and not account_type("fal").operations


def test_a_fal_account_without_a_list_serves_fal_model_ids_only() -> None:
    assert serves_by_default("fal", KLING) and not serves_by_default("fal", "sora-2")
    assert not serves_by_default("openai-responses", KLING)


def test_the_default_base_is_fals_queue() -> None:
    _, base = checked_input(name="f", type="fal", credential="id:secret", base_api=None, priority=100, proxy=None)
    assert base == "https://queue.fal.run"


def test_relayctl_adds_a_fal_account(cli: Any) -> None:
    added = json.loads(cli("accounts", "add", "f", "--type", "fal", "--token-stdin", "--json", input=TOKEN).output)
    assert added["type"] == "fal" and added["base_api"] == "https://queue.fal.run"


# --------------------------------------------------------------------------- with the relay in process


def fal_key(name: str) -> str:
    return f"fal-{name}-key:0123456789abcdef"


def fal_account(relay: Relay, sandbox: Sandbox, name: str = "fal", priority: int = 100) -> None:
    relay.add_account(name, f"{sandbox.url}/fal", token=fal_key(name), type="fal", priority=priority)


def test_create_poll_content_and_the_keys_path(relay: Relay, sandbox: Sandbox) -> None:
    fal_account(relay, sandbox)
    key = relay.issue_key()
    created = relay.client.post(V, json=CREATE, headers=auth(key))
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "queued" and JOB_FIELD not in created.json()
    done = poll_until_done(relay, key, created.json()["id"])
    assert done["status"] == "completed" and done["progress"] == 100
    content = relay.client.get(f"{V}/{done['id']}/content", headers=auth(key))
    assert content.status_code == 200 and content.content == SAMPLE
    ranged = relay.client.get(f"{V}/{done['id']}/content", headers={**auth(key), "range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.content == SAMPLE[:8]
    recorded = sandbox.requests()
    queue = [r for r in recorded if r["path"].startswith("/fal/")]
    assert {r["token"] for r in queue} == {fal_key("fal")}
    assert all(["authorization", f"Key {fal_key('fal')}"] in r["headers"] for r in queue)
    cdn = [r for r in recorded if r["path"].startswith("/_falcdn/")]
    assert cdn and all(r["token"] is None for r in cdn)
    assert not any(r["headers"] and "x-fal-no-retry" in dict(r["headers"]) for r in recorded)
    assert [r["path"] for r in queue[:1]] == [f"/fal/{KLING}"]


def test_a_failed_or_filtered_request_is_a_failed_video(relay: Relay, sandbox: Sandbox) -> None:
    fal_account(relay, sandbox)
    key = relay.issue_key()
    for marker, code in (("[fail]", "video_generation_failed"), ("[filtered]", "moderation_blocked")):
        created = relay.client.post(V, json={**CREATE, "prompt": f"A storm {marker}"}, headers=auth(key))
        assert created.status_code == 200, created.text
        finished = poll_until_done(relay, key, created.json()["id"])
        assert finished["status"] == "failed" and finished["error"]["code"] == code and finished["error"]["message"]
        assert_envelope(relay.client.get(f"{V}/{finished['id']}/content", headers=auth(key)), 409, "video_failed")
    assert relay.state.store.account("fal").state == "active"


def test_a_value_the_model_refuses_is_the_clients_400_naming_the_openai_field(relay: Relay, sandbox: Sandbox) -> None:
    fal_account(relay, sandbox)
    key = relay.issue_key()
    refused = relay.client.post(V, json={**CREATE, "seconds": "60"}, headers=auth(key))
    assert assert_envelope(refused, 400, "invalid_value")["param"] == "seconds"
    assert relay.state.store.account("fal").state == "active"


def test_deleting_a_queued_video_cancels_it_and_a_finished_one_sends_nothing(relay: Relay, sandbox: Sandbox) -> None:
    fal_account(relay, sandbox)
    key = relay.issue_key()
    video_id = relay.client.post(V, json=CREATE, headers=auth(key)).json()["id"]
    deleted = relay.client.delete(f"{V}/{video_id}", headers=auth(key))
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    cancels = [r for r in sandbox.requests() if r["method"] == "PUT"]
    assert [r["path"] for r in cancels] == [f"/fal/fal-ai/kling-video/requests/{cancels[0]['path'].split('/')[-2]}/cancel"]
    assert relay.client.get(f"{V}/{video_id}", headers=auth(key)).status_code == 404
    finished = poll_until_done(relay, key, relay.client.post(V, json=CREATE, headers=auth(key)).json()["id"])
    sandbox.reset()
    assert relay.client.delete(f"{V}/{finished['id']}", headers=auth(key)).status_code == 200
    assert sandbox.requests() == []


def test_remix_and_thumbnails_are_400s_naming_the_type(relay: Relay, sandbox: Sandbox) -> None:
    fal_account(relay, sandbox)
    key = relay.issue_key()
    video_id = relay.client.post(V, json=CREATE, headers=auth(key)).json()["id"]
    sandbox.reset()
    remix = relay.client.post(f"{V}/{video_id}/remix", json={"prompt": "again"}, headers=auth(key))
    assert "fal" in assert_envelope(remix, 400, "unsupported_for_account_type")["message"]
    thumbnail = relay.client.get(f"{V}/{video_id}/content?variant=thumbnail", headers=auth(key))
    assert "fal" in assert_envelope(thumbnail, 400, "invalid_variant")["message"]
    assert sandbox.requests() == []


# --------------------------------------------------------------------------- the emulator


def test_the_emulator_speaks_fals_queue(sandbox: Sandbox) -> None:
    import httpx

    base, key = f"{sandbox.url}/fal", {"Authorization": "Key k1"}
    assert httpx.post(f"{base}/{KLING}", json={"prompt": "p"}).status_code == 401
    assert httpx.post(f"{base}/{KLING}", json={"prompt": "p"}, headers={"Authorization": "Bearer k1"}).status_code == 401
    refused = httpx.post(f"{base}/{KLING}", json={"prompt": "p", "duration": "60"}, headers=key)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "duration"]
    submitted = httpx.post(f"{base}/{KLING}", json={"prompt": "p"}, headers=key).json()
    assert submitted["status"] == "IN_QUEUE"
    assert submitted["status_url"] == f"{base}/fal-ai/kling-video/requests/{submitted['request_id']}/status"
    status = httpx.get(submitted["status_url"], headers=key)
    assert status.status_code == 202 and status.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert httpx.get(submitted["status_url"], headers={"Authorization": "Key other"}).status_code == 404
    assert httpx.get(submitted["response_url"], headers=key).status_code == 400
    deadline = time.monotonic() + 5
    while httpx.get(submitted["status_url"], headers=key).json()["status"] != "COMPLETED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    result = httpx.get(submitted["response_url"], headers=key).json()
    assert result["video"]["url"].startswith(f"http://localhost:{sandbox.url.rsplit(':', 1)[1]}/_falcdn/files/")
    assert httpx.get(result["video"]["url"]).content == SAMPLE
    assert httpx.put(submitted["cancel_url"], headers=key).json() == {"status": "ALREADY_COMPLETED"}


def test_the_emulators_presets_are_worded_as_fal_words_them(sandbox: Sandbox) -> None:
    import httpx

    base, key = f"{sandbox.url}/fal", {"Authorization": "Key k1"}
    for preset, status in (("rate_limited", 429), ("unauthorized", 401), ("payment_required", 403), ("server_error", 500)):
        sandbox.fault(preset=preset, provider="fal", times=1)
        answer = httpx.post(f"{base}/{KLING}", json={"prompt": "p"}, headers=key)
        assert answer.status_code == status and isinstance(answer.json()["detail"], str)
        assert "retry-after" not in answer.headers
