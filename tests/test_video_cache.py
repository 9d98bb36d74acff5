"""Follow-ups find a video's owner from memory (relay.video_cache), and memory never outlives the
database: a video made through one worker is found through another at once, and one deleted
through one worker is gone from the others by their next configuration refresh."""

from __future__ import annotations

import dataclasses
from typing import Any

from conftest import Relay, Sandbox, run_sql
from test_lifecycle import V, wait_completed
from test_relay import assert_envelope, auth

from relay.records import Video
from relay.video_cache import VideoCache

BACKENDS = ("sqlite", "postgresql")


def video(video_id: str, **changes: Any) -> Video:
    fields: dict[str, Any] = {field.name: None for field in dataclasses.fields(Video)}
    fields.update(id=video_id, account="a", key_name="alice", kind="create", status="queued", resource="{}")
    fields.update(created_at=1.0, recorded_at=1.0)
    return Video(**{**fields, **changes})


def test_the_cache_forgets_the_least_recently_used_and_everything_when_deletions_move() -> None:
    cache = VideoCache(max_videos=2)
    cache.put(video("v1"))
    cache.put(video("v2"))
    assert cache.get("v1") is not None  # v1 is now the most recently used
    cache.put(video("v3"))
    assert cache.get("v2") is None and cache.get("v1") is not None and cache.get("v3") is not None
    cache.put(video("v4", deleted_at=5.0))
    assert cache.get("v4") is None  # a deleted video is never remembered
    cache.forget("v1")
    assert cache.get("v1") is None
    cache.deletions_at(0)
    assert len(cache) == 0
    cache.put(video("v5"))
    cache.deletions_at(0)  # unchanged: kept
    assert cache.get("v5") is not None
    cache.deletions_at(1)
    assert cache.get("v5") is None


def test_a_video_made_on_one_worker_is_found_on_another_and_deleted_on_one_is_gone_from_both(make_relay: Any, sandbox: Sandbox) -> None:
    first: Relay = make_relay()
    second: Relay = make_relay(secret_key=first.settings.secret_key)
    first.add_account("a", sandbox.base_api())
    second.state.reload()
    key = first.issue_key("alice")
    created = first.client.post(V, json={"prompt": "a cat", "seconds": "4", "size": "720x1280"}, headers=auth(key))
    assert created.status_code == 200
    video_id = created.json()["id"]
    # Finished first: a retrieve that brings news forgets what it read (the job moved on).
    wait_completed(first, key, video_id)
    # Never seen by the second worker before: read from the database, then remembered.
    assert second.client.get(f"{V}/{video_id}", headers=auth(key)).status_code == 200
    assert second.state.videos.get(video_id) is not None
    upstream_calls = len(sandbox.requests())
    assert second.client.get(f"{V}/{video_id}", headers=auth(key)).status_code == 200
    assert len(sandbox.requests()) == upstream_calls + 1  # remembered, still asked upstream

    assert first.client.delete(f"{V}/{video_id}", headers=auth(key)).status_code == 200
    assert first.state.videos.get(video_id) is None
    # The second worker forgets it at its next refresh (run here by hand rather than waited for).
    second.state.reload()
    assert second.state.videos.get(video_id) is None
    assert_envelope(second.client.get(f"{V}/{video_id}", headers=auth(key)), 404, "video_not_found")
    assert [tuple(row) for row in run_sql(second.state.store, "SELECT value FROM meta WHERE key = 'videos_deleted'")] == [("1",)]


def test_another_key_never_reaches_a_remembered_video(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    alice, bob = relay.issue_key("alice"), relay.issue_key("bob")
    relay.state.reload()
    created = relay.client.post(V, json={"prompt": "a cat"}, headers=auth(alice))
    video_id = created.json()["id"]
    assert relay.client.get(f"{V}/{video_id}", headers=auth(alice)).status_code == 200
    assert relay.state.videos.get(video_id) is not None
    assert_envelope(relay.client.get(f"{V}/{video_id}", headers=auth(bob)), 404, "video_not_found")
