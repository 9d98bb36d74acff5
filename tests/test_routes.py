"""Route names for metrics and logs come from the route table that routed the request: every
request lands in the closed set, under the name of the handler that served it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from relay.routes import OTHER, ROUTE_NAMES, ROUTES
from tests.conftest import Relay


def requests_by_route(relay: Relay) -> dict[str, float]:
    """relay_requests_total summed over statuses, per route label, read from the relay itself."""
    counts: dict[str, float] = {}
    for metric in relay.state.metrics.requests.collect():
        for sample in metric.samples:
            if sample.name == "relay_requests_total":
                route = sample.labels["route"]
                counts[route] = counts.get(route, 0.0) + sample.value
    return counts


def named(relay: Relay, method: str, path: str) -> str:
    """The one route label this request was counted under."""
    before = requests_by_route(relay)
    relay.client.request(method, path, headers={"authorization": "Bearer rk-not-a-key"}, content=b"{}")
    after = requests_by_route(relay)
    changed = [route for route in after if after[route] != before.get(route, 0.0)]
    assert len(changed) == 1, changed
    return changed[0]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/openai/v1/videos", "videos.create"),
        ("GET", "/openai/videos", "videos.list"),
        ("GET", "/openai/v1/videos/video_123", "videos.retrieve"),
        ("DELETE", "/openai/v1/videos/video_123", "videos.delete"),
        ("GET", "/openai/v1/videos/video_123/content", "videos.content"),
        ("HEAD", "/openai/v1/videos/video_123/content", "videos.content"),
        ("POST", "/openai/v1/videos/video_123/remix", "videos.remix"),
        ("POST", "/openai/v1/videos/edits", "videos.edit"),
        ("POST", "/openai/v1/videos/extensions", "videos.extend"),
        ("POST", "/openai/v1/videos/characters", "videos.character_create"),
        ("GET", "/openai/v1/videos/characters/char_1", "videos.character_retrieve"),
        # Served as a retrieve of a video named "edits" (a 404 of that handler): named so.
        ("GET", "/openai/v1/videos/edits", "videos.retrieve"),
        ("PUT", "/openai/v1/videos/video_123", OTHER),
        ("GET", "/openai/v1/videos/video_123/secret-prompt", OTHER),
        ("GET", "/anything/else", OTHER),
        ("GET", "/openai/v1/videos//content", OTHER),
        ("GET", "/openai/v1/videos/video_123/", OTHER),
    ],
)
def test_a_request_is_named_by_the_route_that_served_it(relay: Relay, method: str, path: str, expected: str) -> None:
    assert named(relay, method, path) == expected


def test_every_route_in_the_table_has_its_own_name() -> None:
    names = [route.name for route in ROUTES]
    assert len(set(names)) == len(names) and set(ROUTE_NAMES) == {*names, OTHER}


ids = st.text(alphabet=st.characters(blacklist_characters="/?#%", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
    lambda text: text not in ("edits", "extensions", "characters", ".", "..")
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(ROUTES), st.sampled_from(["/openai/v1", "/openai"]), ids)
def test_every_route_is_named_whatever_its_ids(relay: Relay, route: Any, prefix: str, identifier: str) -> None:
    path = prefix + re.sub(r"\{[a-z_]+\}", lambda _: identifier, route.path)
    assert named(relay, route.method, path) == route.name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=60),
)
def test_whatever_a_client_sends_the_name_is_from_the_closed_set(relay: Relay, method: str, tail: str) -> None:
    assert named(relay, method, "/openai/v1/" + tail.lstrip("/")) in ROUTE_NAMES
