"""The control API under ``/_sandbox`` (no auth): fault rules, the request log, counters.

* ``POST /_sandbox/faults`` adds a rule (or a ``preset``), ``GET`` lists, ``DELETE`` clears;
  ``DELETE /_sandbox/faults/{id}`` removes one rule.
* ``GET /_sandbox/requests`` lists recorded requests to every provider (newest last, the last
  1000), ``DELETE`` clears them.
* ``GET /_sandbox/stats``: ``requests_total`` (provider requests received since start; never
  reset, so a long run can be counted past the request log's cap), ``open_streams`` and
  ``content_bytes_total`` (content bytes handed to the server since start).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .errors import ApiError
from .faults import add_rule, rule_error, rule_listing
from .forms import Fields, parse_json_object
from .state import sandbox_state


async def read_control_json(request: Request) -> Fields:
    payload = parse_json_object(await request.body())
    if not payload:
        raise rule_error("expected a non-empty JSON object")
    return payload


async def post_fault(request: Request) -> Response:
    rule = add_rule(sandbox_state(request), await read_control_json(request))
    return JSONResponse({"id": rule.id})


async def list_faults(request: Request) -> Response:
    return JSONResponse([rule_listing(rule) for rule in sandbox_state(request).faults])


async def clear_faults(request: Request) -> Response:
    faults = sandbox_state(request).faults
    count = len(faults)
    faults.clear()
    return JSONResponse({"deleted": count})


async def delete_fault(request: Request) -> Response:
    faults = sandbox_state(request).faults
    rule_id = request.path_params["rule_id"]
    for rule in faults:
        if rule.id == rule_id:
            faults.remove(rule)
            return JSONResponse({"id": rule_id, "deleted": True})
    raise ApiError(404, f"Fault rule '{rule_id}' not found.", param="rule_id")


async def list_requests(request: Request) -> Response:
    return JSONResponse(list(sandbox_state(request).requests))


async def clear_requests(request: Request) -> Response:
    requests = sandbox_state(request).requests
    count = len(requests)
    requests.clear()
    return JSONResponse({"deleted": count})


async def stats(request: Request) -> Response:
    state = sandbox_state(request)
    return JSONResponse(
        {"open_streams": state.open_streams, "requests_total": state.requests_total, "content_bytes_total": state.content_bytes_total}
    )


def control_routes() -> list[BaseRoute]:
    return [
        Route("/stats", stats, methods=["GET"]),
        Route("/faults", post_fault, methods=["POST"]),
        Route("/faults", list_faults, methods=["GET"]),
        Route("/faults", clear_faults, methods=["DELETE"]),
        Route("/faults/{rule_id}", delete_fault, methods=["DELETE"]),
        Route("/requests", list_requests, methods=["GET"]),
        Route("/requests", clear_requests, methods=["DELETE"]),
    ]
