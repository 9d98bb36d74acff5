"""Cursor pages of the relay's own lists (videos, webhook endpoints), as OpenAI's lists take them."""

from __future__ import annotations

from .errors import RelayError, shown

DEFAULT_PAGE_LIMIT = 20


def page_limit(raw: str | None) -> int:
    """`limit` from the query: 0 to 100 (the contract's bounds; 0 asks only whether any exist,
    in `has_more`), 20 when absent."""
    if raw is None or raw == "":
        return DEFAULT_PAGE_LIMIT
    # ASCII digits only: int() also reads '1_0' and other scripts' digits, which no client means.
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else -1
    if not 0 <= limit <= 100:
        raise RelayError(400, f"Invalid limit '{shown(raw)}': use a whole number from 0 to 100.", code="invalid_limit", param="limit")
    return limit
