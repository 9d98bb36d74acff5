"""Jobs to webhooks, end to end: real relay processes, the sandbox upstream, the official SDK as the
client, and an endpoint on 127.0.0.1 that answers well or badly. Nobody polls the jobs: the
relay's watcher sees them end, and the key's endpoints hear of it, signed, at least once."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from conftest import Sandbox
from test_job_watcher import eventually
from test_relay import CREATE
from test_webhook_sender import Received, Receiver, running_receiver

# Fast pacing for tests; the retry schedule in seconds, not hours.
FAST = {
    "RELAY_WEBHOOK_ALLOW_PRIVATE": "1",
    "RELAY_JOB_POLL_SECONDS": "0.2",
    "RELAY_WEBHOOK_RETRY_SCHEDULE": "0,0.5,0.5,0.5",
    "RELAY_WEBHOOK_TIMEOUT_SECONDS": "1",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state


def sdk(relay: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{relay.url}/openai/v1", max_retries=0)


def start(relay_process: Any, sandbox: Sandbox, **env: str) -> tuple[Any, openai.OpenAI]:
    relay = relay_process(extra_env={**FAST, **env})
    relay.add_accounts(sandbox, "main")
    return relay, sdk(relay, relay.issue_key("alice"))


def register(client: openai.OpenAI, url: str) -> str:
    endpoint = client.webhooks.create(name="jobs", url=url, event_types=["video.completed", "video.failed"])
    return endpoint.signing_secret


def events(received: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(delivery.body) for delivery in received]


def test_a_job_nobody_polls_reaches_the_endpoint_signed_the_way_the_sdk_verifies(
    relay_process: Any, sandbox: Sandbox, receiver: Receiver
) -> None:
    relay, client = start(relay_process, sandbox)
    secret = register(client, receiver.url("/hooks"))
    done = client.videos.create(**CREATE)
    failed = client.videos.create(**{**CREATE, "prompt": "A storm [fail]"})
    eventually(lambda: len(receiver.received) >= 2)
    by_video = {event["data"]["id"]: event for event in events(receiver.received)}
    assert by_video[done.id]["type"] == "video.completed" and by_video[failed.id]["type"] == "video.failed"
    for delivery in receiver.received:
        client.webhooks.verify_signature(delivery.body, delivery.headers, secret=secret)
        event = json.loads(delivery.body)
        assert event["object"] == "event" and event["id"].startswith("evt_") and isinstance(event["created_at"], int)
        assert delivery.headers["webhook-id"].startswith("wh_") and delivery.headers["content-type"] == "application/json"
        with pytest.raises(openai.InvalidWebhookSignatureError):
            client.webhooks.verify_signature(delivery.body + b" ", delivery.headers, secret=secret)
    # The job settled without a client retrieve: it shows as completed in the key's list.
    listed = {video.id: video.status for video in client.videos.list()}
    assert listed == {done.id: "completed", failed.id: "failed"}
    time.sleep(0.5)
    assert len(receiver.received) == 2  # once each


@pytest.mark.parametrize("misbehaviour", ["/status/500", "/hang", "/reset"])
def test_an_endpoint_that_fails_gets_the_same_bytes_again_until_it_answers(
    relay_process: Any, sandbox: Sandbox, receiver: Receiver, misbehaviour: str
) -> None:
    relay, client = start(relay_process, sandbox)
    # The endpoint misbehaves on its first attempt only: /script answers 500 once, then 200;
    # for the hang and the reset, the endpoint URL is switched once the first attempt arrived.
    secret = register(client, receiver.url(misbehaviour if misbehaviour != "/status/500" else "/script"))
    receiver.script.append(500)
    video = client.videos.create(**CREATE)
    eventually(lambda: receiver.received)
    if misbehaviour != "/status/500":
        (endpoint,) = client.webhooks.list()
        client.webhooks.update(endpoint.id, url=receiver.url("/ok"))
    eventually(lambda: any(delivery.path in ("/ok", "/script") and len(receiver.received) >= 2 for delivery in receiver.received))
    first, *later = receiver.received
    assert {delivery.headers["webhook-id"] for delivery in later} == {first.headers["webhook-id"]}
    assert {delivery.body for delivery in later} == {first.body}
    assert json.loads(first.body)["data"]["id"] == video.id
    client.webhooks.verify_signature(later[-1].body, later[-1].headers, secret=secret)
    shown = relay.relayctl("webhooks", "deliveries", "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert row["state"] == "delivered" and row["attempts"] >= 2
    assert secret not in shown.stdout


def test_a_relay_killed_mid_delivery_delivers_after_its_restart_under_the_same_webhook_id(
    relay_process: Any, sandbox: Sandbox, receiver: Receiver
) -> None:
    # A long attempt timeout: the first attempt is still waiting on the endpoint when the relay dies.
    relay, client = start(relay_process, sandbox, RELAY_WEBHOOK_TIMEOUT_SECONDS="3")
    register(client, receiver.url("/hang"))
    (endpoint,) = client.webhooks.list()
    video = client.videos.create(**CREATE)
    eventually(lambda: receiver.received)
    os.kill(relay.pid, signal.SIGKILL)
    receiver.release.set()
    # A new relay on the same database (same key, same endpoint) takes the delivery over once the
    # dead one's lease has run out; the endpoint has recovered meanwhile.
    same_database = {name: relay.env[name] for name in ("RELAY_DATABASE", "RELAY_SECRET_KEY")}
    restarted = relay_process(extra_env={**FAST, **same_database})
    sdk(restarted, client.api_key).webhooks.update(endpoint.id, url=receiver.url("/ok"))
    eventually(lambda: any(delivery.path == "/ok" for delivery in receiver.received), within=60)
    assert len({delivery.headers["webhook-id"] for delivery in receiver.received}) == 1
    assert {json.loads(delivery.body)["data"]["id"] for delivery in receiver.received} == {video.id}
    assert len({delivery.body for delivery in receiver.received}) == 1


def provider_requests(sandbox: Sandbox) -> int:
    return int(httpx.get(f"{sandbox.url}/_sandbox/stats").json()["requests_total"])


def test_a_burst_of_jobs_ending_together_is_polled_at_the_pace_and_every_event_arrives_once(
    relay_process: Any, sandbox: Sandbox, receiver: Receiver
) -> None:
    # Two workers share the jobs through their leases; each may poll an account 600 times a minute.
    relay = relay_process(workers=2, extra_env={**FAST, "RELAY_WATCHER_POLLS_PER_MINUTE": "600"})
    relay.add_accounts(sandbox, "main")
    client = sdk(relay, relay.issue_key("alice"))
    register(client, receiver.url("/hooks"))
    before = provider_requests(sandbox)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: client.videos.create(**CREATE).id, range(200)))
    eventually(lambda: len({event["data"]["id"] for event in events(receiver.received)}) == 200, within=120)
    elapsed = time.monotonic() - started
    delivered = Counter(delivery.headers["webhook-id"] for delivery in receiver.received)
    assert {event["data"]["id"] for event in events(receiver.received)} == ids
    assert len(delivered) == 200  # one webhook-id per job
    polls = provider_requests(sandbox) - before - 200
    # At least one poll per job, and at most the pace allows: two workers, each a burst of 60 then
    # 10 a second, over the whole time the creates and the deliveries took. No storm.
    # (The second's margin: polls that went out while this test read the clock and the count.)
    assert 200 <= polls <= 2 * (60 + 10 * (elapsed + 1))
