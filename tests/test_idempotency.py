"""Idempotency-Key: a repeated create returns the first result instead of paying for a second render."""

from __future__ import annotations

import threading
import time
from typing import Any

from conftest import Relay, Sandbox
from test_relay import CREATE, assert_envelope, auth

V = "/openai/v1/videos"

# Admission, budgets and records must hold on either database.
BACKENDS = ("sqlite", "postgresql")


def creates(sandbox: Sandbox) -> int:
    return sum(1 for r in sandbox.requests() if r["method"] == "POST")


def test_repeat_returns_the_first_answer(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    headers = {**auth(key), "Idempotency-Key": "order-42"}
    first = relay.client.post(V, json=CREATE, headers=headers)
    second = relay.client.post(V, json=CREATE, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"
    assert second.headers["content-type"].startswith("application/json")
    assert "idempotent-replayed" not in first.headers
    assert creates(sandbox) == 1
    # The header itself still reaches the upstream on the first request.
    assert dict(sandbox.requests()[0]["headers"])["idempotency-key"] == "order-42"


def test_a_form_repeated_under_a_new_boundary_is_the_same_request(relay: Relay, sandbox: Sandbox) -> None:
    # SDKs draw a new multipart boundary for every send, retries included.
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()

    def send_form(boundary: str, prompt: str = "A cat") -> Any:
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n{prompt}\r\n--{boundary}--\r\n'
        headers = {**auth(key), "Idempotency-Key": "form-1", "content-type": f"multipart/form-data; boundary={boundary}"}
        return relay.client.post(V, content=body.encode(), headers=headers)

    first = send_form("a1b2c3")
    repeat = send_form("z9y8x7")
    assert repeat.status_code == 200 and repeat.headers["idempotent-replayed"] == "true" and repeat.content == first.content
    assert_envelope(send_form("q1", prompt="A dog"), 422, "idempotency_key_reused")
    assert creates(sandbox) == 1


def test_an_id_conflict_is_remembered(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    taken = relay.client.post(V, json=CREATE, headers=auth(relay.issue_key("bob"))).json()
    sandbox.fault(status=200, body=taken, method="POST", times=1)
    headers = {**auth(key), "Idempotency-Key": "clash"}
    assert_envelope(relay.client.post(V, json=CREATE, headers=headers), 502, "upstream_id_conflict")
    repeat = relay.client.post(V, json=CREATE, headers=headers)
    assert repeat.status_code == 502 and repeat.headers["idempotent-replayed"] == "true"
    assert creates(sandbox) == 2  # bob's create and the first attempt; the repeat reached no upstream


def test_same_key_other_request_is_refused(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    headers = {**auth(key), "Idempotency-Key": "k1"}
    relay.client.post(V, json=CREATE, headers=headers)
    other = relay.client.post(V, json={**CREATE, "prompt": "something else"}, headers=headers)
    assert_envelope(other, 422, "idempotency_key_reused")
    assert creates(sandbox) == 1


def test_keys_are_per_relay_key(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    alice, bob = relay.issue_key("alice"), relay.issue_key("bob")
    for key in (alice, bob):
        assert relay.client.post(V, json=CREATE, headers={**auth(key), "Idempotency-Key": "same"}).status_code == 200
    assert creates(sandbox) == 2


def test_failures_are_not_remembered(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    headers = {**auth(key), "Idempotency-Key": "retry-me"}
    sandbox.fault(preset="server_error", times=1)
    assert relay.client.post(V, json=CREATE, headers=headers).status_code == 500
    retried = relay.client.post(V, json=CREATE, headers=headers)
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert creates(sandbox) == 2


def test_an_unknown_outcome_is_remembered(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    headers = {**auth(key), "Idempotency-Key": "lost-in-transit"}
    sandbox.fault(action="reset", times=1)  # after the create arrived: the upstream may be rendering
    first = relay.client.post(V, json=CREATE, headers=headers)
    assert first.status_code == 502
    repeat = relay.client.post(V, json=CREATE, headers=headers)
    assert (repeat.status_code, repeat.json()) == (502, first.json())
    assert repeat.headers["idempotent-replayed"] == "true" and repeat.headers["x-should-retry"] == "false"
    assert creates(sandbox) == 1


def test_concurrent_repeat_is_told_to_wait(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    headers = {**auth(key), "Idempotency-Key": "slow-one"}
    sandbox.fault(preset="slow", delay_seconds=1.0, times=1)
    results: dict[str, Any] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", relay.client.post(V, json=CREATE, headers=headers)))
    first.start()
    time.sleep(0.3)
    assert_envelope(relay.client.post(V, json=CREATE, headers=headers), 409, "idempotency_key_in_progress")
    first.join()
    assert results["first"].status_code == 200
    assert relay.client.post(V, json=CREATE, headers=headers).headers["idempotent-replayed"] == "true"
    assert creates(sandbox) == 1


def test_bad_idempotency_key(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    assert_envelope(relay.client.post(V, json=CREATE, headers={**auth(key), "Idempotency-Key": "x" * 300}), 400, "invalid_idempotency_key")
