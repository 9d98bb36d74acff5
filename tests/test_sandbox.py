"""Tests of the sandbox upstream (relay/sandbox/) through in-process and real-socket clients."""

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
from typing import Any, Protocol

import httpx
import openai
import pytest
import uvicorn
from conftest import ManualClock
from starlette.applications import Starlette
from starlette.testclient import TestClient

from relay.sandbox import create_sandbox_app

ASSETS = Path(__file__).resolve().parent.parent / "relay" / "sandbox_assets"
SAMPLE_MP4 = (ASSETS / "sample.mp4").read_bytes()
TOKEN = "sk-test-alpha"
OTHER_TOKEN = "sk-test-beta"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_TOKEN}"}
VIDEO_KEYS = {
    "id",
    "object",
    "model",
    "status",
    "progress",
    "created_at",
    "completed_at",
    "expires_at",
    "prompt",
    "size",
    "seconds",
    "remixed_from_video_id",
    "error",
}


class JsonResponse(Protocol):
    """What the assertions need from either TestClient's or httpx's responses."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_sandbox_app(complete_after_seconds=0))


def create(client: TestClient, prompt: str = "a calico cat", headers: dict[str, str] = AUTH, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/videos", json={"prompt": prompt, **extra}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def form(**fields: str) -> dict[str, tuple[None, str]]:
    """Text-only multipart fields (httpx url-encodes ``data=`` unless files are present)."""
    return {name: (None, value) for name, value in fields.items()}


def assert_error(response: JsonResponse, status: int, param: str | None = None, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def add_fault(client: TestClient, **rule: Any) -> str:
    response = client.post("/_sandbox/faults", json=rule)
    assert response.status_code == 200, response.text
    rule_id: str = response.json()["id"]
    return rule_id


# --------------------------------------------------------------------------- create


def test_create_json_returns_full_queued_resource(client: TestClient) -> None:
    response = client.post("/v1/videos", json={"prompt": "a cat", "model": "sora-2-pro", "seconds": "8", "size": "1792x1024"}, headers=AUTH)
    assert response.status_code == 200
    video = response.json()
    assert set(video) == VIDEO_KEYS
    assert re.fullmatch(r"video_[0-9a-f]{32}", video["id"])
    assert video | {"id": None, "created_at": None} == {
        "id": None,
        "object": "video",
        "model": "sora-2-pro",
        "status": "queued",
        "progress": 0,
        "created_at": None,
        "completed_at": None,
        "expires_at": None,
        "prompt": "a cat",
        "size": "1792x1024",
        "seconds": "8",
        "remixed_from_video_id": None,
        "error": None,
    }
    assert isinstance(video["created_at"], int)
    assert response.headers["x-ratelimit-limit-requests"] == "100"
    assert response.headers["x-ratelimit-remaining-requests"] == "99"
    assert response.headers["x-ratelimit-reset-requests"] == "36s"
    assert response.headers["x-request-id"].startswith("req_")


def test_create_defaults_and_rate_limit_headers_count_down(client: TestClient) -> None:
    for _ in range(9):
        create(client)
    response = client.post("/v1/videos", json={"prompt": "tenth"}, headers=AUTH)
    video = response.json()
    assert (video["model"], video["seconds"], video["size"]) == ("sora-2", "4", "720x1280")
    assert response.headers["x-ratelimit-remaining-requests"] == "90"
    assert response.headers["x-ratelimit-reset-requests"] == "6m0s"


def test_create_multipart_with_bracket_keys_and_file(client: TestClient) -> None:
    response = client.post(
        "/v1/videos",
        files=form(prompt="from form", seconds="12", size="1280x720", **{"input_reference[image_url]": "https://x/y.png"}),
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    video = response.json()
    assert (video["prompt"], video["seconds"], video["size"]) == ("from form", "12", "1280x720")
    upload = client.post(
        "/v1/videos",
        data={"prompt": "with upload"},
        files={"input_reference": ("ref.png", b"\x89PNG\r\n--not-a-boundary\r\n\x00", "image/png")},
        headers=AUTH,
    )
    assert upload.status_code == 200, upload.text


@pytest.mark.parametrize(
    ("payload", "param", "code"),
    [
        ({}, "prompt", "missing_required_parameter"),
        ({"prompt": ""}, "prompt", "missing_required_parameter"),
        ({"prompt": "x" * 32001}, "prompt", "string_above_max_length"),
        ({"prompt": "ok", "seconds": "5"}, "seconds", "invalid_value"),
        ({"prompt": "ok", "seconds": 4}, "seconds", "invalid_type"),
        ({"prompt": "ok", "size": "640x480"}, "size", "invalid_value"),
        ({"prompt": "ok", "input_reference": {"image_url": "a", "file_id": "b"}}, "input_reference", None),
        ({"prompt": "ok [bytes=10]"}, "prompt", None),
    ],
)
def test_create_validation_errors(client: TestClient, payload: dict[str, Any], param: str, code: str | None) -> None:
    response = client.post("/v1/videos", json=payload, headers=AUTH)
    assert_error(response, 400, param, code)
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        # A lone surrogate escape: grammatical JSON, no character. It crashed the sandbox (a 500).
        (b'{"prompt": "a \\ud800 cat"}', "application/json"),
        (b"prompt=x", "application/x-www-form-urlencoded"),
        (b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx', "multipart/form-data; boundary=b"),
    ],
)
def test_create_rejects_unparseable_bodies(client: TestClient, body: bytes, content_type: str) -> None:
    response = client.post("/v1/videos", content=body, headers={**AUTH, "content-type": content_type})
    assert_error(response, 400)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}, {"Authorization": "sk-x"}])
def test_missing_or_malformed_auth_is_401(client: TestClient, headers: dict[str, str]) -> None:
    assert_error(client.post("/v1/videos", json={"prompt": "x"}, headers=headers), 401)
    assert_error(client.get("/v1/videos", headers=headers), 401)


def test_all_prefixes_serve_the_contract_and_unknown_routes_get_envelopes(client: TestClient) -> None:
    video = create(client)
    for prefix in ("/v1", "/backend-api", ""):
        assert client.get(f"{prefix}/videos/{video['id']}", headers=AUTH).json()["id"] == video["id"]
    assert_error(client.get("/v1/nothing-here", headers=AUTH), 404)
    assert_error(client.put("/v1/videos", headers=AUTH), 405)


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_progresses_to_completed() -> None:
    clock = ManualClock()
    client = TestClient(create_sandbox_app(complete_after_seconds=10, clock=clock))
    video = create(client)
    url = f"/v1/videos/{video['id']}"
    assert client.get(url, headers=AUTH).json()["status"] == "queued"
    progress = []
    for now in (1003.0, 1006.0, 1009.0):
        clock.now = now
        current = client.get(url, headers=AUTH).json()
        assert (current["status"], current["completed_at"], current["expires_at"]) == ("in_progress", None, None)
        progress.append(current["progress"])
    assert progress == sorted(progress) and 0 < progress[0] < progress[-1] < 100
    assert client.get(f"{url}/content", headers=AUTH).status_code == 404
    clock.now = 1010.0
    done = client.get(url, headers=AUTH).json()
    assert (done["status"], done["progress"], done["error"]) == ("completed", 100, None)
    assert done["completed_at"] >= done["created_at"]
    assert done["expires_at"] == done["completed_at"] + 3600


def test_fail_marker_ends_failed_with_moderation_error(client: TestClient) -> None:
    video = create(client, "something [fail]")
    failed = client.get(f"/v1/videos/{video['id']}", headers=AUTH).json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "moderation_blocked" and failed["error"]["message"]
    assert_error(client.get(f"/v1/videos/{video['id']}/content", headers=AUTH), 404)


# --------------------------------------------------------------------------- content


@pytest.mark.parametrize(
    ("variant", "filename", "media_type"),
    [
        (None, "sample.mp4", "video/mp4"),
        ("video", "sample.mp4", "video/mp4"),
        ("thumbnail", "thumbnail.webp", "image/webp"),
        ("spritesheet", "spritesheet.jpg", "image/jpeg"),
    ],
)
def test_content_variants_are_the_asset_files(client: TestClient, variant: str | None, filename: str, media_type: str) -> None:
    video = create(client)
    params = {"variant": variant} if variant else {}
    response = client.get(f"/v1/videos/{video['id']}/content", params=params, headers=AUTH)
    assert response.status_code == 200
    assert response.content == (ASSETS / filename).read_bytes()
    assert response.headers["content-type"] == media_type
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["accept-ranges"] == "bytes"


def test_content_rejects_bad_variant(client: TestClient) -> None:
    video = create(client)
    response = client.get(f"/v1/videos/{video['id']}/content?variant=gif", headers=AUTH)
    assert_error(response, 400, "variant")


def assert_padded_mp4(data: bytes, total: int) -> None:
    assert len(data) == total
    assert data[: len(SAMPLE_MP4)] == SAMPLE_MP4 and data[4:8] == b"ftyp"
    assert struct.unpack(">I4s", data[len(SAMPLE_MP4) : len(SAMPLE_MP4) + 8]) == (total - len(SAMPLE_MP4), b"free")
    assert not any(data[len(SAMPLE_MP4) + 8 :])


def test_bytes_marker_pads_video_with_a_free_box(client: TestClient) -> None:
    total = 3 * 1024 * 1024 + 7
    video = create(client, f"long one [bytes={total}]")
    response = client.get(f"/v1/videos/{video['id']}/content", headers=AUTH)
    assert response.headers["content-length"] == str(total)
    assert_padded_mp4(response.content, total)
    thumbnail = client.get(f"/v1/videos/{video['id']}/content?variant=thumbnail", headers=AUTH)
    assert thumbnail.content == (ASSETS / "thumbnail.webp").read_bytes()


def test_content_bytes_option_applies_to_every_video() -> None:
    client = TestClient(create_sandbox_app(complete_after_seconds=0, content_bytes=len(SAMPLE_MP4) + 8))
    video = create(client)
    assert_padded_mp4(client.get(f"/v1/videos/{video['id']}/content", headers=AUTH).content, len(SAMPLE_MP4) + 8)
    with pytest.raises(ValueError):
        create_sandbox_app(content_bytes=len(SAMPLE_MP4) + 3)


def test_huge_padding_uses_largesize_box_and_serves_tail_ranges_instantly() -> None:
    total = 5 * 1024**3
    client = TestClient(create_sandbox_app(complete_after_seconds=0, content_bytes=total))
    url = f"/v1/videos/{create(client)['id']}/content"
    start = len(SAMPLE_MP4)
    header = client.get(url, headers={**AUTH, "Range": f"bytes={start}-{start + 15}"})
    assert header.status_code == 206
    assert struct.unpack(">I4sQ", header.content) == (1, b"free", total - start)
    tail = client.get(url, headers={**AUTH, "Range": "bytes=-100000"})
    assert tail.status_code == 206
    assert tail.content == bytes(100000)
    assert tail.headers["content-range"] == f"bytes {total - 100000}-{total - 1}/{total}"


@pytest.mark.parametrize(
    ("range_header", "span"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=100-", (100, None)),
        ("bytes=-50", (-50, None)),
        ("bytes=2000-999999", (2000, None)),
    ],
)
def test_range_requests_return_206(client: TestClient, range_header: str, span: tuple[int, int | None]) -> None:
    url = f"/v1/videos/{create(client)['id']}/content"
    response = client.get(url, headers={**AUTH, "Range": range_header})
    assert response.status_code == 206
    start, stop = span
    expected = SAMPLE_MP4[start:stop]
    assert response.content == expected
    first = start % len(SAMPLE_MP4)
    assert response.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{len(SAMPLE_MP4)}"
    assert response.headers["content-length"] == str(len(expected))


@pytest.mark.parametrize("range_header", ["bytes=999999-", "bytes=-0"])
def test_unsatisfiable_range_is_416(client: TestClient, range_header: str) -> None:
    url = f"/v1/videos/{create(client)['id']}/content"
    response = client.get(url, headers={**AUTH, "Range": range_header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(SAMPLE_MP4)}"


@pytest.mark.parametrize("range_header", ["bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=abc"])
def test_unusable_range_is_ignored(client: TestClient, range_header: str) -> None:
    url = f"/v1/videos/{create(client)['id']}/content"
    response = client.get(url, headers={**AUTH, "Range": range_header})
    assert (response.status_code, response.content) == (200, SAMPLE_MP4)


def test_etag_conditional_requests(client: TestClient) -> None:
    url = f"/v1/videos/{create(client)['id']}/content"
    etag = client.get(url, headers=AUTH).headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert client.get(url, headers=AUTH).headers["etag"] == etag
    assert client.get(url + "?variant=thumbnail", headers=AUTH).headers["etag"] != etag
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        not_modified = client.get(url, headers={**AUTH, "If-None-Match": if_none_match})
        assert (not_modified.status_code, not_modified.content, not_modified.headers["etag"]) == (304, b"", etag)
    assert client.get(url, headers={**AUTH, "If-None-Match": '"other"'}).status_code == 200
    stale = client.get(url, headers={**AUTH, "Range": "bytes=0-9", "If-Range": '"stale"'})
    assert (stale.status_code, stale.content) == (200, SAMPLE_MP4)
    fresh = client.get(url, headers={**AUTH, "Range": "bytes=0-9", "If-Range": etag})
    assert (fresh.status_code, fresh.content) == (206, SAMPLE_MP4[:10])


def test_head_reports_length_without_body(client: TestClient) -> None:
    url = f"/v1/videos/{create(client, '[bytes=900000]')['id']}/content"
    response = client.head(url, headers=AUTH)
    assert (response.status_code, response.content, response.headers["content-length"]) == (200, b"", "900000")


# --------------------------------------------------------------------------- list, delete, scoping


def collect_pages(client: TestClient, order: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    params: dict[str, Any] = {"order": order, "limit": limit}
    while True:
        body = client.get("/v1/videos", params=params, headers=AUTH).json()
        ids = [video["id"] for video in body["data"]]
        assert body["object"] == "list" and (body["first_id"], body["last_id"]) == (ids[0], ids[-1])
        pages.append(ids)
        if not body["has_more"]:
            return pages
        params["after"] = body["last_id"]


def test_list_pages_through_both_orders(client: TestClient) -> None:
    created = [create(client, f"video {index}")["id"] for index in range(7)]
    create(client, headers=OTHER_AUTH)
    assert collect_pages(client, "asc", 3) == [created[0:3], created[3:6], created[6:7]]
    assert collect_pages(client, "desc", 3) == [created[6:3:-1], created[3:0:-1], created[0:1]]
    default = client.get("/v1/videos", headers=AUTH).json()
    assert [video["id"] for video in default["data"]] == created[::-1] and default["has_more"] is False
    exact = client.get("/v1/videos", params={"limit": 7}, headers=AUTH).json()
    assert exact["has_more"] is False
    assert set(exact["data"][0]) == VIDEO_KEYS


def test_list_empty_and_invalid_parameters(client: TestClient) -> None:
    assert client.get("/v1/videos", headers=AUTH).json() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    invalid: list[tuple[dict[str, str | int], str]] = [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
        ({"after": "video_nope"}, "after"),
    ]
    for params, param in invalid:
        assert_error(client.get("/v1/videos", params=params, headers=AUTH), 400, param)


def test_delete(client: TestClient) -> None:
    video = create(client)
    response = client.delete(f"/v1/videos/{video['id']}", headers=AUTH)
    assert response.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert_error(client.get(f"/v1/videos/{video['id']}", headers=AUTH), 404, "video_id")
    assert_error(client.delete(f"/v1/videos/{video['id']}", headers=AUTH), 404, "video_id")
    assert client.get("/v1/videos", headers=AUTH).json()["data"] == []


def test_videos_are_scoped_per_token(client: TestClient) -> None:
    video = create(client)
    base = f"/v1/videos/{video['id']}"
    assert_error(client.get(base, headers=OTHER_AUTH), 404)
    assert_error(client.get(f"{base}/content", headers=OTHER_AUTH), 404)
    assert_error(client.delete(base, headers=OTHER_AUTH), 404)
    assert_error(client.post(f"{base}/remix", json={"prompt": "x"}, headers=OTHER_AUTH), 404)
    assert client.get("/v1/videos", headers=OTHER_AUTH).json()["data"] == []
    assert client.get(base, headers=AUTH).status_code == 200


# --------------------------------------------------------------------------- remix, edits, extensions, characters


def test_remix() -> None:
    clock = ManualClock()
    client = TestClient(create_sandbox_app(complete_after_seconds=5, clock=clock))
    source = create(client, seconds="8", size="1024x1792")
    too_early = client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "again"}, headers=AUTH)
    assert_error(too_early, 400, "video_id")
    clock.now += 5
    assert_error(client.post("/v1/videos/video_unknown/remix", json={"prompt": "again"}, headers=AUTH), 404)
    assert_error(client.post(f"/v1/videos/{source['id']}/remix", json={}, headers=AUTH), 400, "prompt")
    remix = client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "again"}, headers=AUTH)
    assert remix.status_code == 200 and "x-ratelimit-remaining-requests" in remix.headers
    body = remix.json()
    assert set(body) == VIDEO_KEYS
    assert (body["status"], body["remixed_from_video_id"], body["seconds"], body["size"], body["prompt"]) == (
        "queued",
        source["id"],
        "8",
        "1024x1792",
        "again",
    )


def test_edits_json_multipart_and_upload(client: TestClient) -> None:
    source = create(client, seconds="12")
    edit = {"video": {"id": source["id"]}, "prompt": "make it red"}
    as_json = client.post("/v1/videos/edits", json=edit, headers=AUTH)
    assert (as_json.status_code, as_json.json()["seconds"], as_json.json()["prompt"]) == (200, "12", "make it red")
    as_form = client.post("/v1/videos/edits", files=form(prompt="blue", **{"video[id]": source["id"]}), headers=AUTH)
    assert (as_form.status_code, as_form.json()["seconds"]) == (200, "12")
    uploaded = client.post("/v1/videos/edits", data={"prompt": "green"}, files={"video": ("in.mp4", SAMPLE_MP4, "video/mp4")}, headers=AUTH)
    assert uploaded.status_code == 200 and uploaded.json()["remixed_from_video_id"] is None
    assert_error(client.post("/v1/videos/edits", json={"prompt": "no source"}, headers=AUTH), 400, "video")
    assert_error(client.post("/v1/videos/edits", json={"video": {"id": "video_x"}, "prompt": "p"}, headers=AUTH), 404)


def test_extensions_report_stitched_seconds(client: TestClient) -> None:
    source = create(client, seconds="8")
    as_json = client.post("/v1/videos/extensions", json={"video": {"id": source["id"]}, "prompt": "more", "seconds": "4"}, headers=AUTH)
    assert (as_json.status_code, as_json.json()["seconds"]) == (200, "12")
    as_form = client.post("/v1/videos/extensions", files=form(prompt="more", seconds="12", **{"video[id]": source["id"]}), headers=AUTH)
    assert (as_form.status_code, as_form.json()["seconds"]) == (200, "20")
    missing = client.post("/v1/videos/extensions", json={"video": {"id": source["id"]}, "prompt": "more"}, headers=AUTH)
    assert_error(missing, 400, "seconds", "missing_required_parameter")


def test_characters(client: TestClient) -> None:
    response = client.post(
        "/v1/videos/characters",
        data={"name": "Captain"},
        files={"video": ("me.mp4", SAMPLE_MP4, "video/mp4")},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    character = response.json()
    assert re.fullmatch(r"char_[0-9a-f]{32}", character["id"]) and character["name"] == "Captain"
    assert isinstance(character["created_at"], int)
    assert client.get(f"/v1/videos/characters/{character['id']}", headers=AUTH).json() == character
    assert_error(client.get(f"/v1/videos/characters/{character['id']}", headers=OTHER_AUTH), 404, "character_id")
    assert_error(client.post("/v1/videos/characters", json={"name": "x"}, headers=AUTH), 400)
    no_name = client.post("/v1/videos/characters", files={"video": ("me.mp4", b"x", "video/mp4")}, headers=AUTH)
    assert_error(no_name, 400, "name")
    no_video = client.post("/v1/videos/characters", files=form(name="x"), headers=AUTH)
    assert_error(no_video, 400, "video")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_official_sdk_round_trip() -> None:
    app = create_sandbox_app(complete_after_seconds=0)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http_client:
            sdk = openai.AsyncOpenAI(
                api_key=TOKEN,
                base_url="http://sandbox/v1",
                http_client=http_client,  # type: ignore[arg-type]  # the SDK also accepts httpx clients
                max_retries=0,
            )
            reference = ("ref.png", b"\x89PNG", "image/png")
            video = await sdk.videos.create(prompt="sdk cat", seconds="8", input_reference=reference)
            assert (await sdk.videos.retrieve(video.id)).status == "completed"
            assert (await sdk.videos.download_content(video.id)).content == SAMPLE_MP4
            extended = await sdk.videos.extend(video=("in.mp4", SAMPLE_MP4, "video/mp4"), prompt="longer", seconds="4")
            assert extended.seconds == "4"
            remix = await sdk.videos.remix(video.id, prompt="again")
            assert remix.remixed_from_video_id == video.id
            listed = [item.id async for item in sdk.videos.list(limit=1)]
            assert listed == [remix.id, extended.id, video.id]
            character = await sdk.videos.create_character(name="Cat", video=("cat.mp4", SAMPLE_MP4, "video/mp4"))
            assert character.id is not None
            assert (await sdk.videos.get_character(character.id)).name == "Cat"
            assert (await sdk.videos.delete(remix.id)).deleted is True
            with pytest.raises(openai.NotFoundError):
                await sdk.videos.retrieve(remix.id)

    asyncio.run(scenario())
    recorded = app.state.sandbox.requests[0]
    assert recorded["content_type"].startswith("multipart/form-data; boundary=")
    assert b'name="input_reference"; filename="ref.png"' in base64.b64decode(recorded["body_b64"])


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("preset", "status", "error_type", "code"),
    [
        ("rate_limited", 429, "rate_limit_error", "rate_limit_exceeded"),
        ("insufficient_quota", 429, "insufficient_quota", "insufficient_quota"),
        ("unauthorized", 401, "invalid_request_error", "invalid_api_key"),
        ("payment_required", 402, None, None),
        ("server_error", 500, "server_error", None),
    ],
)
def test_presets(client: TestClient, preset: str, status: int, error_type: str | None, code: str | None) -> None:
    add_fault(client, preset=preset)
    response = client.post("/v1/videos", json={"prompt": "x"}, headers=AUTH)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    if error_type is not None:
        assert (error["type"], error["code"]) == (error_type, code)
    assert response.headers["x-request-id"].startswith("req_")


def test_rate_limited_preset_body_and_headers(client: TestClient) -> None:
    add_fault(client, preset="rate_limited", resets_in_seconds=7, headers={"X-Extra": "1"})
    response = client.get("/v1/videos", headers=AUTH)
    assert response.json() == {
        "error": {
            "message": "Rate limit reached",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
            "resets_in_seconds": 7,
        }
    }
    assert (response.headers["retry-after"], response.headers["x-ratelimit-reset-requests"]) == ("7", "7s")
    assert response.headers["x-extra"] == "1"


def test_slow_preset_delays_then_answers_normally(client: TestClient) -> None:
    add_fault(client, preset="slow", delay_seconds=0.2)
    started = time.perf_counter()
    response = client.post("/v1/videos", json={"prompt": "x"}, headers=AUTH)
    assert time.perf_counter() - started >= 0.2
    assert response.status_code == 200 and response.json()["status"] == "queued"


def test_fail_option_installs_a_permanent_preset() -> None:
    for fail, status in [("429", 429), ("401", 401), ("402", 402), ("500", 500), ("insufficient_quota", 429)]:
        client = TestClient(create_sandbox_app(fail=fail))
        for _ in range(3):
            assert client.get("/v1/videos", headers=AUTH).status_code == status
        assert client.get("/_sandbox/faults").json()[0]["times"] is None
    slow = TestClient(create_sandbox_app(fail="slow")).get("/_sandbox/faults").json()
    assert (slow[0]["delay_seconds"], slow[0]["status"]) == (3.0, None)
    with pytest.raises(ValueError):
        create_sandbox_app(fail="503")


def test_times_token_method_and_path_filters(client: TestClient) -> None:
    video = create(client)
    add_fault(client, status=503, body={"error": "busy"}, times=2, token=TOKEN, method="get", path_contains="/content")
    content = f"/v1/videos/{video['id']}/content"
    assert client.get(content, headers=OTHER_AUTH).status_code == 404
    assert client.get(f"/v1/videos/{video['id']}", headers=AUTH).status_code == 200
    assert client.head(content, headers=AUTH).status_code == 200
    assert [client.get(content, headers=AUTH).status_code for _ in range(3)] == [503, 503, 200]
    rules = client.get("/_sandbox/faults").json()
    assert (rules[0]["remaining"], rules[0]["hits"], rules[0]["method"]) == (0, 2, "GET")


def test_rules_apply_in_insertion_order_and_can_be_removed(client: TestClient) -> None:
    first = add_fault(client, status=500, times=1)
    add_fault(client, status=502)
    assert [client.get("/v1/videos", headers=AUTH).status_code for _ in range(2)] == [500, 502]
    assert client.delete(f"/_sandbox/faults/{first}").json() == {"id": first, "deleted": True}
    assert client.delete(f"/_sandbox/faults/{first}").status_code == 404
    assert [rule["status"] for rule in client.get("/_sandbox/faults").json()] == [502]
    assert client.delete("/_sandbox/faults").json() == {"deleted": 1}
    assert client.get("/_sandbox/faults").json() == []
    assert client.get("/v1/videos", headers=AUTH).status_code == 200


def test_raw_body_content_type_and_headers(client: TestClient) -> None:
    add_fault(
        client,
        status=502,
        raw_body="<html>Bad Gateway</html>",
        content_type="text/html",
        headers={"Retry-After": "3", "X-Request-Id": "req_fixed"},
    )
    response = client.get("/v1/videos", headers=AUTH)
    assert (response.status_code, response.text) == (502, "<html>Bad Gateway</html>")
    assert response.headers["content-type"] == "text/html"
    assert (response.headers["retry-after"], response.headers["x-request-id"]) == ("3", "req_fixed")


def test_status_null_adds_headers_to_the_real_response(client: TestClient) -> None:
    add_fault(client, headers={"x-ratelimit-remaining-requests": "0"})
    response = client.post("/v1/videos", json={"prompt": "x"}, headers=AUTH)
    assert response.status_code == 200 and response.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize(
    "rule",
    [
        {},
        {"status": 42},
        {"status": "500"},
        {"action": "explode"},
        {"times": 0},
        {"time": 1},
        {"body": {"a": 1}, "raw_body": "x"},
        {"headers": {"x": 1}},
        {"delay_seconds": -1},
        {"preset": "teapot"},
        {"preset": "server_error", "resets_in_seconds": 3},
        {"status": 500, "probability": 1.5},
        {"status": 500, "probability": -0.1},
        {"status": 500, "probability": "0.5"},
        {"status": 500, "probability": True},
        {"status": 500, "probability": None},
    ],
)
def test_invalid_rules_are_rejected(client: TestClient, rule: dict[str, Any]) -> None:
    assert_error(client.post("/_sandbox/faults", json=rule), 400)
    assert client.get("/_sandbox/faults").json() == []


def statuses(client: TestClient, count: int) -> list[int]:
    return [client.get("/v1/videos", headers=AUTH).status_code for _ in range(count)]


def test_probability_applies_a_rule_to_a_share_of_requests() -> None:
    client = TestClient(create_sandbox_app(seed=7))
    add_fault(client, status=500, probability=0.25)
    seen = statuses(client, 800)
    assert set(seen) == {200, 500}
    assert 0.18 < seen.count(500) / len(seen) < 0.32
    [rule] = client.get("/_sandbox/faults").json()
    assert (rule["probability"], rule["hits"], rule["remaining"]) == (0.25, seen.count(500), None)


def test_probability_draws_do_not_consume_times_and_fall_through() -> None:
    client = TestClient(create_sandbox_app(seed=3))
    add_fault(client, status=500, probability=0.5, times=5)
    add_fault(client, status=502, probability=0)  # never applies
    add_fault(client, status=503, probability=1)
    seen = statuses(client, 60)
    # The first rule applied exactly its 5 times, not in a row: draws that missed used none of them.
    # Every other request fell through the never-applying rule to the last one.
    assert seen.count(500) == 5 and seen.count(503) == 55
    assert seen[:5] != [500] * 5
    first, never, always = client.get("/_sandbox/faults").json()
    assert (first["hits"], first["remaining"], never["hits"], always["hits"]) == (5, 0, 0, 55)


def test_probability_with_a_seed_is_repeatable() -> None:
    runs = []
    for _ in range(2):
        client = TestClient(create_sandbox_app(seed=11))
        add_fault(client, status=429, probability=0.1)
        add_fault(client, status=500, probability=0.1)
        runs.append(statuses(client, 200))
    assert runs[0] == runs[1]
    assert {200, 429, 500} == set(runs[0])


def test_stats_count_every_contract_request_and_never_reset() -> None:
    app = create_sandbox_app(complete_after_seconds=0)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as http_client:
            assert (await http_client.get("/_sandbox/stats")).json() == {"open_streams": 0, "requests_total": 0, "content_bytes_total": 0}
            await http_client.post("/v1/videos", json={"prompt": "x"}, headers=AUTH)
            await http_client.get("/backend-api/videos/video_missing", headers=AUTH)  # a 404 counts too
            await http_client.get("/nowhere")  # unknown contract route, no auth
            await http_client.post("/_sandbox/faults", json={"preset": "server_error", "times": 1})
            await http_client.post("/_sandbox/faults", json={"action": "reset", "times": 1})
            assert (await http_client.get("/v1/videos", headers=AUTH)).status_code == 500
            with pytest.raises(httpx.ReadError):
                await http_client.get("/v1/videos", headers=AUTH)
            # Control routes are not counted, and clearing the request log leaves the total alone.
            await http_client.get("/_sandbox/requests")
            await http_client.delete("/_sandbox/requests")
            stats = (await http_client.get("/_sandbox/stats")).json()
            assert stats == {"open_streams": 0, "requests_total": 5, "content_bytes_total": 0}

    asyncio.run(scenario())


def test_reset_in_process_raises_read_error() -> None:
    app = create_sandbox_app()

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as http_client:
            await http_client.post("/_sandbox/faults", json={"action": "reset", "times": 1})
            with pytest.raises(httpx.ReadError):
                await http_client.get("/v1/videos", headers=AUTH)
            assert (await http_client.get("/v1/videos", headers=AUTH)).status_code == 200

    asyncio.run(scenario())


# --------------------------------------------------------------------------- request recording


def test_requests_record_raw_headers_and_exact_body(client: TestClient) -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi\r\n--XyZ\r\n'
        b'Content-Disposition: form-data; name="input_reference"; filename="r.bin"\r\n\r\n' + bytes(range(256)) + b"\r\n--XyZ--\r\n"
    )
    headers = [
        ("X-First", "1"),
        ("Authorization", f"Bearer {TOKEN}"),
        ("Content-Type", "multipart/form-data; boundary=XyZ"),
        ("X-Last", "z"),
    ]
    response = client.post("/v1/videos?trace=1", content=body, headers=headers)
    assert response.status_code == 200, response.text
    add_fault(client, preset="server_error")
    client.get("/backend-api/videos", headers=OTHER_AUTH)
    first, second = client.get("/_sandbox/requests").json()
    assert (first["method"], first["path"], first["query"], first["token"]) == ("POST", "/v1/videos", "trace=1", TOKEN)
    assert base64.b64decode(first["body_b64"]) == body
    assert first["content_type"] == "multipart/form-data; boundary=XyZ"
    names = [name for name, _ in first["headers"]]
    assert all(name == name.lower() for name in names)
    sent_names = {"x-first", "authorization", "content-type", "x-last"}
    ours = [[name, value] for name, value in first["headers"] if name in sent_names]
    assert ours == [[name.lower(), value] for name, value in headers]
    assert (second["path"], second["token"], second["body_b64"]) == ("/backend-api/videos", OTHER_TOKEN, "")
    assert client.delete("/_sandbox/requests").json() == {"deleted": 2}
    assert client.get("/_sandbox/requests").json() == []


def test_request_log_keeps_the_last_thousand() -> None:
    app = create_sandbox_app()

    async def scenario() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as http_client:
            for index in range(1003):
                await http_client.get(f"/v1/videos/video_{index}")
            log: list[dict[str, Any]] = (await http_client.get("/_sandbox/requests")).json()
            # The counter keeps going past the log's cap.
            assert (await http_client.get("/_sandbox/stats")).json()["requests_total"] == 1003
            return log

    log = asyncio.run(scenario())
    assert len(log) == 1000
    assert (log[0]["path"], log[-1]["path"]) == ("/v1/videos/video_3", "/v1/videos/video_1002")


# --------------------------------------------------------------------------- real socket


@pytest.fixture(scope="module")
def live_sandbox() -> Iterator[tuple[str, Starlette]]:
    app = create_sandbox_app(complete_after_seconds=0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    server.should_exit = True
    thread.join(5)
    sock.close()


def test_reset_over_tcp_drops_the_connection(live_sandbox: tuple[str, Starlette], caplog: pytest.LogCaptureFixture) -> None:
    base_url, _ = live_sandbox
    with httpx.Client(base_url=base_url) as http_client:
        http_client.delete("/_sandbox/faults")
        http_client.post("/_sandbox/faults", json={"action": "reset", "times": 1, "path_contains": "/videos"})
        with pytest.raises(httpx.ReadError):
            http_client.get("/v1/videos", headers=AUTH)
        assert http_client.get("/v1/videos", headers=AUTH).status_code == 200
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def test_slow_body_over_tcp_trickles_after_headers(live_sandbox: tuple[str, Starlette]) -> None:
    base_url, _ = live_sandbox
    with httpx.Client(base_url=base_url) as http_client:
        http_client.delete("/_sandbox/faults")
        video_id = http_client.post("/v1/videos", json={"prompt": "x"}, headers=AUTH).json()["id"]
        http_client.post(
            "/_sandbox/faults",
            json={
                "action": "slow_body",
                "chunk_bytes": 1000,
                "chunk_interval_seconds": 0.05,
                "path_contains": "/content",
            },
        )
        started = time.perf_counter()
        with http_client.stream("GET", f"/v1/videos/{video_id}/content", headers=AUTH) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(len(SAMPLE_MP4))
            assert time.perf_counter() - started < 0.05
            chunks = list(response.iter_raw())
        assert b"".join(chunks) == SAMPLE_MP4
        assert time.perf_counter() - started >= 0.15
        http_client.post(
            "/_sandbox/faults",
            json={"action": "slow_body", "chunk_bytes": 10**6, "chunk_interval_seconds": 0.3, "times": 1},
        )
        with pytest.raises(httpx.ReadTimeout):
            http_client.get("/v1/videos", headers=AUTH, timeout=httpx.Timeout(5, read=0.1))
        http_client.delete("/_sandbox/faults")
