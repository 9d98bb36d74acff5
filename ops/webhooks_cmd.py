"""relayctl webhooks: key holders' webhook endpoints and the deliveries on their way to them.

Key holders manage their endpoints through the API (OpenAI's webhook-endpoint API); operators
look at them here, take one out of delivery or put it back, and send a delivery again. A
signing secret is never shown, only its hint.
"""

from __future__ import annotations

import time
from typing import Any

import click

from relay.store import WEBHOOK_DELIVERY_STATES, NotFound, Store, WebhookDelivery, WebhookEndpoint

from .common import database_options, open_db, read_db
from .output import emit, emit_json, emit_record, timestamp

ENDPOINT_COLUMNS = ["id", "key", "name", "url", "event_types", "status", "disabled_reason", "failing_since", "pending", "created"]
DELIVERY_COLUMNS = ["id", "endpoint", "event_type", "video", "state", "attempts", "last_status", "last_error", "next_attempt", "created"]
# The store's page size while listing every endpoint.
_PAGE = 500


def endpoint_row(endpoint: WebhookEndpoint, deliveries: dict[str, int]) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "key": endpoint.key_name,
        "name": endpoint.name,
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": timestamp(endpoint.failing_since),
        "pending": deliveries.get("pending", 0),
        "created": timestamp(endpoint.created_at),
    }


def endpoint_record(endpoint: WebhookEndpoint, deliveries: dict[str, int], now: float) -> dict[str, Any]:
    grace = endpoint.previous_secret_until
    return {
        **endpoint_row(endpoint, deliveries),
        "disabled_at": timestamp(endpoint.disabled_at),
        "signing_secret_hint": endpoint.secret_hint,
        # During a rotation's grace the old secret signs too, until then.
        "old_secret_signs_until": timestamp(grace) if grace is not None and grace > now else None,
        "updated": timestamp(endpoint.updated_at),
        "deliveries": {state: deliveries.get(state, 0) for state in WEBHOOK_DELIVERY_STATES},
    }


def delivery_row(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "endpoint": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "video": delivery.video_id,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "last_attempt": timestamp(delivery.last_attempt_at),
        "next_attempt": timestamp(delivery.next_attempt_at),
        "delivered": timestamp(delivery.delivered_at),
        "created": timestamp(delivery.created_at),
    }


def every_endpoint(store: Store, key_name: str | None) -> list[WebhookEndpoint]:
    endpoints: list[WebhookEndpoint] = []
    more = True
    while more:
        page, more = store.list_webhook_endpoints(key_name, after=endpoints[-1].id if endpoints else None, limit=_PAGE)
        endpoints += page
    return endpoints


