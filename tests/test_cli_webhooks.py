"""relayctl webhooks: operators see every key's endpoints and deliveries as tables or JSON, take an
endpoint out of delivery and back, remove one, send a delivery again; never a signing secret."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from relay.config import load_settings
from relay.records import WebhookEndpoint
from relay.state import open_store
from relay.store import Store, enqueue_video_event
from relay.webhooks.signing import new_secret, secret_hint


@dataclass
class Hooks:
    store: Store
    secrets: dict[str, str]  # endpoint id -> its signing secret
    ids: dict[str, str]  # endpoint name -> id


@pytest.fixture
def hooks(cli: Any) -> Iterator[Hooks]:
    """Keys alice and bob; alice has endpoints `farm` and `backup`, bob has `bob's`; two events for alice, one failed delivery."""
    cli("keys", "issue", "alice")
    cli("keys", "issue", "bob")
    store, box = open_store(load_settings())
    made = Hooks(store, {}, {})
    now = time.time()
    for offset, (key, name, events) in enumerate(
        [
            ("alice", "farm", ("video.completed", "video.failed")),
            ("alice", "backup", ("video.failed",)),
            ("bob", "bob's", ("video.completed",)),
        ]
    ):
        secret = new_secret()
        endpoint = WebhookEndpoint(
            id=f"we_{offset + 1:032x}",
            key_name=key,
            name=name,
            url=f"https://{name.replace(chr(39), '')}.example/hooks",
            event_types=events,
            secret_encrypted=box.encrypt(secret),
            secret_hint=secret_hint(secret),
            previous_secret_encrypted=None,
            previous_secret_until=None,
            created_at=now - 100 + offset,
            updated_at=now - 100 + offset,
            disabled_at=None,
            disabled_reason=None,
            failing_since=None,
        )
        store.create_webhook_endpoint(endpoint)
        made.secrets[endpoint.id], made.ids[name] = secret, endpoint.id
    with store.transaction() as conn:
        enqueue_video_event(conn, key_name="alice", video_id="video_one", event_type="video.completed", now=now - 50)
        enqueue_video_event(conn, key_name="alice", video_id="video_two", event_type="video.failed", now=now - 40)
    # video_one's delivery to farm failed for good.
    ((delivery, _),) = [claim for claim in store.claim_due_deliveries("w", now=now - 45, lease_seconds=30, limit=10)]
    store.record_delivery_attempt(
        delivery.id, "w", status=500, error="http_error", delivered=False, next_attempt_at=None, latency_seconds=0.1, now=now - 44
    )
    yield made
    store.close()


def no_secret(hooks: Hooks, output: str) -> None:
    for secret in hooks.secrets.values():
        assert secret[len("whsec_") :] not in output


def test_list_shows_every_keys_endpoints_newest_first_without_secrets(cli: Any, hooks: Hooks) -> None:
    table = cli("webhooks", "list").output
    no_secret(hooks, table)
    lines = table.splitlines()
    assert lines[0].split() == [
        "id",
        "key",
        "name",
        "url",
        "event_types",
        "status",
        "disabled_reason",
        "failing_since",
        "pending",
        "created",
    ]
    assert [line.split()[0] for line in lines[2:]] == [hooks.ids["bob's"], hooks.ids["backup"], hooks.ids["farm"]]
    listed = json.loads(cli("webhooks", "list", "--json").output)
    farm = next(row for row in listed if row["name"] == "farm")
    assert farm | {"created": None} == {
        "id": hooks.ids["farm"],
        "key": "alice",
        "name": "farm",
        "url": "https://farm.example/hooks",
        "event_types": ["video.completed", "video.failed"],
        "status": "enabled",
        "disabled_reason": None,
        "failing_since": farm["failing_since"],
        "pending": 1,
        "created": None,
    }
    assert farm["failing_since"].endswith("Z") and farm["created"].endswith("Z")
    assert [row["name"] for row in json.loads(cli("webhooks", "list", "--key", "bob", "--json").output)] == ["bob's"]
    assert "no key named 'carol'" in cli("webhooks", "list", "--key", "carol", code=1).output
    no_secret(hooks, json.dumps(listed))


def test_show_gives_the_hint_and_the_deliveries_by_state(cli: Any, hooks: Hooks) -> None:
    farm = hooks.ids["farm"]
    shown = json.loads(cli("webhooks", "show", farm, "--json").output)
    assert shown["signing_secret_hint"] == f"whsec_...{hooks.secrets[farm][-4:]}"
    assert shown["deliveries"] == {"pending": 1, "delivered": 0, "failed": 1, "cancelled": 0}
    assert shown["old_secret_signs_until"] is None and shown["disabled_at"] is None
    text = cli("webhooks", "show", farm).output
    assert "signing_secret_hint" in text and "whsec_..." in text
    no_secret(hooks, text)
    assert "no webhook endpoint 'we_nope'" in cli("webhooks", "show", "we_nope", code=1).output


def test_disable_holds_deliveries_and_enable_makes_them_due(cli: Any, hooks: Hooks) -> None:
    backup = hooks.ids["backup"]
    out = cli("webhooks", "disable", backup).output
    assert out.startswith(f"Webhook endpoint {backup} ('backup' of key 'alice') is disabled: it gets no new events")
    shown = json.loads(cli("webhooks", "show", backup, "--json").output)
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "operator")
    claimable = hooks.store.claim_due_deliveries("w", now=time.time() + 1, lease_seconds=1, limit=10)
    assert backup not in {endpoint.id for _, endpoint in claimable}
    with hooks.store.transaction() as conn:
        assert (
            enqueue_video_event(conn, key_name="alice", video_id="video_three", event_type="video.failed", now=time.time()) == 1
        )  # farm only

    enabled = json.loads(cli("webhooks", "enable", backup, "--json").output)
    assert (enabled["status"], enabled["disabled_reason"], enabled["deliveries"]["pending"]) == ("enabled", None, 1)
    claimed = hooks.store.claim_due_deliveries("w", now=time.time() + 2, lease_seconds=30, limit=10)
    assert backup in {endpoint.id for _, endpoint in claimed}
    assert "no webhook endpoint 'we_nope'" in cli("webhooks", "disable", "we_nope", code=1).output
    assert "no webhook endpoint 'we_nope'" in cli("webhooks", "enable", "we_nope", code=1).output


def test_deliveries_newest_first_filtered_and_bounded(cli: Any, hooks: Hooks) -> None:
    table = cli("webhooks", "deliveries").output
    lines = table.splitlines()
    assert lines[0].split() == [
        "id",
        "endpoint",
        "event_type",
        "video",
        "state",
        "attempts",
        "last_status",
        "last_error",
        "next_attempt",
        "created",
    ]
    assert len(lines) == 2 + 3
    rows = json.loads(cli("webhooks", "deliveries", "--json").output)
    assert [(row["video"], row["state"]) for row in rows][-1] == ("video_one", "failed")
    (failed,) = json.loads(cli("webhooks", "deliveries", "--state", "failed", "--json").output)
    assert (failed["endpoint"], failed["attempts"], failed["last_status"], failed["last_error"], failed["next_attempt"]) == (
        hooks.ids["farm"],
        1,
        500,
        "http_error",
        None,
    )
    assert failed["id"].startswith("wh_") and failed["event_id"].startswith("evt_")
    only_backup = json.loads(cli("webhooks", "deliveries", "--endpoint", hooks.ids["backup"], "--json").output)
    assert [row["video"] for row in only_backup] == ["video_two"]
    assert len(json.loads(cli("webhooks", "deliveries", "--limit", "1", "--json").output)) == 1
    assert "No deliveries match." in cli("webhooks", "deliveries", "--state", "cancelled").output
    assert "'lost' is not one of" in cli("webhooks", "deliveries", "--state", "lost", code=2).output
    assert "0 is not in the range" in cli("webhooks", "deliveries", "--limit", "0", code=2).output


def test_redeliver_queues_the_same_delivery_again(cli: Any, hooks: Hooks) -> None:
    (failed,) = json.loads(cli("webhooks", "deliveries", "--state", "failed", "--json").output)
    before = hooks.store.webhook_delivery(failed["id"])
    out = cli("webhooks", "redeliver", failed["id"]).output
    assert out == f"Delivery {failed['id']} (video.completed to {hooks.ids['farm']}) is queued again, due now.\n"
    after = hooks.store.webhook_delivery(failed["id"])
    assert before is not None and after is not None
    assert (after.state, after.attempts, after.body, after.event_id) == ("pending", 0, before.body, before.event_id)

    cli("webhooks", "disable", hooks.ids["farm"])
    again = cli("webhooks", "redeliver", failed["id"]).output
    assert f"Its endpoint is disabled (operator): it waits until 'relayctl webhooks enable {hooks.ids['farm']}'." in again
    assert json.loads(cli("webhooks", "redeliver", failed["id"], "--json").output)["state"] == "pending"
    assert "no webhook delivery 'wh_nope'" in cli("webhooks", "redeliver", "wh_nope", code=1).output


def test_remove_cancels_pending_deliveries_and_keeps_the_rest(cli: Any, hooks: Hooks) -> None:
    farm = hooks.ids["farm"]
    out = cli("webhooks", "remove", farm).output
    assert out == f"Removed webhook endpoint {farm} ('farm' of key 'alice'); cancelled 1 pending deliveries.\n"
    states = sorted(row["state"] for row in json.loads(cli("webhooks", "deliveries", "--endpoint", farm, "--json").output))
    assert states == ["cancelled", "failed"]
    assert "no webhook endpoint" in cli("webhooks", "remove", farm, code=1).output
    (failed,) = json.loads(cli("webhooks", "deliveries", "--state", "failed", "--json").output)
    assert "was deleted: there is nowhere to send it" in cli("webhooks", "redeliver", failed["id"], code=1).output
    removed = json.loads(cli("webhooks", "remove", hooks.ids["backup"], "--json").output)
    assert removed == {"id": hooks.ids["backup"], "removed": True, "cancelled_deliveries": 1}
    assert [row["name"] for row in json.loads(cli("webhooks", "list", "--json").output)] == ["bob's"]


def test_every_webhooks_command_has_help_with_an_example_and_needs_a_database(cli: Any) -> None:
    for command in ("list", "show", "remove", "enable", "disable", "deliveries", "redeliver"):
        assert "Example" in cli("webhooks", command, "--help").output, command
    assert "no relay database at" in cli("webhooks", "list", code=1).output
    assert "no relay database at" in cli("webhooks", "disable", "we_x", code=1).output
    cli("keys", "issue", "alice")
    assert "No webhook endpoints." in cli("webhooks", "list").output
    assert cli("webhooks", "deliveries", "--json").output.strip() == "[]"
