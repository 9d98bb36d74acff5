"""What the relay keeps for the life of the process stays out of the cycle collector's way: a full
collection that scans it pauses every request in flight."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

from conftest import relay_settings
from starlette.testclient import TestClient

from relay.app import create_app
from relay.config import load_settings
from relay.records import Video
from relay.video_cache import VideoCache


def video(number: int) -> Video:
    return Video(
        id=f"video_{number}",
        account="a",
        key_name="alice",
        kind="create",
        source_video_id=None,
        model="sora-2",
        seconds="4",
        billable_seconds=4.0,
        size="720x1280",
        status="queued",
        progress=0,
        created_at=1.0,
        recorded_at=1.0,
        finished_at=None,
        deleted_at=None,
        resource='{"id": "video_1"}',
        usd=0.4,
        charge_state="reserved",
        charged_at=1.0,
    )


def test_remembered_videos_are_not_tracked_by_the_cycle_collector() -> None:
    cache = VideoCache()
    for number in range(100):
        cache.put(video(number))
    gc.collect()
    assert not any(gc.is_tracked(values) for values in cache._videos.values())
    assert cache.get("video_7") == video(7)  # and they come back whole


def test_the_relay_freezes_what_it_built_to_start_unless_told_not_to(tmp_path: Path) -> None:
    assert load_settings({"RELAY_DATABASE": str(tmp_path / "a.db")}).gc_freeze is True
    assert load_settings({"RELAY_DATABASE": str(tmp_path / "a.db"), "RELAY_GC_FREEZE": "0"}).gc_freeze is False
    gc.unfreeze()
    try:
        settings = relay_settings(tmp_path, gc_freeze=False)
        with TestClient(create_app(settings)):
            assert gc.get_freeze_count() == 0
        with TestClient(create_app(dataclasses.replace(settings, gc_freeze=True))) as client:
            assert gc.get_freeze_count() > 0
            assert client.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()
