"""Route names for metrics and logs: every path lands in the closed set."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from relay.routes import ROUTE_NAMES, route_name


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/openai/v1/videos", "videos.create"),
        ("GET", "/openai/videos", "videos.list"),
        ("GET", "/openai/v1/videos/video_123", "videos.retrieve"),
        ("DELETE", "/openai/v1/videos/video_123", "videos.delete"),
        ("GET", "/openai/v1/videos/video_123/content", "videos.content"),
        ("POST", "/openai/v1/videos/video_123/remix", "videos.remix"),
        ("POST", "/openai/v1/videos/edits", "videos.edit"),
        ("POST", "/openai/v1/videos/extensions", "videos.extend"),
        ("POST", "/openai/v1/videos/characters", "videos.character_create"),
        ("GET", "/openai/v1/videos/characters/char_1", "videos.character_retrieve"),
        ("GET", "/openai/v1/videos/edits", "other"),
        ("PUT", "/openai/v1/videos/video_123", "other"),
        ("GET", "/openai/v1/videos/video_123/secret-prompt", "other"),
        ("GET", "/anything/else", "other"),
        ("GET", "/openai/v1/videos//content", "other"),
    ],
)
def test_route_names(method: str, path: str, expected: str) -> None:
    assert route_name(method, path) == expected


@given(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]), st.text(max_size=80))
def test_any_path_gets_a_name_from_the_closed_set(method: str, path: str) -> None:
    assert route_name(method, path) in ROUTE_NAMES
