"""OpenAI's webhook-endpoint API for the calling relay key: create, list, retrieve, update, delete,
rotate the secret, send a test event, and the event types served.

A key sees and manages only its own endpoints: another key's is a 404, its existence not
revealed. The signing secret is shown in the answers to create and rotate only; everything else
shows its hint. Every URL is checked as a delivery would check it (relay.webhooks.targets), so
an endpoint the relay would refuse to post to is refused when it is named.
"""

from __future__ import annotations

import json
import secrets as random_source
import unicodedata
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..body import is_json, is_valid_unicode
from ..caller import authorize, relay_state, request_body
from ..crypto import SecretKeyError
from ..errors import RelayError, shown
from ..paging import page_limit
from ..records import WEBHOOK_EVENT_TYPES, KeyRecord, WebhookEndpoint
from ..state import RelayState
from ..store.webhooks import EndpointLimitReached, event_body, new_delivery_id, new_event_id
from . import sender
from .dispatcher import signing_secrets
from .signing import new_secret, secret_hint
from .targets import UnresolvableTarget, UnsafeTarget, resolve_target

MAX_ENDPOINTS_PER_KEY = 20
MAX_NAME_LENGTH = 256
ROTATION_GRACE_SECONDS = 24 * 3600.0

# Every event type OpenAI's API names (openai SDK 3.57): a client may ask for any of them, and
# is told that this relay sends only the video ones.
OPENAI_EVENT_TYPES = frozenset(
    {
        "batch.completed",
        "batch.failed",
        "batch.expired",
        "batch.cancelled",
        "response.completed",
        "response.failed",
        "response.cancelled",
        "response.incomplete",
        "eval.run.succeeded",
        "eval.run.failed",
        "eval.run.canceled",
        "fine_tuning.job.succeeded",
        "fine_tuning.job.failed",
        "fine_tuning.job.cancelled",
        "realtime.call.incoming",
        "video.completed",
        "video.failed",
        "agent.environment.ready",
        "agent.environment.failed",
        "agent.environment.suspended",
        "agent.environment.expired",
        "agent.session.created",
        "agent.session.action_required",
        "agent.session.in_progress",
        "agent.session.idle",
        "agent.session.failed",
        "safety.alert.created",
    }
)
_SERVED = ", ".join(WEBHOOK_EVENT_TYPES)


# -- the handlers ---------------------------------------------------------------------------------


async def create_endpoint(request: Request) -> Response:
    state, key = await _caller(request)
    fields = await _json_fields(request, state, {"name", "url", "event_types"})
    for required in ("name", "url", "event_types"):
        if required not in fields:
            raise RelayError(400, f"Missing required parameter: '{required}'.", code="missing_required_parameter", param=required)
    name = _name(fields["name"])
    event_types = _event_types(fields["event_types"])
    url = await _url(state, fields["url"])
    secret = new_secret()
    now = state.clock()
    endpoint = WebhookEndpoint(
        id=f"we_{random_source.token_hex(16)}",
        key_name=key.name,
        name=name,
        url=url,
        event_types=event_types,
        secret_encrypted=state.box.encrypt(secret),
        secret_hint=secret_hint(secret),
        previous_secret_encrypted=None,
        previous_secret_until=None,
        created_at=now,
        updated_at=now,
        disabled_at=None,
        disabled_reason=None,
        failing_since=None,
    )
    try:
        await state.db(state.store.create_webhook_endpoint, endpoint, max_per_key=MAX_ENDPOINTS_PER_KEY)
    except EndpointLimitReached:
        raise RelayError(
            400,
            f"This key has {MAX_ENDPOINTS_PER_KEY} webhook endpoints, the most a key may have: delete one before creating another.",
            code="webhook_endpoint_limit_reached",
        ) from None
    return JSONResponse(endpoint_object(endpoint, signing_secret=secret))


async def list_endpoints(request: Request) -> Response:
    """The key's endpoints, newest first, cursor-paged by id."""
    state, key = await _caller(request)
    params = request.query_params
    limit = page_limit(params.get("limit"))
    after = params.get("after") or None
    if after is not None:
        cursor = await state.db(state.store.webhook_endpoint, after)
        if cursor is None or cursor.key_name != key.name:
            raise RelayError(400, f"Invalid 'after' cursor: no webhook endpoint '{shown(after)}'.", code="invalid_cursor", param="after")
    endpoints, has_more = await state.db(state.store.list_webhook_endpoints, key.name, after=after, limit=limit)
    return JSONResponse(
        {
            "object": "list",
            "data": [endpoint_object(endpoint) for endpoint in endpoints],
            "first_id": endpoints[0].id if endpoints else None,
            "last_id": endpoints[-1].id if endpoints else None,
            "has_more": has_more,
        }
    )


async def retrieve_endpoint(request: Request) -> Response:
    state, key = await _caller(request)
    return JSONResponse(endpoint_object(await _owned(request, state, key)))


