"""Sticky sessions: which session a request belongs to, stored only as a hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

SESSION_FIELD = "session_id"
# Looked up case-insensitively (HTTP header names are).
SESSION_HEADERS = ("session-id", "x-session-id", "session_id")
_MAX_SESSION_ID_LENGTH = 512


def session_id(fields: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """From the body's `session_id` first, then the headers; blank or absurdly long ids are ignored."""
    candidates = [fields.get(SESSION_FIELD)] + [headers.get(name) for name in SESSION_HEADERS]
    for candidate in candidates:
        if candidate is not None:
            value = candidate.strip()
            if 0 < len(value) <= _MAX_SESSION_ID_LENGTH:
                return value
    return None


def session_hash(session: str) -> str:
    return hashlib.sha256(b"video-relay session\x00" + session.encode()).hexdigest()


def evict_sessions(store: Store, *, account: str | None = None, session_prefix: str | None = None) -> int:
    """Drop sticky mappings (an account's, those whose hash starts with a prefix, or all); return how many."""
    return store.evict_sessions(account=account, session_prefix=session_prefix)
