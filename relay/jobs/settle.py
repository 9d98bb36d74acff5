"""A job's latest status, stored once per change: the one place a final status settles a job."""

from __future__ import annotations

import json
from typing import Any

from ..body import is_valid_unicode
from ..providers import model_name
from ..records import TERMINAL_STATUSES, Video
from ..state import RelayState
from .pacing import next_poll_delay


async def settle_status(state: RelayState, video: Video, resource: dict[str, Any], *, hint_seconds: float | None) -> str | None:
    """Store the job's latest status (from a client's retrieve or the watcher's poll); count a
    completion or failure once. Returns the final status this call moved the job to, if any.

    News counts as the watcher's poll: its next one is paced from now.
    """
    if not is_news(video, resource):
        return None  # spare the database a write on every poll
    status = text_value(resource.get("status"))
    assert status is not None  # is_news
    progress = json_number(resource.get("progress"))
    now = state.clock()
    # What this process remembers of the job is older than this news, whether or not it settles.
    state.videos.forget(video.id)
    finished = await state.db(
        state.store.update_video,
        video.id,
        status=status,
        progress=int(progress) if progress is not None else None,
        expires_at=json_number(resource.get("expires_at")),
        resource=json.dumps(resource),
        now=now,
        next_poll_at=now + next_poll_delay(state.settings, recorded_at=video.recorded_at, now=now, hint_seconds=hint_seconds),
    )
    if not finished:
        return None
    state.deliveries_due.set()  # its webhook events, if the key has endpoints, go out now
    state.metrics.videos.labels(status).inc()
    if status == "completed":
        # A label from a closed set: the price table's models. An upstream may echo any string.
        model = model_name(video.model) if video.model and state.prices.knows(model_name(video.model)) else "other"
        if video.billable_seconds:
            state.metrics.video_seconds.labels(video.account, video.key_name, model).inc(video.billable_seconds)
        # A job the watcher gave up had its reservation released; completing after all, it is charged now.
        given_up = video.watch_next_at is None and video.watch_stopped is not None
        charged_now = video.charge_state == "reserved" or (video.charge_state == "released" and given_up)
        if video.usd and charged_now:
            state.metrics.cost_usd.labels(video.account, video.key_name, model).inc(video.usd)
    return status


def is_news(video: Video, resource: dict[str, Any]) -> bool:
    """Whether an upstream's video object changes what the relay knows of an unfinished job."""
    status = text_value(resource.get("status"))
    if status is None or video.status in TERMINAL_STATUSES:
        return False
    return status != video.status or json_number(resource.get("progress")) != video.progress


def text_value(value: Any) -> str | None:
    """A non-empty string from upstream JSON that can be stored (no lone surrogates)."""
    return value if isinstance(value, str) and value and is_valid_unicode(value) else None


def json_number(value: Any) -> float | None:
    """A JSON number as a float; anything else (booleans included) as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)
