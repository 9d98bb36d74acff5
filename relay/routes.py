"""The route table: which handler serves a request, and the name its metrics and logs carry.

One table serves both, so a name can never drift from what actually handled the request. Names
are a closed set: a path that matches no route is `other`, whatever the client sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from . import videos
from .caller import request_facts
from .webhooks import endpoints as webhooks

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class FrontDoorRoute:
    method: str
    path: str
    name: str
    handler: Handler


# Every route of the front door (/openai/v1 and /openai): the Videos API and the key's webhook
# endpoints. Fixed paths before templated ones: `/videos/edits` must not be read as a video id.
ROUTES: tuple[FrontDoorRoute, ...] = (
    FrontDoorRoute("POST", "/videos", "videos.create", videos.create_video),
    FrontDoorRoute("GET", "/videos", "videos.list", videos.list_videos),
    FrontDoorRoute("POST", "/videos/edits", "videos.edit", videos.edit_video),
    FrontDoorRoute("POST", "/videos/extensions", "videos.extend", videos.extend_video),
    FrontDoorRoute("POST", "/videos/characters", "videos.character_create", videos.create_character),
    FrontDoorRoute("GET", "/videos/characters/{character_id}", "videos.character_retrieve", videos.retrieve_character),
    FrontDoorRoute("GET", "/videos/{video_id}", "videos.retrieve", videos.retrieve_video),
    FrontDoorRoute("DELETE", "/videos/{video_id}", "videos.delete", videos.delete_video),
    FrontDoorRoute("GET", "/videos/{video_id}/content", "videos.content", videos.video_content),
    FrontDoorRoute("POST", "/videos/{video_id}/remix", "videos.remix", videos.remix_video),
    # The key's webhook endpoints (OpenAI's webhook-endpoint API), served beside the Videos API.
    FrontDoorRoute("POST", "/webhook_endpoints", "webhooks.create", webhooks.create_endpoint),
    FrontDoorRoute("GET", "/webhook_endpoints", "webhooks.list", webhooks.list_endpoints),
    FrontDoorRoute("GET", "/webhook_endpoints/{webhook_endpoint_id}", "webhooks.retrieve", webhooks.retrieve_endpoint),
    FrontDoorRoute("POST", "/webhook_endpoints/{webhook_endpoint_id}", "webhooks.update", webhooks.update_endpoint),
    FrontDoorRoute("DELETE", "/webhook_endpoints/{webhook_endpoint_id}", "webhooks.delete", webhooks.delete_endpoint),
    FrontDoorRoute("POST", "/webhook_endpoints/{webhook_endpoint_id}/rotate_secret", "webhooks.rotate_secret", webhooks.rotate_secret),
    FrontDoorRoute("POST", "/webhook_endpoints/{webhook_endpoint_id}/test", "webhooks.test", webhooks.send_test_event),
    FrontDoorRoute("GET", "/webhook_event_types", "webhooks.event_types", webhooks.list_event_types),
)
OTHER = "other"
ROUTE_NAMES: tuple[str, ...] = tuple(route.name for route in ROUTES) + (OTHER,)


def _dispatch(by_method: dict[str, FrontDoorRoute]) -> Handler:
    async def endpoint(request: Request) -> Response:
        # Starlette answers HEAD with a GET route; the name and handler are the GET's.
        route = by_method[request.method if request.method != "HEAD" else "GET"]
        request_facts(request).route = route.name
        return await route.handler(request)

    return endpoint


def front_door_router() -> Router:
    """The front door's routes (Videos, webhook endpoints) under one mount (no slash-fixing redirects: see relay.app)."""
    paths: dict[str, dict[str, FrontDoorRoute]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = route
    return Router(
        [Route(path, _dispatch(by_method), methods=list(by_method)) for path, by_method in paths.items()],
        redirect_slashes=False,
    )
