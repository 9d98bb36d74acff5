"""Runway accounts behind the OpenAI front door: the translation's mappings one by one (fields,
statuses, errors), the account type's facts, and the sandbox's Runway emulator in-process."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import TOKEN, ManualClock
from hypothesis import given, settings, strategies as st
from starlette.testclient import TestClient

from relay.accounts import checked_input
from relay.errors import RelayError
from relay.outcomes import cooldown_seconds
from relay.pool import Upstream
from relay.pricing import ANY_SIZE, DEFAULT_PRICES
from relay.providers import JOB_FIELD, CreateRequest, account_type, public, runway, serves_by_default, unsupported_message
from relay.providers.translating import Translating
from relay.records import Account
from relay.sandbox import create_sandbox_app, runway as emulator
from relay.sandbox.provider import storage_origin

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode("ascii")
JSON = "application/json"
BOUNDARY = "runway-test-boundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def create(**fields: Any) -> CreateRequest:
    return runway.create_request(json.dumps(fields).encode(), JSON)


def payload_of(request: CreateRequest) -> dict[str, Any]:
    assert request.call.body is not None
    return json.loads(request.call.body)  # type: ignore[no-any-return]


def refused(param: str | None, **fields: Any) -> RelayError:
    with pytest.raises(RelayError) as raised:
        create(**fields)
    assert raised.value.status == 400 and raised.value.param == param, (raised.value.param, str(raised.value))
    return raised.value


def form(*parts: tuple[str, str | None, str | None, bytes]) -> bytes:
    """A multipart body: (name, filename, content type, data) per part."""
    chunks = []
    for name, filename, content_type, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "")
        chunks.append(head.encode() + b"\r\n" + data + b"\r\n")
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()


# --------------------------------------------------------------------------- the client's create


def test_a_text_create_becomes_text_to_video_with_ratio_and_duration() -> None:
    request = create(model="veo3.1", prompt="A lighthouse in a storm", size="720x1280", seconds="4")
    assert (request.call.method, request.call.path) == ("POST", "/text_to_video")
    assert payload_of(request) == {"model": "veo3.1", "promptText": "A lighthouse in a storm", "ratio": "720:1280", "duration": 4}
    assert (request.model, request.size, request.seconds, request.prompt, request.image_url) == (
        "veo3.1",
        "720x1280",
        "4",
        "A lighthouse in a storm",
        None,
    )


@pytest.mark.parametrize(
    ("model", "size", "ratio"),
    [
        ("gen4.5", "1280x720", "1280:720"),
        ("gen4.5", "1584x672", "1584:672"),
        ("gen4.5", "960x960", "960:960"),
        ("veo3", "1920x1080", "1920:1080"),
        ("veo3.1_fast", "1080x1920", "1080:1920"),
    ],
)
def test_size_becomes_runways_ratio(model: str, size: str, ratio: str) -> None:
    seconds = "8" if model.startswith("veo") else "5"
    assert payload_of(create(model=model, prompt="p", size=size, seconds=seconds))["ratio"] == ratio


@pytest.mark.parametrize(
    ("model", "size", "seconds"),
    [("gen4.5", "1280x720", "5"), ("veo3", "1280x720", "8"), ("veo3.1", "1280x720", "8"), ("gen4_turbo", "1280x720", "5")],
)
def test_without_size_or_seconds_the_models_defaults_are_sent_and_recorded(model: str, size: str, seconds: str) -> None:
    fields: dict[str, Any] = {"model": model, "prompt": "p"}
    if model == "gen4_turbo":
        fields["input_reference"] = PNG_URI
    request = create(**fields)
    assert (request.size, request.seconds) == (size, seconds)
    assert payload_of(request)["ratio"] == size.replace("x", ":") and payload_of(request)["duration"] == int(seconds)
    gen3 = {**fields, "model": "gen3a_turbo", "input_reference": PNG_URI}
    assert runway.create_request(json.dumps(gen3).encode(), JSON).size == "1280x768"


def test_a_size_the_model_cannot_render_is_a_400_naming_size() -> None:
    error = refused("size", model="gen3a_turbo", prompt="p", size="1280x720", input_reference=PNG_URI)
    assert "gen3a_turbo" in str(error) and "1280x768, 768x1280" in str(error)
    refused("size", model="veo3.1", prompt="p", size="1024x1024")
    refused("size", model="veo3.1", prompt="p", size="big")
    refused("size", model="veo3.1", prompt="p", size=1280)


def test_seconds_the_model_cannot_render_are_a_400_naming_seconds() -> None:
    assert "8" in str(refused("seconds", model="veo3", prompt="p", seconds="4"))
    assert "2 to 10" in str(refused("seconds", model="gen4.5", prompt="p", seconds="12"))
    refused("seconds", model="gen3a_turbo", prompt="p", seconds="6", input_reference=PNG_URI)
    refused("seconds", model="gen4.5", prompt="p", seconds="4.5")
    refused("seconds", model="gen4.5", prompt="p", seconds=True)


def test_a_model_not_in_the_table_is_sent_as_asked_for_runway_to_judge() -> None:
    request = create(model="gen5_preview", prompt="p", size="1000x500", seconds="7")
    assert payload_of(request) == {"model": "gen5_preview", "promptText": "p", "ratio": "1000:500", "duration": 7}
    assert request.call.path == "/text_to_video"


def test_the_model_is_required_and_must_be_a_name() -> None:
    refused("model", prompt="p")
    refused("model", model="../tasks", prompt="p")
    refused("model", model=7, prompt="p")


def test_a_prompt_is_required_without_an_image_and_at_most_1000_utf16_units() -> None:
    refused("prompt", model="veo3.1")
    refused("prompt", model="veo3.1", prompt="   ")
    assert "1000" in str(refused("prompt", model="veo3.1", prompt="x" * 1001))
    # An emoji is two UTF-16 code units: 500 of them are at the limit, 501 past it.
    assert payload_of(create(model="veo3.1", prompt="🎬" * 500))["promptText"] == "🎬" * 500
    refused("prompt", model="veo3.1", prompt="🎬" * 501)
    image_only = create(model="gen4_turbo", prompt="", input_reference=PNG_URI)
    assert "promptText" not in payload_of(image_only) and image_only.prompt is None


def test_fields_runway_cannot_carry_are_refused_by_name_and_its_own_are_mapped() -> None:
    refused("character_ids", model="veo3.1", prompt="p", character_ids=["char_1"])
    refused("resolution", model="veo3.1", prompt="p", resolution="1080p")
    sent = payload_of(create(model="veo3", prompt="p", seed=42, negative_prompt="rain"))
    assert (sent["seed"], sent["negativePrompt"]) == (42, "rain")
    refused("seed", model="veo3", prompt="p", seed=-1)
    refused("seed", model="veo3", prompt="p", seed=4294967296)
    # The relay's own sticky-session field stays with the relay.
    assert "session_id" not in payload_of(create(model="veo3", prompt="p", session_id="chat-1"))


def test_other_content_types_are_refused() -> None:
    with pytest.raises(RelayError) as raised:
        runway.create_request(b"prompt=p", "application/x-www-form-urlencoded")
    assert raised.value.code == "unsupported_content_type"


# --------------------------------------------------------------------------- image input


@pytest.mark.parametrize(
    "reference",
    [PNG_URI, {"image_url": PNG_URI}, {"image_url": {"url": PNG_URI}}, "data:image/png;charset=x;base64," + PNG_URI.split(",")[1]],
)
def test_a_data_url_becomes_prompt_image_on_image_to_video(reference: Any) -> None:
    request = create(model="gen4_turbo", prompt="Animate", input_reference=reference)
    assert request.call.path == "/image_to_video"
    assert payload_of(request)["promptImage"] == PNG_URI
    assert request.image_url is None  # nothing for the relay to fetch


def test_an_https_url_goes_to_runway_unfetched() -> None:
    url = "https://images.example.com/first-frame.png?v=2"
    request = create(model="gen4.5", prompt="Animate", input_reference={"image_url": url})
    assert payload_of(request)["promptImage"] == url and request.image_url is None


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ("http://images.example.com/a.png", "https"),
        ("https://10.0.0.7/a.png", "domain name"),
        ("https://[::1]/a.png", "domain name"),
        ("https://example.com/" + "a" * 2048, "2048"),
        ("ftp://example.com/a.png", "https"),
        ("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "image/png"),
        ("data:image/png;base64,@@@", "decode"),
        ("data:image/png,plain", "data: URL"),
        (42, "an uploaded file"),
        ({"file_id": "file_1"}, "an uploaded file"),
    ],
)
def test_an_image_runway_cannot_take_is_a_400_naming_input_reference(reference: Any, words: str) -> None:
    assert words in str(refused("input_reference", model="gen4.5", prompt="p", input_reference=reference))


def test_an_image_only_model_without_an_image_is_a_400() -> None:
    assert "gen4_turbo" in str(refused("input_reference", model="gen4_turbo", prompt="p"))
    refused("input_reference", model="gen3a_turbo", prompt="p")


def test_an_uploaded_file_becomes_a_data_uri() -> None:
    body = form(("prompt", None, None, b"Animate"), ("model", None, None, b"gen4_turbo"), ("input_reference", "f.png", "image/png", PNG))
    request = runway.create_request(body, FORM)
    assert request.call.path == "/image_to_video"
    assert payload_of(request) == {
        "model": "gen4_turbo",
        "promptImage": PNG_URI,
        "promptText": "Animate",
        "ratio": "1280:720",
        "duration": 5,
    }
    # An upload without a usable type is recognised by its bytes.
    sniffed = runway.create_request(form(("model", None, None, b"gen4.5"), ("input_reference", "f", "application/octet-stream", PNG)), FORM)
    assert payload_of(sniffed)["promptImage"] == PNG_URI


def test_the_sdks_multipart_spelling_of_an_image_url_is_taken_and_a_file_id_refused() -> None:
    url = "https://images.example.com/a.png"
    for name, value in (("input_reference[image_url]", url), ("input_reference", url)):
        body = form(("prompt", None, None, b"p"), ("model", None, None, b"gen4.5"), (name, None, None, value.encode()))
        assert payload_of(runway.create_request(body, FORM))["promptImage"] == url
    body = form(("prompt", None, None, b"p"), ("model", None, None, b"gen4.5"), ("input_reference[file_id]", None, None, b"file_1"))
    with pytest.raises(RelayError) as raised:
        runway.create_request(body, FORM)
    assert raised.value.param == "input_reference" and "file id" in str(raised.value)


def test_an_upload_that_is_no_image_or_too_large_for_a_data_uri_is_refused() -> None:
    for data, words in ((b"GIF89a....", "image/png"), (b"\x89PNG\r\n\x1a\n" + bytes(4 * 1024 * 1024), "5 MiB")):
        body = form(("model", None, None, b"gen4.5"), ("prompt", None, None, b"p"), ("input_reference", "f.png", None, data))
        with pytest.raises(RelayError) as raised:
            runway.create_request(body, FORM)
        assert raised.value.param == "input_reference" and words in str(raised.value)
    with pytest.raises(RelayError) as raised:
        runway.create_request(form(("model", None, None, b"gen4.5"), ("seed", "s.txt", "text/plain", b"1")), FORM)
    assert raised.value.param == "seed"


def test_with_image_puts_fetched_bytes_on_image_to_video() -> None:
    request = runway.with_image(create(model="gen4.5", prompt="p"), PNG, "image/png")
    assert request.call.path == "/image_to_video" and payload_of(request)["promptImage"] == PNG_URI


@settings(max_examples=200, deadline=None)
@given(st.integers(10, 99999), st.integers(10, 99999))
def test_any_size_of_an_unlisted_model_is_its_ratio(width: int, height: int) -> None:
    request = create(model="gen9", prompt="p", size=f"{width}x{height}", seconds="5")
    assert payload_of(request)["ratio"] == f"{width}:{height}" and request.size == f"{width}x{height}"


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["model", "prompt", "size", "seconds", "input_reference", "seed", "negative_prompt", "other"]),
        st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.text(max_size=30), st.lists(st.text(max_size=3), max_size=2)),
    )
)
def test_any_json_create_is_a_request_or_the_clients_400(fields: dict[str, Any]) -> None:
    try:
        request = runway.create_request(json.dumps(fields).encode(), JSON)
    except RelayError as error:
        assert error.status == 400 and str(error)
        return
    sent = payload_of(request)
    assert sent["model"] == request.model and ":" in sent["ratio"] and str(sent["duration"]) == request.seconds
    assert request.call.path == ("/image_to_video" if "promptImage" in sent else "/text_to_video")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_image_reference_text_is_a_prompt_image_or_the_clients_400(text: str) -> None:
    try:
        image = runway.prompt_image(text)
    except RelayError as error:
        assert (error.status, error.param) == (400, "input_reference")
    else:
        assert image.startswith(("https://", "data:image/"))


# --------------------------------------------------------------------------- jobs


def a_video(now: float = 1000.0) -> dict[str, Any]:
    answer = json.dumps({"id": "3657e17a-3865-4bb8-8a40-c501e908861d"}).encode()
    resource = runway.created(answer, create(model="veo3.1", prompt="A fox", seconds="8"), "video_abc", now)
    assert resource is not None
    return resource


def test_the_create_answer_keeps_the_task_privately() -> None:
    resource = a_video()
    assert resource[JOB_FIELD] == {"task": "3657e17a-3865-4bb8-8a40-c501e908861d"}
    shown = public(resource)
    assert JOB_FIELD not in shown
    assert shown == {
        "id": "video_abc",
        "object": "video",
        "model": "veo3.1",
        "status": "queued",
        "progress": 0,
        "created_at": 1000,
        "completed_at": None,
        "expires_at": None,
        "size": "1280x720",
        "seconds": "8",
        "remixed_from_video_id": None,
        "prompt": "A fox",
        "error": None,
    }
    assert runway.poll_call(resource) == runway.UpstreamCall("GET", "/tasks/3657e17a-3865-4bb8-8a40-c501e908861d")
    assert runway.delete_call(resource) == runway.UpstreamCall("DELETE", "/tasks/3657e17a-3865-4bb8-8a40-c501e908861d")
    request = create(model="veo3", prompt="p")
    for answer in (b"{}", b"[]", b"not json", b'{"id": "../../x"}', b'{"id": 7}'):
        assert runway.created(answer, request, "video_x", 0) is None
    assert runway.poll_call({"id": "video_x"}) is None and runway.delete_call({JOB_FIELD: {"task": "a/b"}}) is None


CDN = "https://dnznrvs05pmza.cloudfront.net/3657e17a.mp4?_jwt=abc"


@pytest.mark.parametrize(
    ("task", "status", "progress", "error"),
    [
        ({"status": "PENDING"}, "queued", 0, None),
        ({"status": "THROTTLED"}, "queued", 0, None),
        ({"status": "RUNNING", "progress": 0.42}, "in_progress", 42, None),
        ({"status": "RUNNING", "progress": 1.0}, "in_progress", 99, None),
        ({"status": "RUNNING"}, "in_progress", 0, None),
        ({"status": "RUNNING", "progress": "half"}, "in_progress", 0, None),
        ({"status": "SUCCEEDED", "output": [CDN]}, "completed", 100, None),
        (
            {"status": "SUCCEEDED", "output": []},
            "failed",
            100,
            {"code": "video_generation_failed", "message": "The task succeeded without an output."},
        ),
        (
            {"status": "FAILED", "failure": "The prompt did not pass moderation.", "failureCode": "SAFETY.INPUT.TEXT"},
            "failed",
            100,
            {"code": "SAFETY.INPUT.TEXT", "message": "The prompt did not pass moderation."},
        ),
        ({"status": "FAILED"}, "failed", 100, {"code": "video_generation_failed", "message": "Runway reported the task failed."}),
        (
            {"status": "FAILED", "failure": "boom", "failureCode": "not a code!"},
            "failed",
            100,
            {"code": "video_generation_failed", "message": "boom"},
        ),
        ({"status": "CANCELLED"}, "failed", 100, {"code": "video_generation_cancelled", "message": "The task was cancelled at Runway."}),
    ],
)
def test_a_task_maps_to_the_openai_status(task: dict[str, Any], status: str, progress: int, error: dict[str, str] | None) -> None:
    answer = json.dumps({"id": "3657e17a", "createdAt": "2026-12-05T10:00:00.000Z", **task}).encode()
    updated = runway.job_state(a_video(), answer, 2000.5)
    assert updated is not None
    assert (updated["status"], updated["progress"], updated["error"]) == (status, progress, error)
    assert updated["completed_at"] == (2000 if status in ("completed", "failed") else None)
    assert updated[JOB_FIELD] == a_video()[JOB_FIELD]
    assert runway.content_url(answer) == (CDN if status == "completed" else None)


def test_an_unreadable_task_is_none() -> None:
    for answer in (b"nope", b"[]", b"{}", b'{"status": "EXPLODED"}', b'{"status": 3}'):
        assert runway.job_state(a_video(), answer, 0) is None
    assert runway.content_url(b'{"status": "SUCCEEDED", "output": ["file:///etc/passwd"]}') is None


def test_a_failure_message_is_redacted_and_bounded() -> None:
    answer = json.dumps({"status": "FAILED", "failure": "Bearer key_" + "a" * 40 + " " + "x" * 900}).encode()
    updated = runway.job_state(a_video(), answer, 0)
    assert updated is not None
    assert "key_aaaa" not in updated["error"]["message"] and len(updated["error"]["message"]) <= 500


# --------------------------------------------------------------------------- errors


def runway_body(message: str, issues: list[dict[str, Any]] | None = None) -> bytes:
    body: dict[str, Any] = {"error": message}
    if issues is not None:
        body["issues"] = issues
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("field", "param"),
    [("promptText", "prompt"), ("promptImage", "input_reference"), ("ratio", "size"), ("duration", "seconds"), ("seed", "seed")],
)
def test_a_validation_error_is_the_clients_400_naming_the_openai_field(field: str, param: str) -> None:
    issues = [{"code": "custom", "path": [field], "message": "Invalid value."}]
    translated = runway.error(400, runway_body("Validation of body failed", issues), creating=True)
    assert translated.status == 400
    assert translated.body == {
        "error": {
            "message": f"Validation of body failed: {field}: Invalid value.",
            "type": "invalid_request_error",
            "param": param,
            "code": "invalid_value",
        }
    }


@pytest.mark.parametrize(
    ("status", "body", "client_status", "code", "param"),
    [
        (429, runway_body("Too many requests."), 429, "rate_limit_exceeded", None),
        (401, runway_body("Incorrect or missing API key."), 401, "invalid_api_key", None),
        (400, runway_body("You do not have enough credits to run this task."), 402, "insufficient_quota", None),
        (
            400,
            runway_body("Validation of body failed", [{"path": ["model"], "message": "Invalid model."}]),
            400,
            "model_not_found",
            "model",
        ),
        (400, runway_body("The X-Runway-Version header is missing."), 400, "invalid_value", None),
        (404, runway_body("Task not found."), 404, "not_found", None),
        (502, b"<html>bad gateway</html>", 502, "upstream_error", None),
        (503, runway_body("Runway is shedding load."), 503, "upstream_error", None),
    ],
)
def test_runways_errors_become_the_openai_envelope_with_the_status_the_account_follows(
    status: int, body: bytes, client_status: int, code: str, param: str | None
) -> None:
    translated = runway.error(status, body, creating=True)
    assert translated.status == client_status
    error = translated.body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["code"], error["param"]) == (code, param)


def test_an_error_message_never_carries_a_key() -> None:
    translated = runway.error(401, runway_body("Bad key: Bearer key_0123456789abcdef0123"), creating=False)
    assert "key_0123" not in translated.body["error"]["message"]
    assert runway.error(500, b"", creating=False).body["error"]["message"] == "The Runway API answered HTTP 500."


@settings(max_examples=200, deadline=None)
@given(st.integers(400, 599), st.binary(max_size=200))
def test_any_error_answer_is_an_envelope(status: int, body: bytes) -> None:
    translated = runway.error(status, body, creating=True)
    assert translated.status in (status, 402)
    assert set(translated.body["error"]) == {"message", "type", "param", "code"}


# --------------------------------------------------------------------------- the account type


def test_the_type_sends_a_bearer_key_and_the_api_version_on_every_call() -> None:
    kind = account_type("runway")
    assert kind.translation is runway.RUNWAY and kind.default_base_api == "https://api.dev.runwayml.com/v1"
    assert kind.auth("key_abc") == (b"authorization", b"Bearer key_abc")
    account = Account(1, "rw", "runway", "https://api.dev.runwayml.com/v1", 1, True, "active", None, None, None, None, None, 0.0, "")
    call = runway.poll_call(a_video())
    assert call is not None
    sent = Translating(runway.RUNWAY)._call(Upstream(account, "key_abc"), call)
    assert sent.url == "https://api.dev.runwayml.com/v1/tasks/3657e17a-3865-4bb8-8a40-c501e908861d"
    assert (b"authorization", b"Bearer key_abc") in sent.headers and (b"x-runway-version", b"2024-11-06") in sent.headers
    # Other types send no such header.
    gemini_account = Account(2, "g", "gemini", "https://g.example/v1beta", 1, True, "active", None, None, None, None, None, 0.0, "")
    assert not any(
        name == b"x-runway-version" for name, _ in Translating(runway.RUNWAY)._keyed(Upstream(gemini_account, "k"), "https://x").headers
    )


def test_runway_models_go_to_runway_accounts_and_veo_dashes_stay_geminis() -> None:
    for model in ("gen4.5", "gen4_turbo", "gen3a_turbo", "veo3", "veo3.1", "veo3.1_fast"):
        assert serves_by_default("runway", model) and not serves_by_default("openai-responses", model)
        assert not serves_by_default("gemini", model)
    assert not serves_by_default("runway", "veo-3.1-generate-preview") and not serves_by_default("runway", "sora-2")


def test_it_carries_no_remix_edit_extension_or_character() -> None:
    kind = account_type("runway")
    assert kind.carries("create") and not any(kind.carries(op) for op in ("remix", "edit", "extension", "character"))
    assert unsupported_message("remix", ["runway"]) == (
        "Remix requests are not supported on runway accounts, which serve create, retrieve, content, delete and list only."
    )


def test_a_retry_after_is_the_only_cooldown_hint_runway_may_give() -> None:
    hints = account_type("runway").cooldown_hints
    assert cooldown_seconds({"retry-after": "42"}, b"{}", now=0.0, default=60.0, maximum=3600.0, hints=hints) == (42.0, "retry_after")
    # A body hint another provider sends is not Runway's: the default applies.
    body = json.dumps({"error": {"resets_in_seconds": 5}}).encode()
    assert cooldown_seconds({}, body, now=0.0, default=60.0, maximum=3600.0, hints=hints) == (60.0, "default")


def test_the_default_base_is_runways_and_relayctl_adds_the_type(cli: Any) -> None:
    _, base = checked_input(name="r", type="runway", credential="key_abc", base_api=None, priority=100, proxy=None)
    assert base == "https://api.dev.runwayml.com/v1"
    added = json.loads(cli("accounts", "add", "rw", "--type", "runway", "--token-stdin", "--json", input=TOKEN).output)
    assert added["type"] == "runway"
    listed = json.loads(cli("accounts", "list", "--json").output)
    assert [(a["name"], a["type"], a["base_api"]) for a in listed] == [("rw", "runway", "https://api.dev.runwayml.com/v1")]


def test_default_prices_cover_the_runway_models() -> None:
    for model in runway.MODELS:
        assert DEFAULT_PRICES[(model, ANY_SIZE)] > 0
    assert DEFAULT_PRICES[("gen4_turbo", ANY_SIZE)] < DEFAULT_PRICES[("gen4.5", ANY_SIZE)] < DEFAULT_PRICES[("veo3", ANY_SIZE)]


# --------------------------------------------------------------------------- the emulator


KEY = {"Authorization": "Bearer key_one", "X-Runway-Version": "2024-11-06"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(0.0)


@pytest.fixture
def client(clock: ManualClock) -> TestClient:
    return TestClient(create_sandbox_app(complete_after_seconds=3.0, clock=clock), base_url="http://127.0.0.1:9000")


def start(client: TestClient, prompt: str = "A fox", headers: dict[str, str] = KEY, **fields: Any) -> str:
    body = {"model": "veo3.1", "promptText": prompt, "ratio": "1280:720", "duration": 8, **fields}
    answer = client.post("/runway/v1/text_to_video", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]  # type: ignore[no-any-return]


def test_the_emulator_runs_a_task_pending_running_then_succeeded_with_a_cdn_link(client: TestClient, clock: ManualClock) -> None:
    task_id = start(client, "A fox [bytes=5000]")
    seen = client.get(f"/runway/v1/tasks/{task_id}", headers=KEY).json()
    assert seen["status"] == "PENDING" and seen["id"] == task_id and seen["createdAt"].endswith("Z")
    clock.now = 1.5
    assert client.get(f"/runway/v1/tasks/{task_id}", headers=KEY).json() | {"createdAt": None} == {
        "id": task_id,
        "createdAt": None,
        "status": "RUNNING",
        "progress": 0.5,
    }
    clock.now = 3.0
    done = client.get(f"/runway/v1/tasks/{task_id}", headers=KEY).json()
    assert done["status"] == "SUCCEEDED"
    [link] = done["output"]
    # Another origin than the API's (localhost for 127.0.0.1), like Runway's CDN.
    assert link.startswith(f"http://localhost:9000/runway/cdn/{task_id}.mp4?_jwt=")
    video = client.get(link.removeprefix("http://localhost:9000"))
    assert video.status_code == 200 and len(video.content) == 5000 and video.headers["content-type"] == "video/mp4"
    assert client.get(f"/runway/cdn/{task_id}.mp4?_jwt=1.forged").status_code == 403
    [cdn] = [r for r in client.get("/_sandbox/requests").json() if r["path"].startswith("/runway/cdn/") and "forged" not in r["query"]]
    assert cdn["token"] is None


def test_the_emulator_wants_a_bearer_key_and_the_version_header(client: TestClient) -> None:
    body = {"model": "veo3.1", "promptText": "p", "ratio": "1280:720"}
    assert client.post("/runway/v1/text_to_video", json=body, headers={"X-Runway-Version": "2024-11-06"}).status_code == 401
    missing = client.post("/runway/v1/text_to_video", json=body, headers={"Authorization": "Bearer k"})
    assert missing.status_code == 400 and "X-Runway-Version" in missing.json()["error"]
    other = client.post("/runway/v1/text_to_video", json=body, headers={"Authorization": "Bearer k", "X-Runway-Version": "2023-09-06"})
    assert other.status_code == 400
    recorded = client.get("/_sandbox/requests").json()
    assert [r["token"] for r in recorded] == [None, "k", "k"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("text_to_video", {"model": "gen4_turbo", "promptText": "p", "ratio": "1280:720"}, "model"),
        ("text_to_video", {"model": "veo3.1", "promptText": "p", "ratio": "1280:768"}, "ratio"),
        ("text_to_video", {"model": "veo3", "promptText": "p", "ratio": "1280:720", "duration": 5}, "duration"),
        ("text_to_video", {"model": "veo3", "promptText": "p", "ratio": "1280:720"}, "duration"),
        ("text_to_video", {"model": "veo3.1", "ratio": "1280:720"}, "promptText"),
        ("text_to_video", {"model": "veo3.1", "promptText": "p", "ratio": "1280:720", "watermark": True}, "watermark"),
        ("image_to_video", {"model": "gen4_turbo", "ratio": "1280:720"}, "promptImage"),
        ("image_to_video", {"model": "gen4_turbo", "ratio": "1280:720", "promptImage": "http://a.example/x.png"}, "promptImage"),
        ("image_to_video", {"model": "gen4_turbo", "ratio": "1280:720", "promptImage": "https://1.2.3.4/x.png"}, "promptImage"),
        ("image_to_video", {"model": "gen4_turbo", "ratio": "1280:720", "promptImage": "data:image/gif;base64,R0lG"}, "promptImage"),
        ("image_to_video", {"model": "gen3a_turbo", "ratio": "1280:720", "promptImage": PNG_URI}, "ratio"),
    ],
)
def test_the_emulator_refuses_what_runway_refuses_naming_the_field(client: TestClient, path: str, body: dict[str, Any], field: str) -> None:
    answer = client.post(f"/runway/v1/{path}", json=body, headers=KEY)
    assert answer.status_code == 400
    assert answer.json()["error"] == "Validation of body failed" and answer.json()["issues"][0]["path"] == [field]


def test_the_emulator_takes_an_image_by_url_or_data_uri(client: TestClient) -> None:
    for image in (PNG_URI, "https://images.example.com/a.png", [{"uri": PNG_URI, "position": "first"}]):
        answer = client.post(
            "/runway/v1/image_to_video", json={"model": "gen4_turbo", "ratio": "720:1280", "promptImage": image}, headers=KEY
        )
        assert answer.status_code == 200, answer.text


def test_the_emulator_fails_tasks_by_prompt_marker_and_throttles(client: TestClient, clock: ManualClock) -> None:
    failed, moderated, throttled = start(client, "x [fail]"), start(client, "x [moderated]"), start(client, "x [throttled]")
    assert client.get(f"/runway/v1/tasks/{throttled}", headers=KEY).json()["status"] == "THROTTLED"
    clock.now = 3.0
    assert {k: v for k, v in client.get(f"/runway/v1/tasks/{failed}", headers=KEY).json().items() if k != "failure"} == {
        "id": failed,
        "createdAt": client.get(f"/runway/v1/tasks/{failed}", headers=KEY).json()["createdAt"],
        "status": "FAILED",
        "failureCode": "INTERNAL.BAD_OUTPUT",
    }
    assert client.get(f"/runway/v1/tasks/{moderated}", headers=KEY).json()["failureCode"] == "SAFETY.INPUT.TEXT"


def test_the_emulator_scopes_tasks_per_key_and_cancels_or_deletes(client: TestClient, clock: ManualClock) -> None:
    running, done = start(client), start(client)
    other = {**KEY, "Authorization": "Bearer key_two"}
    assert client.get(f"/runway/v1/tasks/{running}", headers=other).status_code == 404
    assert client.delete(f"/runway/v1/tasks/{running}", headers=KEY).status_code == 204
    assert client.get(f"/runway/v1/tasks/{running}", headers=KEY).json()["status"] == "CANCELLED"
    clock.now = 3.0
    assert client.delete(f"/runway/v1/tasks/{done}", headers=KEY).status_code == 204
    assert client.get(f"/runway/v1/tasks/{done}", headers=KEY).json() == {"error": "Task not found."}
    assert client.get("/runway/v1/nowhere", headers=KEY).json() == {"error": "Not found."}


@pytest.mark.parametrize(
    ("preset", "status", "words"),
    [
        ("rate_limited", 429, "Too many requests"),
        ("insufficient_quota", 429, "daily task limit"),
        ("unauthorized", 401, "API key"),
        ("payment_required", 400, "enough credits"),
        ("server_error", 500, "internal error"),
    ],
)
def test_presets_use_runways_words_and_no_retry_hint(client: TestClient, preset: str, status: int, words: str) -> None:
    assert client.post("/_sandbox/faults", json={"preset": preset, "provider": "runway"}).status_code == 200
    answer = client.post("/runway/v1/text_to_video", json={}, headers=KEY)
    assert answer.status_code == status and words in answer.json()["error"]
    assert "retry-after" not in answer.headers and "retry-after-ms" not in answer.headers
    # `provider` keeps the rule off the other providers.
    assert client.get("/openai/v1/videos", headers={"api-key": "k"}).status_code == 200
    # And the relay reads each as the account state it means.
    translated = runway.error(status, answer.content, creating=True)
    assert translated.status == {"payment_required": 402}.get(preset, status)


def test_the_cdn_origin_swaps_loopback_names_only() -> None:
    def origin(host: str) -> str:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", host.encode())], "scheme": "http", "query_string": b""}
        return storage_origin(emulator.Request(scope))

    assert origin("127.0.0.1:9") == "http://localhost:9"
    assert origin("localhost:9") == "http://127.0.0.1:9"
    assert origin("sandbox.internal:9") == "http://sandbox.internal:9"
