"""The route table: which handler serves a request, and the name its metrics and logs carry.

One table serves both, so a name can never drift from what actually handled the request. Names
are a closed set: a path that matches no route is `other`, whatever the client sent.

`RouteTable` finds a request's route by starlette's rules for a table like this one (a route
that takes the method before one that matches only the path, 405 with `Allow` for those, 404
else) without starlette's router, mounts and middleware stack: those layers cost a retrieve
about 40 µs of CPU (8 %) and a create about 45 µs (docs/performance.md, fifteenth pass).
tests/test_routes.py checks the table against starlette's router on generated requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from . import videos
from .webhooks import endpoints as webhooks

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str
    handler: Handler


# Every route of the front door (/openai/v1 and /openai): the Videos API and the key's webhook
# endpoints. Fixed paths before templated ones: `/videos/edits` must not be read as a video id.
ROUTES: tuple[Route, ...] = (
    Route("POST", "/videos", "videos.create", videos.create_video),
    Route("GET", "/videos", "videos.list", videos.list_videos),
    Route("POST", "/videos/edits", "videos.edit", videos.edit_video),
    Route("POST", "/videos/extensions", "videos.extend", videos.extend_video),
    Route("POST", "/videos/characters", "videos.character_create", videos.create_character),
    Route("GET", "/videos/characters/{character_id}", "videos.character_retrieve", videos.retrieve_character),
    Route("GET", "/videos/{video_id}", "videos.retrieve", videos.retrieve_video),
    Route("DELETE", "/videos/{video_id}", "videos.delete", videos.delete_video),
    Route("GET", "/videos/{video_id}/content", "videos.content", videos.video_content),
    Route("POST", "/videos/{video_id}/remix", "videos.remix", videos.remix_video),
    # The key's webhook endpoints (OpenAI's webhook-endpoint API), served beside the Videos API.
    Route("POST", "/webhook_endpoints", "webhooks.create", webhooks.create_endpoint),
    Route("GET", "/webhook_endpoints", "webhooks.list", webhooks.list_endpoints),
    Route("GET", "/webhook_endpoints/{webhook_endpoint_id}", "webhooks.retrieve", webhooks.retrieve_endpoint),
    Route("POST", "/webhook_endpoints/{webhook_endpoint_id}", "webhooks.update", webhooks.update_endpoint),
    Route("DELETE", "/webhook_endpoints/{webhook_endpoint_id}", "webhooks.delete", webhooks.delete_endpoint),
    Route("POST", "/webhook_endpoints/{webhook_endpoint_id}/rotate_secret", "webhooks.rotate_secret", webhooks.rotate_secret),
    Route("POST", "/webhook_endpoints/{webhook_endpoint_id}/test", "webhooks.test", webhooks.send_test_event),
    Route("GET", "/webhook_event_types", "webhooks.event_types", webhooks.list_event_types),
)
OTHER = "other"
ROUTE_NAMES: tuple[str, ...] = tuple(route.name for route in ROUTES) + (OTHER,)


@dataclass(frozen=True)
class _Path:
    """One path of a table, with the routes that serve it by method."""

    segments: tuple[str | None, ...]  # split at "/"; None where a parameter goes
    parameters: tuple[str, ...]
    by_method: dict[str, Route] = field(default_factory=dict)

    @property
    def allow(self) -> str:
        methods = [name for method in self.by_method for name in ((method, "HEAD") if method == "GET" else (method,))]
        return ", ".join(methods)

    def bind(self, parts: list[str]) -> dict[str, str] | None:
        """The path's parameters if `parts` (as many as `segments`) is this path, else None."""
        values = []
        for expected, part in zip(self.segments, parts, strict=True):
            if expected is None:
                if not part:
                    return None
                values.append(part)
            elif expected != part:
                return None
        return dict(zip(self.parameters, values, strict=True))


def _parsed(template: str) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    parts = template.split("/")
    segments = tuple(None if part.startswith("{") else part for part in parts)
    return segments, tuple(part[1:-1] for part in parts if part.startswith("{"))


class _Paths:
    def __init__(self, routes: Iterable[Route]) -> None:
        paths: dict[str, _Path] = {}
        for route in routes:
            if route.path not in paths:
                paths[route.path] = _Path(*_parsed(route.path))
            paths[route.path].by_method[route.method] = route
        # Only paths with as many segments can match: a retrieve tries 4 paths, not 18.
        self._by_length: dict[int, list[_Path]] = {}
        for path in paths.values():
            self._by_length.setdefault(len(path.segments), []).append(path)

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        parts = path.split("/")
        wrong_method: _Path | None = None
        for candidate in self._by_length.get(len(parts), ()):
            parameters = candidate.bind(parts)
            if parameters is None:
                continue
            route = candidate.by_method.get(method)
            if route is not None:
                return route, parameters
            wrong_method = wrong_method or candidate
        if wrong_method is not None:
            raise HTTPException(405, headers={"Allow": wrong_method.allow})
        raise HTTPException(404)


class RouteTable:
    """The relay's own paths (exact) and the front door's routes under each of its prefixes."""

    def __init__(self, own: Sequence[Route], prefixes: Sequence[str], front_door: Sequence[Route] = ROUTES) -> None:
        self._own = _Paths(own)
        self._front_door = _Paths(front_door)
        # With their slash: "/openai/v1/videos" is under "/openai/v1", "/openai/v1x" is not.
        self._prefixes = tuple(prefix + "/" for prefix in prefixes)

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route and its path parameters; HTTPException 404, or 405 with `Allow`, if none."""
        if "\n" in path:
            # starlette's patterns stopped at a newline (a %0a in the request line): no route has one.
            raise HTTPException(404)
        # HEAD is served by the GET route, under its name.
        method = "GET" if method == "HEAD" else method
        for prefix in self._prefixes:
            if path.startswith(prefix):
                return self._front_door.find(method, path[len(prefix) - 1 :])
        return self._own.find(method, path)