async def update_endpoint(request: Request) -> Response:
    """Change the name, URL or event types (what is sent); a disabled endpoint is enabled again."""
    state, key = await _caller(request)
    endpoint = await _owned(request, state, key)
    fields = await _json_fields(request, state, {"name", "url", "event_types"})
    name = _name(fields["name"]) if "name" in fields else None
    event_types = _event_types(fields["event_types"]) if "event_types" in fields else None
    url = await _url(state, fields["url"]) if "url" in fields else None
    updated = await state.db(
        state.store.update_webhook_endpoint, endpoint.id, name=name, url=url, event_types=event_types, now=state.clock()
    )
    return JSONResponse(endpoint_object(updated))


async def delete_endpoint(request: Request) -> Response:
    """Its pending deliveries are cancelled; a second delete is a 404."""
    state, key = await _caller(request)
    endpoint = await _owned(request, state, key)
    if not await state.db(state.store.delete_webhook_endpoint, endpoint.id):
        raise _not_found(endpoint.id)
    return JSONResponse({"id": endpoint.id, "object": "webhook_endpoint.deleted", "deleted": True})


async def rotate_secret(request: Request) -> Response:
    """A new signing secret, shown once; the old one can keep signing for 24 hours beside it."""
    state, key = await _caller(request)
    endpoint = await _owned(request, state, key)
    fields = await _json_fields(request, state, {"keep_old_secret_active_for_24_hours"})
    keep = fields.get("keep_old_secret_active_for_24_hours", False)
    if not isinstance(keep, bool):
        raise RelayError(
            400,
            "'keep_old_secret_active_for_24_hours' must be true or false.",
            code="invalid_type",
            param="keep_old_secret_active_for_24_hours",
        )
    secret = new_secret()
    now = state.clock()
    rotated = await state.db(
        state.store.rotate_webhook_secret,
        endpoint.id,
        secret_encrypted=state.box.encrypt(secret),
        secret_hint=secret_hint(secret),
        keep_previous_until=now + ROTATION_GRACE_SECONDS if keep else None,
        now=now,
    )
    return JSONResponse(endpoint_object(rotated, signing_secret=secret))


async def send_test_event(request: Request) -> Response:
    """Send one sample event now, signed as deliveries are, and answer with the endpoint's status.

    Nothing is stored and the endpoint's standing is untouched, whatever it answers; an
    endpoint that could not be reached at all is an error saying why.
    """
    state, key = await _caller(request)
    endpoint = await _owned(request, state, key)
    fields = await _json_fields(request, state, {"event_type"})
    if "event_type" not in fields:
        raise RelayError(400, "Missing required parameter: 'event_type'.", code="missing_required_parameter", param="event_type")
    event_type = _event_type(fields["event_type"], "event_type")
    now = state.clock()
    allow_private = state.settings.webhook_allow_private
    # Checked here first for its words: the attempt only says that the target was unsafe.
    await _reachable_target(endpoint.url, allow_private)
    try:
        secrets = signing_secrets(state.box, endpoint, now)
    except SecretKeyError:
        # Encrypted under a key the relay no longer has: a new secret is the way out.
        raise RelayError(
            503,
            "The relay cannot read this endpoint's signing secret (its secret key changed): rotate the secret, then test again.",
            code="webhook_secret_unreadable",
        ) from None
    body = event_body(new_event_id(), event_type, now, {"id": f"video_test_{random_source.token_hex(12)}"})
    async with sender.make_client() as client:
        result = await sender.send_event(
            client,
            url=endpoint.url,
            webhook_id=new_delivery_id(),
            body=body,
            secrets=secrets,
            timeout=state.settings.webhook_timeout_seconds,
            allow_private=allow_private,
            now=state.clock,
        )
    if result.status is None:
        raise _unreachable(result.error, state.settings.webhook_timeout_seconds)
    return JSONResponse(
        {
            "object": "webhook_endpoint.test",
            "webhook_endpoint_id": endpoint.id,
            "event_type": event_type,
            "status_code": result.status,
            "success": True,
        }
    )


async def list_event_types(request: Request) -> Response:
    await _caller(request)
    return JSONResponse({"object": "list", "data": list(WEBHOOK_EVENT_TYPES)})


# -- what clients see -----------------------------------------------------------------------------


def endpoint_object(endpoint: WebhookEndpoint, *, signing_secret: str | None = None) -> dict[str, Any]:
    """OpenAI's webhook_endpoint object, plus the relay's `status` and `disabled_reason`."""
    shown_object: dict[str, Any] = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "name": endpoint.name,
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "created_at": int(endpoint.created_at),
        "updated_at": int(endpoint.updated_at),
        "signing_secret_hint": endpoint.secret_hint,
        "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason,
    }
    if signing_secret is not None:
        shown_object["signing_secret"] = signing_secret
    return shown_object


