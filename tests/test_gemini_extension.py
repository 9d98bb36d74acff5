"""Veo's video extension behind the OpenAI contract's `POST /videos/extensions`: the completed
source's file goes to predictLongRunning as `instances[0].video`, 7 s are rendered and billed."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import Relay, Sandbox
from openai.types import Video
from test_gemini import poll_until_done, sdk, veo_account
from test_relay import assert_envelope, auth
from test_veo_prices import by_model

V = "/openai/v1/videos"
VEO31 = "veo-3.1-generate-preview"


def completed_video(relay: Relay, sandbox: Sandbox, key: str, model: str = VEO31) -> dict[str, Any]:
    created = relay.client.post(V, json={"prompt": "A lighthouse", "model": model, "seconds": "8", "size": "1280x720"}, headers=auth(key))
    assert created.status_code == 200, created.text
    done = poll_until_done(relay, key, created.json()["id"])
    assert done["status"] == "completed"
    return done


def predict_bodies(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [json.loads(base64.b64decode(r["body_b64"])) for r in sandbox.requests() if r["path"].endswith(":predictLongRunning")]


def test_the_sdk_extends_a_veo_video_and_seven_seconds_are_billed(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    source = completed_video(relay, sandbox, key)
    sandbox.reset()
    # The SDK's videos.extend sends multipart and, in 3.57, refuses a {"id": ...} reference client-side;
    # its generic post sends the contract's JSON body.
    body = {"video": {"id": source["id"]}, "prompt": "The storm clears", "seconds": "7"}
    extended = sdk(relay, key).post("/videos/extensions", body=body, cast_to=Video)
    assert extended.id != source["id"] and extended.model == VEO31 and extended.seconds == "15" and extended.status == "queued"
    # The source's operation was read again for its file, then the extension sent.
    assert [r["method"] for r in sandbox.requests()][:2] == ["GET", "POST"]
    (sent,) = predict_bodies(sandbox)
    instance = sent["instances"][0]
    assert instance["prompt"] == "The storm clears"
    assert instance["video"]["uri"].startswith(f"{sandbox.url}/v1beta/files/") and "image" not in instance
    assert sent["parameters"] == {"aspectRatio": "16:9", "resolution": "720p"}
    assert poll_until_done(relay, key, extended.id)["status"] == "completed"
    # The source's 8 s and the extension's 7 s, each at veo-3.1's $0.40 a second.
    assert by_model(relay) == {VEO31: (15, pytest.approx(0.40 * 15), 0)}


def test_an_extension_of_a_1080p_video_answers_and_bills_the_720p_veo_renders(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    created = relay.client.post(V, json={"prompt": "A tower", "model": VEO31, "seconds": "8", "size": "1080x1920"}, headers=auth(key))
    assert created.status_code == 200, created.text
    source = poll_until_done(relay, key, created.json()["id"])
    body = {"video": {"id": source["id"]}, "prompt": "The fog lifts", "seconds": "7"}
    extended = relay.client.post(f"{V}/extensions", json=body, headers=auth(key))
    assert extended.status_code == 200, extended.text
    assert extended.json()["size"] == "720x1280"
    assert predict_bodies(sandbox)[-1]["parameters"] == {"aspectRatio": "9:16", "resolution": "720p"}
    assert relay.state.store.video(extended.json()["id"]).size == "720x1280"


@pytest.mark.parametrize("as_multipart", [False, True])
def test_an_extension_with_an_input_reference_is_refused_not_dropped(relay: Relay, sandbox: Sandbox, as_multipart: bool) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    source = completed_video(relay, sandbox, key)
    sandbox.reset()
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
    if as_multipart:
        fields = {"video[id]": source["id"], "prompt": "More", "seconds": "7"}
        refused = relay.client.post(
            f"{V}/extensions", data=fields, files={"input_reference": ("i.png", b"\x89PNG", "image/png")}, headers=auth(key)
        )
    else:
        body = {"video": {"id": source["id"]}, "prompt": "More", "seconds": "7", "input_reference": {"image_url": image}}
        refused = relay.client.post(f"{V}/extensions", json=body, headers=auth(key))
    error = assert_envelope(refused, 400, "invalid_value")
    assert error["param"] == "input_reference" and predict_bodies(sandbox) == []


@pytest.mark.parametrize(("seconds", "param"), [("8", "seconds"), (None, "seconds")])
def test_veo_extends_by_seven_seconds_only(relay: Relay, sandbox: Sandbox, seconds: str | None, param: str) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    source = completed_video(relay, sandbox, key)
    sandbox.reset()
    body: dict[str, Any] = {"video": {"id": source["id"]}, "prompt": "More"}
    if seconds is not None:
        body["seconds"] = seconds
    error = assert_envelope(relay.client.post(f"{V}/extensions", json=body, headers=auth(key)), 400, "invalid_value")
    assert error["param"] == param and predict_bodies(sandbox) == []


def test_a_video_of_a_model_without_extension_is_a_clear_400(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    source = completed_video(relay, sandbox, key, model="veo-3.0-generate-001")
    sandbox.reset()
    body = {"video": {"id": source["id"]}, "prompt": "More", "seconds": "7"}
    error = assert_envelope(relay.client.post(f"{V}/extensions", json=body, headers=auth(key)), 400, "unsupported_for_model")
    assert "veo-3.0-generate-001" in error["message"] and predict_bodies(sandbox) == []


def test_a_source_still_rendering_cannot_be_extended(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    created = relay.client.post(V, json={"prompt": "A lighthouse", "model": VEO31, "seconds": "8"}, headers=auth(key))
    assert created.status_code == 200, created.text
    # Google says the operation is still running when the relay reads it for its file.
    sandbox.fault(method="GET", path_contains="/operations/", status=200, body={"name": "models/x/operations/y", "done": False}, times=1)
    body = {"video": {"id": created.json()["id"]}, "prompt": "More", "seconds": "7"}
    assert_envelope(relay.client.post(f"{V}/extensions", json=body, headers=auth(key)), 409, "video_not_ready")


def test_remix_and_edits_of_a_veo_video_stay_a_400_naming_the_type(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    source = completed_video(relay, sandbox, key)
    remix = assert_envelope(
        relay.client.post(f"{V}/{source['id']}/remix", json={"prompt": "x"}, headers=auth(key)), 400, "unsupported_for_account_type"
    )
    assert remix["message"].startswith("Remix requests are not supported on gemini accounts")
    edit = relay.client.post(f"{V}/edits", json={"video": {"id": source["id"]}, "prompt": "x"}, headers=auth(key))
    assert assert_envelope(edit, 400, "unsupported_for_account_type")["message"].startswith("Edit requests")


def test_a_multipart_extension_names_its_source_by_video_id(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    source = completed_video(relay, sandbox, key)
    sandbox.reset()
    form = {"video[id]": (None, source["id"]), "prompt": (None, "The storm clears"), "seconds": (None, "7")}
    extended = relay.client.post(f"{V}/extensions", files=form, headers=auth(key))
    assert extended.status_code == 200, extended.text
    assert predict_bodies(sandbox)[0]["instances"][0]["video"]["uri"].startswith(f"{sandbox.url}/v1beta/files/")
    uploaded = relay.client.post(
        f"{V}/extensions",
        data={"prompt": "x", "seconds": "7", "model": VEO31},
        files={"video": ("in.mp4", b"\x00" * 16, "video/mp4")},
        headers=auth(key),
    )
    assert assert_envelope(uploaded, 400, "invalid_value")["param"] == "video"
