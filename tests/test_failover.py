"""Failover for new work, and the lines it must not cross (anything that may have reached an upstream)."""

from __future__ import annotations

import time
from typing import Any

from conftest import Relay, Sandbox, free_port
from test_relay import CREATE, assert_envelope, auth, metric_value, outcomes, tokens_seen

from relay.accounts import reset_account

V = "/openai/v1/videos"


def attempts(relay: Relay) -> list[tuple[str, int | None, str]]:
    return [(o["account"], o["upstream_status"], o["error_class"]) for o in outcomes(relay)]


def test_429_moves_the_create_to_the_next_account(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api(), priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=60, token="tok-a", times=1)
    response = relay.client.post(V, json=CREATE, headers=auth(key))
    assert response.status_code == 200
    assert relay.state.store.video(response.json()["id"]).account == "b"  # type: ignore[union-attr]
    assert attempts(relay) == [("a", 429, "rate_limited"), ("b", 200, "none")]
    assert relay.state.store.account("a").state == "rate_limited"
    assert metric_value(relay, 'relay_failovers_total{from_error_class="rate_limited"}') == 1


def test_401_and_402_fail_over_too(relay: Relay, sandbox: Sandbox) -> None:
    for name in ("a", "b", "c"):
        relay.add_account(name, sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(preset="unauthorized", token="tok-a", times=1)
    sandbox.fault(preset="payment_required", token="tok-b", times=1)
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 200
    assert attempts(relay) == [("a", 401, "unauthorized"), ("b", 402, "payment_required"), ("c", 200, "none")]
    assert [relay.state.store.account(n).state for n in "abc"] == ["unauthorized", "unauthorized", "active"]


def test_a_403_that_refuses_the_account_fails_over_like_a_401(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api(), priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    deactivated = {
        "error": {
            "message": "This account has been deactivated.",
            "type": "invalid_request_error",
            "param": None,
            "code": "account_deactivated",
        }
    }
    sandbox.fault(status=403, body=deactivated, token="tok-a", times=1)
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 200
    assert attempts(relay) == [("a", 403, "unauthorized"), ("b", 200, "none")]
    assert relay.state.store.account("a").state == "unauthorized"
    # With no other account left, the caller is not told that their own key was refused.
    sandbox.fault(status=403, body=deactivated, token="tok-b", times=1)
    assert_envelope(relay.client.post(V, json=CREATE, headers=auth(key)), 503, "upstream_account_unauthorized")


def test_connection_refused_fails_over(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("dead", f"http://127.0.0.1:{free_port()}/v1", priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 200
    assert attempts(relay) == [("dead", None, "connection_error"), ("b", 200, "none")]
    assert metric_value(relay, 'relay_failovers_total{from_error_class="connection_error"}') == 1


def test_failover_is_bounded(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(max_failover=2)
    for name in ("a", "b", "c", "d"):
        relay.add_account(name, sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=60)
    response = relay.client.post(V, json=CREATE, headers=auth(key))
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(sandbox.requests()) == 3  # the first try and two failovers
    assert relay.state.store.account("d").state == "active"


def test_no_failover_once_the_request_may_have_arrived(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(read_timeout_seconds=0.5, server_error_threshold=100)
    relay.add_account("a", sandbox.base_api(), priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    # 5xx, a reset after the request was sent, a read timeout: each may have started a render.
    sandbox.fault(preset="server_error", times=1)
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 500
    sandbox.fault(action="reset", times=1)
    reset = relay.client.post(V, json=CREATE, headers=auth(key))
    assert_envelope(reset, 502, "upstream_unreachable")
    sandbox.fault(preset="slow", delay_seconds=2, times=1)
    timed_out = relay.client.post(V, json=CREATE, headers=auth(key))
    assert_envelope(timed_out, 504, "upstream_timeout")
    # SDKs retry 502/504 on their own: the relay tells them not to, and why.
    for response in (reset, timed_out):
        assert response.headers["x-should-retry"] == "false" and "may have started the job" in response.text
    assert tokens_seen(sandbox) == ["tok-a", "tok-a", "tok-a"]
    assert metric_value(relay, 'relay_failovers_total{from_error_class="server_error"}') == 0


def test_work_on_an_existing_video_never_moves(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api(), priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    video = relay.client.post(V, json=CREATE, headers=auth(key)).json()
    sandbox.fault(preset="rate_limited", resets_in_seconds=60, token="tok-a", times=1)
    remix = relay.client.post(f"{V}/{video['id']}/remix", json={"prompt": "again"}, headers=auth(key))
    assert remix.status_code == 429
    assert tokens_seen(sandbox)[-1] == "tok-a" and "tok-b" not in tokens_seen(sandbox)


def test_repeated_server_errors_rest_the_account_then_it_recovers(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(server_error_threshold=3, server_error_cooldown_seconds=1.0)
    relay.add_account("a", sandbox.base_api(), priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    sandbox.fault(preset="server_error", token="tok-a", times=3)
    assert [relay.client.post(V, json=CREATE, headers=auth(key)).status_code for _ in range(3)] == [500, 500, 500]
    account = relay.state.store.account("a")
    assert account.state == "rate_limited" and "3 upstream failures in a row" in (account.state_reason or "")
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 200
    assert tokens_seen(sandbox)[-1] == "tok-b"
    time.sleep(1.1)
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 200
    assert tokens_seen(sandbox)[-1] == "tok-a"


def test_an_operator_reset_starts_the_failure_count_afresh(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(server_error_threshold=3)
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(preset="server_error", times=3)
    assert [relay.client.post(V, json=CREATE, headers=auth(key)).status_code for _ in range(2)] == [500, 500]
    reset_account(relay.state.store, "a")  # as `relayctl accounts reset a` does, from another process
    relay.state.reload()
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 500
    assert relay.state.store.account("a").state == "active"  # one failure since the reset, not three


def test_a_success_resets_the_failure_count(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(server_error_threshold=2)
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    for _ in range(3):
        sandbox.fault(preset="server_error", times=1)
        assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 500
        assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 200
    assert relay.state.store.account("a").state == "active"
