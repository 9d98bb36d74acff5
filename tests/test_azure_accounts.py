"""Azure OpenAI accounts: the same contract, byte for byte, with the key in the `api-key` header."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import TOKEN, Relay, Sandbox
from test_relay import CREATE, auth

from relay.accounts import AccountInputError, checked_input
from relay.providers import account_type
from relay.upstream import request_headers

V = "/openai/v1/videos"
CLIENT = [(b"content-type", b"application/json"), (b"authorization", b"Bearer rk-client-key"), (b"user-agent", b"sdk/1")]


def test_an_azure_account_sends_its_key_as_api_key_and_never_authorization() -> None:
    headers = dict(request_headers(CLIENT, account_type("azure-openai").auth("azure-key-123")))
    assert headers[b"api-key"] == b"azure-key-123"
    assert b"authorization" not in headers
    assert headers[b"user-agent"] == b"sdk/1" and headers[b"content-type"] == b"application/json"


def test_openai_accounts_keep_the_bearer_token() -> None:
    for name in ("openai-responses", "openai"):
        headers = dict(request_headers(CLIENT, account_type(name).auth("sk-upstream")))
        assert headers[b"authorization"] == b"Bearer sk-upstream" and b"api-key" not in headers


def test_an_azure_account_needs_its_resources_base_api() -> None:
    try:
        checked_input(name="az", type="azure-openai", credential="k", base_api=None, priority=100, proxy=None)
    except AccountInputError as error:
        assert "--base-api is required for azure-openai" in str(error)
    else:
        raise AssertionError("an azure-openai account without --base-api was accepted")
    _, base = checked_input(
        name="az", type="azure-openai", credential="k", base_api="https://res.openai.azure.com/openai/v1", priority=100, proxy=None
    )
    assert base == "https://res.openai.azure.com/openai/v1"


def test_relayctl_adds_an_azure_account(cli: Any) -> None:
    refused = cli("accounts", "add", "az", "--type", "azure-openai", "--token-stdin", input=TOKEN, code=1)
    assert "--base-api is required" in refused.output
    added = cli(
        "accounts",
        "add",
        "az",
        "--type",
        "azure-openai",
        "--token-stdin",
        "--base-api",
        "https://res.openai.azure.com/openai/v1",
        "--json",
        input=TOKEN,
    )
    assert json.loads(added.output)["type"] == "azure-openai"
    listed = json.loads(cli("accounts", "list", "--json").output)
    assert [(a["name"], a["type"], a["base_api"]) for a in listed] == [("az", "azure-openai", "https://res.openai.azure.com/openai/v1")]


def test_an_azure_account_serves_the_whole_contract_through_the_relay(relay: Relay, sandbox: Sandbox) -> None:
    """Create, retrieve and download against the sandbox's Azure emulator, which accepts the
    api-key header only: the relay's own Bearer handling would be a 401 there."""
    relay.add_account("az", f"{sandbox.url}/openai/v1", token="azure-key-1", type="azure-openai")
    key = relay.issue_key()
    created = relay.client.post(V, json=CREATE, headers=auth(key))
    assert created.status_code == 200, created.text
    video_id = created.json()["id"]
    deadline = time.monotonic() + 10
    while (seen := relay.client.get(f"{V}/{video_id}", headers=auth(key))).json()["status"] != "completed":
        assert seen.status_code == 200, seen.text
        assert time.monotonic() < deadline, "the emulator never completed the video"
        time.sleep(0.1)
    content = relay.client.get(f"{V}/{video_id}/content", headers=auth(key))
    assert content.status_code == 200 and content.content[4:8] == b"ftyp"
    recorded = sandbox.requests()
    assert recorded and {r["token"] for r in recorded} == {"azure-key-1"}
    assert all(name.lower() != "authorization" for r in recorded for name, _ in r["headers"])


def test_an_azure_429_rests_the_account_for_its_retry_after_ms(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("az", f"{sandbox.url}/openai/v1", token="azure-key-1", type="azure-openai")
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=42, provider="azure", times=1)
    limited = relay.client.post(V, json=CREATE, headers=auth(key))
    assert limited.status_code == 429, limited.text
    account = relay.state.store.account("az")
    assert account.state == "rate_limited" and account.state_reason is not None
    assert account.state_reason == "upstream 429 (cooldown from retry_after_ms)"
    assert account.state_until is not None and account.state_since is not None
    assert account.state_until - account.state_since == pytest.approx(42)
