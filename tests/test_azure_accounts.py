"""Azure OpenAI accounts: the same contract, byte for byte, with the key in the `api-key` header."""

from __future__ import annotations

import json
from typing import Any

from conftest import TOKEN

from relay.accounts import AccountInputError, checked_input
from relay.upstream import request_headers

CLIENT = [(b"content-type", b"application/json"), (b"authorization", b"Bearer rk-client-key"), (b"user-agent", b"sdk/1")]


def test_an_azure_account_sends_its_key_as_api_key_and_never_authorization() -> None:
    headers = dict(request_headers(CLIENT, "azure-key-123", account_type="azure-openai"))
    assert headers[b"api-key"] == b"azure-key-123"
    assert b"authorization" not in headers
    assert headers[b"user-agent"] == b"sdk/1" and headers[b"content-type"] == b"application/json"


def test_openai_accounts_keep_the_bearer_token() -> None:
    for account_type in ("openai-responses", "openai"):
        headers = dict(request_headers(CLIENT, "sk-upstream", account_type=account_type))
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
        "accounts", "add", "az", "--type", "azure-openai", "--token-stdin",
        "--base-api", "https://res.openai.azure.com/openai/v1", "--json", input=TOKEN,
    )
    assert json.loads(added.output)["type"] == "azure-openai"
    listed = json.loads(cli("accounts", "list", "--json").output)
    assert [(a["name"], a["type"], a["base_api"]) for a in listed] == [("az", "azure-openai", "https://res.openai.azure.com/openai/v1")]
