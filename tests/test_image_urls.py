"""Image URLs for providers that take image bytes (Veo's input_reference): fetched only from hosts
the operator listed, without redirects or credentials, bounded, and every failure the client's 400."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Relay, Sandbox
from test_gemini import PNG, VEO_CREATE, veo_account
from test_relay import assert_envelope, auth

from relay.config import ConfigError, load_settings

V = "/openai/v1/videos"
# path -> (status, content type, body, extra headers)
PAGES: dict[str, tuple[int, str, bytes, dict[str, str]]] = {
    "/ref.png": (200, "image/png", PNG, {}),
    "/moved.png": (302, "text/plain", b"", {"location": "/ref.png"}),
    "/missing.png": (404, "text/plain", b"no", {}),
    "/page.html": (200, "text/html", b"<html></html>", {}),
    "/huge.png": (200, "image/png", PNG + b"\x00" * 4096, {}),
}


class Images(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        Images.seen.append(dict(self.headers))
        status, media_type, body, extra = PAGES.get(self.path, (404, "text/plain", b"", {}))
        self.send_response(status)
        self.send_header("content-type", media_type)
        self.send_header("content-length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def images() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Images.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def create_with(relay: Relay, key: str, url: str) -> Any:
    return relay.client.post(V, json={**VEO_CREATE, "input_reference": {"image_url": url}}, headers=auth(key))


def test_without_a_host_list_the_relay_fetches_nothing(relay: Relay, sandbox: Sandbox, images: str) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    refused = create_with(relay, key, f"{images}/ref.png")
    error = assert_envelope(refused, 400, "image_url_not_allowed")
    assert error["param"] == "input_reference" and "RELAY_IMAGE_URL_HOSTS" in error["message"]
    assert Images.seen == [] and sandbox.requests() == []


def test_an_image_from_a_listed_host_becomes_the_instance_image(make_relay: Any, sandbox: Sandbox, images: str) -> None:
    relay = make_relay(image_url_hosts=frozenset({"127.0.0.1"}))
    veo_account(relay, sandbox)
    key = relay.issue_key()
    created = create_with(relay, key, f"{images}/ref.png")
    assert created.status_code == 200, created.text
    (sent,) = sandbox.requests()
    assert json.loads(base64.b64decode(sent["body_b64"]))["instances"][0]["image"] == {
        "bytesBase64Encoded": base64.b64encode(PNG).decode(),
        "mimeType": "image/png",
    }
    # The client's key and the account's key stay with the relay.
    assert not any(name.lower() in ("authorization", "x-goog-api-key") for name in Images.seen[0])


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/moved.png", "invalid_image_url"),  # redirects are not followed
        ("/missing.png", "invalid_image_url"),
        ("/page.html", "invalid_value"),  # not an image type Veo takes
        ("/huge.png", "invalid_image_url"),  # beyond RELAY_MAX_BODY_BYTES
    ],
)
def test_an_image_url_that_does_not_give_an_image_is_the_clients_400(
    make_relay: Any, sandbox: Sandbox, images: str, path: str, code: str
) -> None:
    relay = make_relay(image_url_hosts=frozenset({"127.0.0.1"}), max_body_bytes=2048)
    veo_account(relay, sandbox)
    key = relay.issue_key()
    error = assert_envelope(create_with(relay, key, images + path), 400, code)
    assert error["param"] == "input_reference"
    assert sandbox.requests() == []


@pytest.mark.parametrize(
    "url",
    ["http://user:pw@127.0.0.1:9/ref.png", "http://10.0.0.1/ref.png", "ftp://127.0.0.1/ref.png", "http://127.0.0.1:notaport/x"],
)
def test_urls_the_relay_will_not_fetch(make_relay: Any, sandbox: Sandbox, url: str) -> None:
    relay = make_relay(image_url_hosts=frozenset({"127.0.0.1"}))
    veo_account(relay, sandbox)
    key = relay.issue_key()
    refused = create_with(relay, key, url)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input_reference", refused.text
    assert sandbox.requests() == []


def test_an_unreachable_image_host_is_the_clients_400(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(image_url_hosts=frozenset({"127.0.0.1"}))
    veo_account(relay, sandbox)
    key = relay.issue_key()
    assert_envelope(create_with(relay, key, "http://127.0.0.1:9/ref.png"), 400, "invalid_image_url")


def test_the_host_list_setting() -> None:
    settings = load_settings({"RELAY_IMAGE_URL_HOSTS": " Images.Example.com, 127.0.0.1 ,[::1]"})
    assert settings.image_url_hosts == frozenset({"images.example.com", "127.0.0.1", "[::1]"})
    assert load_settings({}).image_url_hosts == frozenset()
    with pytest.raises(ConfigError, match="RELAY_IMAGE_URL_HOSTS"):
        load_settings({"RELAY_IMAGE_URL_HOSTS": "http://x/"})