# -- reading requests -------------------------------------------------------------------------------


async def _caller(request: Request) -> tuple[RelayState, KeyRecord]:
    state = relay_state(request)
    return state, await authorize(request, state)


async def _owned(request: Request, state: RelayState, key: KeyRecord) -> WebhookEndpoint:
    endpoint_id = request.path_params["webhook_endpoint_id"]
    endpoint = await state.db(state.store.webhook_endpoint, endpoint_id)
    if endpoint is None or endpoint.key_name != key.name:
        raise _not_found(endpoint_id)
    return endpoint


def _not_found(endpoint_id: str) -> RelayError:
    return RelayError(
        404,
        f"No webhook endpoint found with id '{shown(endpoint_id)}'.",
        code="webhook_endpoint_not_found",
        param="webhook_endpoint_id",
    )


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise _DuplicateKey(name)
        found[name] = value
    return found


async def _json_fields(request: Request, state: RelayState, allowed: set[str]) -> dict[str, Any]:
    """The body's JSON object (an empty body is an empty object), with no field outside `allowed`."""
    body = await request_body(request, state)
    if not body.strip():
        return {}
    if not is_json(request.headers.get("content-type")):
        raise RelayError(400, "Send the request body as JSON, with 'Content-Type: application/json'.", code="unsupported_content_type")
    try:
        payload = json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as duplicate:
        name = str(duplicate)
        raise RelayError(
            400, f"The field '{shown(name)}' appears more than once in the request body.", code="duplicate_field", param=name
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RelayError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise RelayError(400, "The request body must be a JSON object.", code="invalid_json")
    for name in payload:
        if name not in allowed:
            raise RelayError(
                400,
                f"Unknown parameter: '{shown(name)}'. This request takes {', '.join(sorted(allowed))}.",
                code="unknown_parameter",
                param=name if is_valid_unicode(name) else None,
            )
    return payload


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise RelayError(400, f"'{param}' must be a string.", code="invalid_type", param=param)
    if not is_valid_unicode(value) or any(unicodedata.category(character) == "Cc" for character in value):
        raise RelayError(400, f"'{param}' must be printable text (no control characters).", code="invalid_value", param=param)
    return value


def _name(value: Any) -> str:
    name = _text(value, "name")
    if not name.strip():
        raise RelayError(400, "'name' must not be empty.", code="invalid_value", param="name")
    if len(name) > MAX_NAME_LENGTH:
        raise RelayError(400, f"'name' is longer than {MAX_NAME_LENGTH} characters.", code="invalid_value", param="name")
    return name


def _event_type(value: Any, param: str) -> str:
    event_type = _text(value, param)
    if event_type in WEBHOOK_EVENT_TYPES:
        return event_type
    if event_type in OPENAI_EVENT_TYPES:
        message = f"This relay sends only video events ({_SERVED}), not '{event_type}'."
    else:
        message = f"Unknown event type '{shown(event_type)}': this relay sends {_SERVED}."
    raise RelayError(400, message, code="invalid_event_type", param=param)


def _event_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise RelayError(400, "'event_types' must be a list of event types.", code="invalid_type", param="event_types")
    if not value:
        raise RelayError(400, f"'event_types' must name at least one event type ({_SERVED}).", code="invalid_value", param="event_types")
    # Each type once, in the order given.
    return tuple(dict.fromkeys(_event_type(item, "event_types") for item in value))


async def _url(state: RelayState, value: Any) -> str:
    url = _text(value, "url")
    if not url.strip() or url != url.strip():
        raise RelayError(400, "'url' must be a URL without surrounding spaces.", code="invalid_url", param="url")
    try:
        await resolve_target(url, allow_private=state.settings.webhook_allow_private)
    except UnsafeTarget as unsafe:
        raise RelayError(400, str(unsafe), code="invalid_url", param="url") from None
    return url


async def _reachable_target(url: str, allow_private: bool) -> None:
    try:
        await resolve_target(url, allow_private=allow_private)
    except UnresolvableTarget as unresolvable:
        raise RelayError(502, f"The test event could not be sent: {unresolvable}", code="webhook_endpoint_unreachable") from None
    except UnsafeTarget as unsafe:
        raise RelayError(400, f"The test event was not sent: {unsafe}", code="invalid_url", param="url") from None


def _unreachable(error: str | None, timeout: float) -> RelayError:
    if error == sender.TIMEOUT:
        why = f"the endpoint did not answer within {timeout:g} s"
    elif error == sender.UNSAFE_TARGET:
        return RelayError(
            400, "The test event was not sent: the webhook URL is not a target the relay posts to.", code="invalid_url", param="url"
        )
    else:
        why = "the relay could not connect to the endpoint"
    return RelayError(502, f"The test event could not be delivered: {why}.", code="webhook_endpoint_unreachable")