def existing_endpoint(store: Store, endpoint_id: str) -> WebhookEndpoint:
    endpoint = store.webhook_endpoint(endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    return endpoint


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhook endpoints of relay keys, and their deliveries (never a signing secret)."""


@webhooks_group.command("list")
@click.option("--key", "key_name", help="Only this relay key's endpoints (by name).")
@database_options
def webhooks_list(key_name: str | None, db_path: str, as_json: bool) -> None:
    """Every webhook endpoint, newest first: whose, where, which events, enabled or not, deliveries waiting.

    \b
    Example:
      relayctl webhooks list
      relayctl webhooks list --key alice --json
    """
    store, _ = read_db(db_path)
    if key_name is not None:
        store.key_by_name(key_name)  # an unknown key is an error, not an empty list
    endpoints = every_endpoint(store, key_name)
    counts = store.webhook_delivery_counts([endpoint.id for endpoint in endpoints])
    rows = [endpoint_row(endpoint, counts.get(endpoint.id, {})) for endpoint in endpoints]
    emit(rows, ENDPOINT_COLUMNS, as_json=as_json, empty="No webhook endpoints.")


@webhooks_group.command("show")
@click.argument("endpoint_id", metavar="ID")
@database_options
def webhooks_show(endpoint_id: str, db_path: str, as_json: bool) -> None:
    """Everything about webhook endpoint ID but its secret (its hint is shown), and its deliveries by state.

    \b
    Example:
      relayctl webhooks show we_0123456789abcdef0123456789abcdef
    """
    store, _ = read_db(db_path)
    endpoint = existing_endpoint(store, endpoint_id)
    counts = store.webhook_delivery_counts([endpoint.id]).get(endpoint.id, {})
    emit_record(endpoint_record(endpoint, counts, time.time()), as_json=as_json)


@webhooks_group.command("remove")
@click.argument("endpoint_id", metavar="ID")
@database_options
def webhooks_remove(endpoint_id: str, db_path: str, as_json: bool) -> None:
    """Delete webhook endpoint ID; its pending deliveries are cancelled, the others kept as history.

    \b
    Example:
      relayctl webhooks remove we_0123456789abcdef0123456789abcdef
    """
    store, _ = open_db(db_path)
    endpoint = existing_endpoint(store, endpoint_id)
    pending = store.webhook_delivery_counts([endpoint.id]).get(endpoint.id, {}).get("pending", 0)
    if not store.delete_webhook_endpoint(endpoint.id):
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    if as_json:
        emit_json({"id": endpoint.id, "removed": True, "cancelled_deliveries": pending})
    else:
        who = f"{endpoint.name!r} of key {endpoint.key_name!r}"
        click.echo(f"Removed webhook endpoint {endpoint.id} ({who}); cancelled {pending} pending deliveries.")


@webhooks_group.command("enable")
@click.argument("endpoint_id", metavar="ID")
@database_options
def webhooks_enable(endpoint_id: str, db_path: str, as_json: bool) -> None:
    """Deliver to webhook endpoint ID again: new events, and the deliveries that waited, due now.

    \b
    Example:
      relayctl webhooks enable we_0123456789abcdef0123456789abcdef
    """
    store, _ = open_db(db_path)
    store.enable_webhook_endpoint(endpoint_id, time.time())
    _changed(store, endpoint_id, as_json, "is enabled: its waiting deliveries are due now.")


@webhooks_group.command("disable")
@click.argument("endpoint_id", metavar="ID")
@database_options
def webhooks_disable(endpoint_id: str, db_path: str, as_json: bool) -> None:
    """Stop delivering to webhook endpoint ID: no new events; its pending deliveries wait until it is enabled.

    The key holder enables it again by updating it through the API, or an operator with
    'relayctl webhooks enable'.

    \b
    Example:
      relayctl webhooks disable we_0123456789abcdef0123456789abcdef
    """
    store, _ = open_db(db_path)
    store.disable_webhook_endpoint(endpoint_id, "operator", time.time())
    _changed(store, endpoint_id, as_json, "is disabled: it gets no new events, and its pending deliveries wait until it is enabled.")


def _changed(store: Store, endpoint_id: str, as_json: bool, message: str) -> None:
    endpoint = existing_endpoint(store, endpoint_id)
    counts = store.webhook_delivery_counts([endpoint.id]).get(endpoint.id, {})
    if as_json:
        emit_json(endpoint_record(endpoint, counts, time.time()))
    else:
        click.echo(f"Webhook endpoint {endpoint.id} ({endpoint.name!r} of key {endpoint.key_name!r}) {message}")


@webhooks_group.command("deliveries")
@click.option("--endpoint", "endpoint_id", metavar="ID", help="Only this endpoint's deliveries (a removed endpoint's too).")
@click.option("--state", type=click.Choice(WEBHOOK_DELIVERY_STATES), help="Only deliveries in this state.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@database_options
def webhooks_deliveries(endpoint_id: str | None, state: str | None, limit: int, db_path: str, as_json: bool) -> None:
    """Deliveries, newest first: which event to which endpoint, how it went, when the next attempt is.

    last_error is one of http_error, redirect, timeout, connect_error, unsafe_target, gone.

    \b
    Example:
      relayctl webhooks deliveries --state failed
      relayctl webhooks deliveries --endpoint we_0123456789abcdef0123456789abcdef --limit 10 --json
    """
    store, _ = read_db(db_path)
    deliveries = store.list_webhook_deliveries(endpoint_id=endpoint_id, state=state, limit=limit)
    emit([delivery_row(delivery) for delivery in deliveries], DELIVERY_COLUMNS, as_json=as_json, empty="No deliveries match.")


@webhooks_group.command("redeliver")
@click.argument("delivery_id", metavar="DELIVERY_ID")
@database_options
def webhooks_redeliver(delivery_id: str, db_path: str, as_json: bool) -> None:
    """Send delivery DELIVERY_ID again, whatever became of it: due now, its retries from the start,
    the same webhook-id and body (receivers that saw it already can tell).

    \b
    Example:
      relayctl webhooks redeliver wh_0123456789abcdef0123456789abcdef
    """
    store, _ = open_db(db_path)
    delivery = store.redeliver(delivery_id, time.time())
    endpoint = existing_endpoint(store, delivery.endpoint_id)
    if as_json:
        emit_json(delivery_row(delivery))
        return
    click.echo(f"Delivery {delivery.id} ({delivery.event_type} to {endpoint.id}) is queued again, due now.")
    if endpoint.status == "disabled":
        click.echo(f"Its endpoint is disabled ({endpoint.disabled_reason}): it waits until 'relayctl webhooks enable {endpoint.id}'.")
