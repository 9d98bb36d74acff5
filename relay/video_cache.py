"""Who owns a video, from memory: the ownership lookup of every follow-up without a database read.

A video's owner (its key and account) never changes, so a record read once can answer later
retrieves, downloads, remixes and deletes. What can change under it is handled where it matters:

* a video deleted through this process is forgotten at once; one deleted through another worker
  or replica is forgotten when this process sees the database's deletion counter move, which it
  polls with the configuration (RELAY_REFRESH_INTERVAL_SECONDS, 0.5 s by default);
* a job's status is only a hint here: whenever a poll brings news the record is forgotten (the
  next lookup reads the database), and the store's compare-and-set on the status, not this copy,
  decides whether a final status settles the job;
* a video not in the database is never remembered, so one just created through another worker is
  found by the next lookup.

Bounded: the least recently used records go first, past MAX_VIDEOS. The configuration refresh
runs in a thread, hence the lock. Records are kept as tuples of their (atomic) fields, which
Python's cycle collector stops tracking: ten thousand Video objects kept it busy for tens of
milliseconds per full collection (measured: pauses of up to 50 ms under load), tuples not.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import fields
from typing import Any, Final

from .records import Video

MAX_VIDEOS: Final = 10_000
_FIELDS: Final = tuple(field.name for field in fields(Video))


class VideoCache:
    def __init__(self, max_videos: int = MAX_VIDEOS) -> None:
        self._videos: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._max_videos = max_videos
        self._lock = threading.Lock()
        # The database's deletion counter when this cache was last emptied for it.
        self.deletions_seen: int | None = None

    def get(self, video_id: str) -> Video | None:
        with self._lock:
            values = self._videos.get(video_id)
            if values is None:
                return None
            self._videos.move_to_end(video_id)
        return Video(*values)

    def put(self, video: Video) -> None:
        if video.deleted_at is not None:
            return
        values = tuple(getattr(video, name) for name in _FIELDS)
        with self._lock:
            self._videos[video.id] = values
            self._videos.move_to_end(video.id)
            if len(self._videos) > self._max_videos:
                self._videos.popitem(last=False)

    def forget(self, video_id: str) -> None:
        with self._lock:
            self._videos.pop(video_id, None)

    def deletions_at(self, counter: int) -> None:
        """The database's deletion counter as just read: a move empties the cache."""
        with self._lock:
            if counter != self.deletions_seen:
                self._videos.clear()
                self.deletions_seen = counter

    def __len__(self) -> int:
        return len(self._videos)
