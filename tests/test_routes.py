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


# Every route by its shape: (method, path template with {id}, name).
SHAPES = [
    ("POST", "videos", "videos.create"),
    ("GET", "videos", "videos.list"),
    ("GET", "videos/{id}", "videos.retrieve"),
    ("DELETE", "videos/{id}", "videos.delete"),
    ("GET", "videos/{id}/content", "videos.content"),
    ("POST", "videos/{id}/remix", "videos.remix"),
    ("POST", "videos/edits", "videos.edit"),
    ("POST", "videos/extensions", "videos.extend"),
    ("POST", "videos/characters", "videos.character_create"),
    ("GET", "videos/characters/{id}", "videos.character_retrieve"),
]
ids = st.text(alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda text: text not in ("edits", "extensions", "characters")
)


@given(st.sampled_from(SHAPES), st.sampled_from(["/openai/v1/", "/openai/"]), ids, st.booleans())
def test_every_shape_is_named_whatever_its_id(shape: tuple[str, str, str], prefix: str, video_id: str, slash: bool) -> None:
    method, template, name = shape
    path = prefix + template.replace("{id}", video_id) + ("/" if slash else "")
    assert route_name(method, path) == name


@given(st.sampled_from(SHAPES), ids, st.text(min_size=1, max_size=20))
def test_a_shape_with_anything_after_it_is_other(shape: tuple[str, str, str], video_id: str, extra: str) -> None:
    method, template, _ = shape
    path = "/openai/v1/" + template.replace("{id}", video_id) + "/x/" + extra
    assert route_name(method, path) == "other"


@given(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]), st.text(max_size=80))
def test_a_path_outside_the_front_door_is_other(method: str, path: str) -> None:
    if not path.startswith("/openai/"):
        assert route_name(method, path) == "other"
    else:
        assert route_name(method, path) in ROUTE_NAMES
