"""Per-account outbound proxies: traffic goes through them, their passwords stay hidden."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from conftest import Relay, Sandbox, free_port
from test_relay import CREATE, auth

from relay.accounts import AccountInputError, add_account, redact_proxy, set_proxy


def test_requests_travel_through_the_account_proxy(relay: Relay, sandbox: Sandbox) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/v1"
    # The sandbox doubles as an HTTP forward proxy here: it receives the absolute-form request.
    proxy = sandbox.url.replace("http://", "http://relay:proxy-pass@")
    add_account(
        relay.state.store, relay.state.box, name="proxied", type="openai-responses", credential="tok-p", base_api=unreachable, proxy=proxy
    )
    relay.state.reload()
    key = relay.issue_key()
    response = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    assert response.status_code == 200, response.text
    [seen] = sandbox.requests()
    headers = dict(seen["headers"])
    assert headers["host"] == unreachable.split("/")[2]  # addressed to the upstream, delivered to the proxy
    assert headers["proxy-authorization"].startswith("Basic ")
    set_proxy(relay.state.store, relay.state.box, "proxied", None)
    relay.state.reload()
    assert relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)).status_code == 502


def test_ambient_proxy_variables_are_ignored(relay_process: Any, sandbox: Sandbox) -> None:
    """Only an account's own proxy setting may reroute its credentials, not the environment's."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    relay = relay_process(extra_env={name: nowhere for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")})
    relay.add_accounts(sandbox, "main")
    key = relay.issue_key("direct")
    response = httpx.post(f"{relay.url}/openai/v1/videos", json=CREATE, headers=auth(key), trust_env=False)
    assert response.status_code == 200, response.text
    assert len(sandbox.requests()) == 1


def test_proxy_validation_and_redaction(relay: Relay) -> None:
    with pytest.raises(AccountInputError, match="proxy"):
        add_account(relay.state.store, relay.state.box, name="x", type="openai-responses", credential="t", proxy="ftp://h:1")
    assert redact_proxy("http://user:s3cret@proxy.local:3128") == "http://***@proxy.local:3128"
    assert redact_proxy("socks5://proxy.local:1080") == "socks5://proxy.local:1080"


def test_cli_proxy_commands_hide_the_password(cli: Any) -> None:
    cli("accounts", "add", "main", "--type", "openai-responses", "--token", "t", "--proxy", "socks5://ops:hunter2@127.0.0.1:1080")
    shown = json.loads(cli("accounts", "show", "main", "--json").output)
    assert shown["proxy"] == "socks5://***@127.0.0.1:1080"
    out = cli("accounts", "proxy", "main", "http://ops:hunter2@127.0.0.1:3128").output
    assert "hunter2" not in out and "ops" not in out and "***" in out
    assert json.loads(cli("accounts", "proxy", "main", "--clear", "--json").output)["proxy"] is None
    assert "give a proxy URL or --clear" in cli("accounts", "proxy", "main", code=2).output
    assert "proxy" in cli("accounts", "proxy", "main", "gopher://x", code=1).output
