"""The whole video lifecycle through an in-process relay: affinity, ownership, paging, status, content."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from conftest import Relay, Sandbox
from test_relay import assert_envelope, auth, metric_value, outcomes, tokens_seen

ASSET = (Path(__file__).resolve().parent.parent / "relay" / "sandbox_assets" / "sample.mp4").read_bytes()
V = "/openai/v1/videos"


def create(relay: Relay, key: str, **fields: Any) -> dict[str, Any]:
    response = relay.client.post(V, json={"prompt": "a cat", "seconds": "8", "size": "1280x720", **fields}, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_completed(relay: Relay, key: str, video_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        video = relay.client.get(f"{V}/{video_id}", headers=auth(key)).json()
        if video["status"] in ("completed", "failed"):
            return video  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError("video did not finish")


def test_create_poll_download(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key("alice")
    video = create(relay, key)
    stored = relay.state.store.video(video["id"])
    assert stored is not None and (stored.account, stored.key_name, stored.model, stored.seconds, stored.size) == (
        "a",
        "alice",
        "sora-2",
        "8",
        "1280x720",
    )
    retrieved = relay.client.get(f"{V}/{video['id']}", headers=auth(key))
    assert retrieved.status_code == 200
    assert retrieved.headers["openai-poll-after-ms"] == "2000"
    done = wait_completed(relay, key, video["id"])
    assert done["status"] == "completed"
    assert relay.state.store.video(video["id"]).status == "completed"  # type: ignore[union-attr]
    content = relay.client.get(f"{V}/{video['id']}/content", headers=auth(key))
    assert content.status_code == 200 and content.content == ASSET
    assert content.headers["content-type"] == "video/mp4"
    assert content.headers["content-length"] == str(len(ASSET))
    thumbnail = relay.client.get(f"{V}/{video['id']}/content?variant=thumbnail", headers=auth(key))
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp"
    assert_envelope(relay.client.get(f"{V}/{video['id']}/content?variant=poster", headers=auth(key)), 400, "invalid_variant")


def test_completion_counted_once(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key("alice")
    ok = create(relay, key, model="sora-2-pro", seconds="12")
    failing = create(relay, key, prompt="a cat [fail]")
    wait_completed(relay, key, ok["id"])
    wait_completed(relay, key, failing["id"])
    for _ in range(3):
        relay.client.get(f"{V}/{ok['id']}", headers=auth(key))
        relay.client.get(f"{V}/{failing['id']}", headers=auth(key))
    assert metric_value(relay, 'relay_videos_total{status="completed"}') == 1
    assert metric_value(relay, 'relay_videos_total{status="failed"}') == 1
    assert metric_value(relay, 'relay_video_seconds_total{account="a",key="alice",model="sora-2-pro"}') == 12
    finished = [o["job_status"] for o in outcomes(relay) if o["job_status"]]
    assert sorted(finished) == ["completed", "failed"]


def test_follow_ups_go_to_the_owner_even_when_rate_limited(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    key = relay.issue_key()
    video = create(relay, key)  # on a
    relay.state.store.set_account_state("a", "rate_limited", now=time.time(), until=time.time() + 300)
    relay.state.reload()
    sandbox.reset()
    wait_completed(relay, key, video["id"])
    assert relay.client.get(f"{V}/{video['id']}/content", headers=auth(key)).status_code == 200
    remix = relay.client.post(f"{V}/{video['id']}/remix", json={"prompt": "now at night"}, headers=auth(key))
    assert remix.status_code == 200, remix.text
    assert remix.json()["remixed_from_video_id"] == video["id"]
    edit = relay.client.post(f"{V}/edits", json={"prompt": "in pastel", "video": {"id": video["id"]}}, headers=auth(key))
    extension = relay.client.post(
        f"{V}/extensions", json={"prompt": "go on", "seconds": "4", "video": {"id": video["id"]}}, headers=auth(key)
    )
    assert edit.status_code == 200 and extension.status_code == 200, (edit.text, extension.text)
    fresh = create(relay, key)  # new work avoids the rate-limited account
    assert set(tokens_seen(sandbox)[:-1]) == {"tok-a"} and tokens_seen(sandbox)[-1] == "tok-b"
    store = relay.state.store
    assert [store.video(v["id"]).account for v in (remix.json(), edit.json(), extension.json(), fresh)] == ["a", "a", "a", "b"]  # type: ignore[union-attr]
    extended = store.video(extension.json()["id"])
    assert extended is not None and extended.kind == "extension" and extended.billable_seconds == 4
    assert extended.source_video_id == video["id"]


def test_owner_unauthorized_or_removed(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    key = relay.issue_key()
    video = create(relay, key)
    relay.state.store.set_account_state("a", "unauthorized", now=time.time())
    relay.state.reload()
    assert_envelope(relay.client.get(f"{V}/{video['id']}", headers=auth(key)), 503, "video_account_unauthorized")
    relay.state.store.remove_account("a")
    relay.state.reload()
    assert_envelope(relay.client.get(f"{V}/{video['id']}", headers=auth(key)), 410, "video_account_removed")


def test_ownership_is_per_key_even_for_all(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    alice = relay.issue_key("alice")
    root = relay.issue_key("root", ("all",))
    video = create(relay, alice)
    for method, path in [
        ("GET", f"{V}/{video['id']}"),
        ("GET", f"{V}/{video['id']}/content"),
        ("DELETE", f"{V}/{video['id']}"),
        ("POST", f"{V}/{video['id']}/remix"),
        ("GET", f"{V}/video_doesnotexist"),
    ]:
        response = relay.client.request(method, path, json={"prompt": "x"} if method == "POST" else None, headers=auth(root))
        assert_envelope(response, 404, "video_not_found")
    edit = relay.client.post(f"{V}/edits", json={"prompt": "x", "video": {"id": video["id"]}}, headers=auth(root))
    assert_envelope(edit, 404)
    assert relay.client.get(V, headers=auth(root)).json()["data"] == []
    assert [v["id"] for v in relay.client.get(V, headers=auth(alice)).json()["data"]] == [video["id"]]


def test_list_pages_with_cursors(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    other = relay.issue_key("other")
    ids = [create(relay, key)["id"] for _ in range(5)]
    create(relay, other)
    created = {i: relay.state.store.video(i).created_at for i in ids}  # type: ignore[union-attr]
    newest_first = sorted(ids, key=lambda i: (created[i], i), reverse=True)

    def walk(order: str) -> list[str]:
        seen, after = [], None
        while True:
            query = f"?limit=2&order={order}" + (f"&after={after}" if after else "")
            page = relay.client.get(V + query, headers=auth(key)).json()
            assert page["object"] == "list"
            seen += [v["id"] for v in page["data"]]
            assert page["first_id"] == (page["data"][0]["id"] if page["data"] else None)
            assert page["last_id"] == (page["data"][-1]["id"] if page["data"] else None)
            if not page["has_more"]:
                return seen
            after = page["last_id"]

    assert walk("desc") == newest_first
    assert walk("asc") == list(reversed(newest_first))
    everything = relay.client.get(V, headers=auth(key)).json()
    assert [v["id"] for v in everything["data"]] == newest_first and everything["has_more"] is False
    assert all(v["object"] == "video" for v in everything["data"])
    for query, param in [
        ("?limit=-1", "limit"),
        ("?limit=101", "limit"),
        ("?limit=x", "limit"),
        ("?order=up", "order"),
        ("?after=video_nope", "after"),
    ]:
        assert assert_envelope(relay.client.get(V + query, headers=auth(key)), 400)["param"] == param


def test_delete(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    video = create(relay, key)
    wait_completed(relay, key, video["id"])
    deleted = relay.client.delete(f"{V}/{video['id']}", headers=auth(key))
    assert deleted.status_code == 200 and deleted.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    assert relay.client.get(V, headers=auth(key)).json()["data"] == []
    assert_envelope(relay.client.get(f"{V}/{video['id']}", headers=auth(key)), 404)


def test_characters(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    alice = relay.issue_key("alice")
    bob = relay.issue_key("bob")
    files = {"video": ("clip.mp4", ASSET, "video/mp4")}
    created = relay.client.post(f"{V}/characters", data={"name": "Captain"}, files=files, headers=auth(alice))
    assert created.status_code == 200, created.text
    character = created.json()
    got = relay.client.get(f"{V}/characters/{character['id']}", headers=auth(alice))
    assert got.status_code == 200 and got.json()["name"] == "Captain"
    assert_envelope(relay.client.get(f"{V}/characters/{character['id']}", headers=auth(bob)), 404, "character_not_found")


def test_range_and_conditional_downloads(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    video = create(relay, key)
    wait_completed(relay, key, video["id"])
    url = f"{V}/{video['id']}/content"
    part = relay.client.get(url, headers={**auth(key), "Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == ASSET[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(ASSET)}"
    etag = relay.client.get(url, headers=auth(key)).headers["etag"]
    unchanged = relay.client.get(url, headers={**auth(key), "If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert relay.client.get(url, headers={**auth(key), "Range": f"bytes={10**9}-"}).status_code == 416


def test_quota_exhaustion_is_not_worth_retrying(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(max_failover=0)
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(preset="insufficient_quota", times=1)
    quota = relay.client.post(V, json={"prompt": "x"}, headers=auth(key))
    assert quota.status_code == 429 and quota.headers["x-should-retry"] == "false"
    sandbox.fault(preset="rate_limited", resets_in_seconds=5, times=1, headers={"retry-after": "5"})
    limited = relay.client.post(V, json={"prompt": "x"}, headers=auth(key))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "5"
    assert limited.headers.get("x-should-retry") != "false"


def test_multipart_edit_with_bracket_reference_goes_to_owner(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    key = relay.issue_key()
    video = create(relay, key)  # a
    create(relay, key)  # b; LRU would now pick a, then b...
    wait_completed(relay, key, video["id"])
    sandbox.reset()
    boundary = "edit-boundary"
    raw = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nmake it rain\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="video[id]"\r\n\r\n{video["id"]}\r\n--{boundary}--\r\n'
    ).encode()
    for _ in range(2):
        response = relay.client.post(
            f"{V}/edits", content=raw, headers={**auth(key), "content-type": f"multipart/form-data; boundary={boundary}"}
        )
        assert response.status_code == 200, response.text
    assert tokens_seen(sandbox) == ["tok-a", "tok-a"]
    assert base64.b64decode(sandbox.requests()[0]["body_b64"]) == raw
