"""Models decide the pool: an account may declare the models it serves; new work goes only to
accounts that serve its model (sticky sessions and failover included), a model no account
serves is the client's 400, and work on an existing video stays with its account."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import TOKEN, Relay, Sandbox
from test_failover import attempts
from test_relay import CREATE, assert_envelope, auth, tokens_seen

from relay.accounts import AccountInputError, set_models, validate_models

BACKENDS = ("sqlite", "postgresql")
V = "/openai/v1/videos"
PRO = {**CREATE, "model": "sora-2-pro"}


def serve(relay: Relay, name: str, *models: str) -> None:
    set_models(relay.state.store, name, models or None)
    relay.state.reload()


def test_a_mixed_pool_routes_each_create_to_an_account_that_serves_its_model(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("plain", sandbox.base_api(), priority=1)
    relay.add_account("pro", sandbox.base_api(), priority=2)
    serve(relay, "plain", "sora-2")
    serve(relay, "pro", "sora-2-pro")
    key = relay.issue_key()
    for body, token in ((PRO, "tok-pro"), (CREATE, "tok-plain"), (PRO, "tok-pro"), ({"prompt": "no model given"}, "tok-plain")):
        sandbox.reset()
        assert relay.client.post(V, json=body, headers=auth(key)).status_code == 200
        assert tokens_seen(sandbox) == [token], body


def test_a_model_no_account_serves_is_a_400_that_reaches_no_upstream(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("plain", sandbox.base_api())
    serve(relay, "plain", "sora-2")
    key = relay.issue_key()
    refused = relay.client.post(V, json={**CREATE, "model": "veo-3.1-generate-preview"}, headers=auth(key))
    error = assert_envelope(refused, 400, "model_not_found")
    assert error["param"] == "model" and "veo-3.1-generate-preview" in error["message"]
    assert tokens_seen(sandbox) == []
    # A model the one serving account cannot take right now is another matter: a 503, retried later.
    relay.state.store.set_account_enabled("plain", False)
    relay.state.reload()
    assert_envelope(relay.client.post(V, json=CREATE, headers=auth(key)), 503)


def test_failover_stays_within_the_accounts_that_serve_the_model(relay: Relay, sandbox: Sandbox) -> None:
    for name, priority in (("a", 1), ("other", 2), ("b", 3)):
        relay.add_account(name, sandbox.base_api(), priority=priority)
    serve(relay, "other", "sora-2-pro")
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=60, token="tok-a", times=1)
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 200
    relay.flush()
    assert attempts(relay) == [("a", 429, "rate_limited"), ("b", 200, "none")]
    # With every account that serves it limited, the client gets the last 429, never another model's account.
    sandbox.fault(preset="rate_limited", resets_in_seconds=60, token="tok-b", times=1)
    assert relay.client.post(V, json=CREATE, headers=auth(key)).status_code == 429
    assert "tok-other" not in tokens_seen(sandbox)
    assert_envelope(relay.client.post(V, json=CREATE, headers=auth(key)), 503, "no_upstream_account")
    assert "tok-other" not in tokens_seen(sandbox)


def test_a_sticky_session_follows_the_model_and_existing_work_stays_with_its_account(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("plain", sandbox.base_api(), priority=1)
    relay.add_account("pro", sandbox.base_api(), priority=2)
    serve(relay, "plain", "sora-2")
    serve(relay, "pro", "sora-2-pro")
    key = relay.issue_key()
    session = {**auth(key), "Session-Id": "conversation-7"}
    first = relay.client.post(V, json=CREATE, headers=session)
    assert first.status_code == 200 and tokens_seen(sandbox) == ["tok-plain"]
    # The session's account does not serve sora-2-pro: this create goes where it is served.
    sandbox.reset()
    assert relay.client.post(V, json=PRO, headers=session).status_code == 200
    assert tokens_seen(sandbox) == ["tok-pro"]
    # The account that made a video keeps its follow-ups and remixes whatever it serves now.
    serve(relay, "plain", "sora-2-pro-only-now")
    sandbox.reset()
    video_id = first.json()["id"]
    deadline = time.monotonic() + 10
    while relay.client.get(f"{V}/{video_id}", headers=auth(key)).json()["status"] != "completed":
        assert time.monotonic() < deadline, "the sandbox never completed the video"
        time.sleep(0.1)
    remix = relay.client.post(f"{V}/{video_id}/remix", json={"prompt": "again"}, headers=auth(key))
    assert remix.status_code == 200, remix.text
    assert set(tokens_seen(sandbox)) == {"tok-plain"}


@pytest.mark.parametrize(
    "models",
    [[], ["ok", ""], ["-starts-with-a-sign"], ["has space"], ["x" * 129], [f"m{i}" for i in range(101)]],
)
def test_model_lists_are_checked(models: list[str]) -> None:
    with pytest.raises(AccountInputError):
        validate_models(models)


def test_model_lists_keep_their_order_without_repeats() -> None:
    assert validate_models([" sora-2 ", "veo-3.1-generate-preview", "sora-2", "models/veo-3.0@001"]) == (
        "sora-2",
        "veo-3.1-generate-preview",
        "models/veo-3.0@001",
    )
    assert validate_models(None) is None


def test_relayctl_sets_shows_and_clears_an_accounts_models(cli: Any) -> None:
    added = cli(
        "accounts", "add", "pro", "--type", "openai-responses", "--token-stdin", "--models", "sora-2-pro,sora-2", "--json", input=TOKEN
    )
    assert json.loads(added.output)["models"] == ["sora-2-pro", "sora-2"]
    listed = cli("accounts", "list")
    header, _, row = listed.output.splitlines()[:3]
    assert header.split()[4] == "models" and "sora-2,sora-2-pro" in row
    assert cli("accounts", "models", "pro", "none").output == "Account 'pro' serves every model its type carries.\n"
    assert json.loads(cli("accounts", "list", "--json").output)[0]["models"] is None
    assert json.loads(cli("accounts", "models", "pro", "veo-3.0-generate-001", "--json").output) == {
        "name": "pro",
        "models": ["veo-3.0-generate-001"],
    }
    refused = cli("accounts", "models", "pro", "bad name", code=2)
    assert "model names are 1-128 characters" in refused.output
    assert "no account named 'ghost'" in cli("accounts", "models", "ghost", "sora-2", code=1).output
    # A bad list is refused before the database is touched: nothing is added.
    cli("accounts", "add", "x", "--type", "openai-responses", "--token-stdin", "--models", ",", input=TOKEN, code=2)
    assert [a["name"] for a in json.loads(cli("accounts", "list", "--json").output)] == ["pro"]
