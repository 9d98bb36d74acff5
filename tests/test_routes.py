"""Route names for metrics and logs come from the route table that routed the request: every
request lands in the closed set, under the name of the handler that served it."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route as StarletteRoute, Router

from relay.routes import OTHER, ROUTE_NAMES, ROUTES, Route, RouteTable
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


# -- the route table against starlette's router ----------------------------------------------------


async def _unused(request: Request) -> Response:
    raise AssertionError("only routes are compared")


OWN = [Route("GET", "/healthz", "own.healthz", _unused), Route("GET", "/metrics", "own.metrics", _unused)]
PREFIXES = ["/openai/v1", "/openai"]


def routed_by_table(method: str, path: str, root_path: str = "") -> tuple[Any, ...]:
    try:
        route, parameters = RouteTable(OWN, PREFIXES).find(method, get_route_path({"path": path, "root_path": root_path}))
    except HTTPException as error:
        allowed = frozenset((error.headers or {}).get("Allow", "").split(", ")) - {""}
        return (error.status_code, allowed)
    return (route.name, parameters)


def routed_by_starlette(method: str, path: str, root_path: str = "") -> tuple[Any, ...]:
    """What starlette's router made of the same table, as the relay used it up to now."""
    served: list[tuple[Any, ...]] = []

    def endpoint(by_method: dict[str, Route]) -> Any:
        async def record(request: Request) -> Response:
            served.append((by_method[request.method if request.method != "HEAD" else "GET"].name, dict(request.path_params)))
            return Response()

        return record

    def routes(table: list[Route]) -> list[BaseRoute]:
        paths: dict[str, dict[str, Route]] = {}
        for route in table:
            paths.setdefault(route.path, {})[route.method] = route
        return [StarletteRoute(path, endpoint(by_method), methods=list(by_method)) for path, by_method in paths.items()]

    front_door = Router(routes(list(ROUTES)), redirect_slashes=False)
    router = Router([*routes(OWN), *(Mount(prefix, app=front_door) for prefix in PREFIXES)], redirect_slashes=False)
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": [], "query_string": b"", "app": object()}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    try:
        asyncio.run(router(scope, receive, send))
    except HTTPException as error:
        allowed = frozenset(method.strip() for method in (error.headers or {}).get("Allow", "").split(",")) - {""}
        return (error.status_code, allowed)
    return served[0]


SEGMENTS = st.sampled_from(
    ["", "openai", "v1", "videos", "edits", "extensions", "characters", "content", "remix", "webhook_endpoints", "rotate_secret"]
    + ["test", "webhook_event_types", "healthz", "metrics", "video_1", ".", "..", "%2F", " ", "\r", "\x00", "é"]
)


TEXT = st.text(alphabet=st.characters(blacklist_characters="/\n", blacklist_categories=("Cs",)), max_size=8)


@st.composite
def request_paths(draw: st.DrawFn) -> str:
    """Mostly the table's own paths with odd ids, some one segment off, some anything at all."""
    template = draw(st.sampled_from([route.path for route in (*ROUTES, *OWN)]))
    parts = [draw(SEGMENTS | TEXT) if part.startswith("{") else part for part in template.split("/")[1:]]
    shape = draw(st.sampled_from(["as is"] * 5 + ["one more", "one less", "anything"]))
    if shape == "one more":
        parts.insert(draw(st.integers(0, len(parts))), draw(SEGMENTS | TEXT))
    elif shape == "one less":
        del parts[draw(st.integers(0, len(parts) - 1))]
    elif shape == "anything":
        parts = draw(st.lists(SEGMENTS | TEXT, max_size=6))
    prefix = (
        ""
        if template in ("/healthz", "/metrics")
        else draw(st.sampled_from(["/openai/v1"] * 3 + ["/openai"] * 3 + ["", "/openai/v1/v1", "/open"]))
    )
    return prefix + "/" + "/".join(parts) + draw(st.sampled_from(["", "", "", "/"]))


@settings(max_examples=500, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "get"]),
    path=request_paths(),
    root_path=st.sampled_from(["", "", "/relay"]),
)
def test_the_table_routes_as_starlettes_router_did(method: str, path: str, root_path: str) -> None:
    routed = routed_by_table(method, root_path + path, root_path)
    event(str(routed[0]))
    assert routed == routed_by_starlette(method, root_path + path, root_path)


@pytest.mark.parametrize("path", ["/openai/v1/videos/a\nb", "/openai/v1/videos\n", "/healthz\n", "/openai/v1/videos/x/content\n"])
def test_a_newline_in_the_path_matches_no_route(path: str) -> None:
    # starlette's patterns let a trailing newline through ("$"); no route of the relay has one.
    assert routed_by_table("GET", path) == (404, frozenset())
