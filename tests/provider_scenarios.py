"""What the providers' end-to-end tests share: the operator's side (accounts added with relayctl,
their state read back), the official openai SDK as the relay's only client (its traffic kept), the
sandbox's records, and the scenarios every provider goes through alike (a video completes and its
bytes come from the provider's storage without the key; a failed job ends the video failed; a 429
or a refused key moves the create to the next account; operations the type lacks are refused)."""

from __future__ import annotations

import base64
import json
import random
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Final

import httpx
import httpx2
import openai
import pytest
from conftest import ROOT, Relay, RelayProcess, Sandbox
from test_relay import auth

OPENAI_STATUSES: Final = frozenset({"queued", "in_progress", "completed", "failed"})
SAMPLE: Final = (ROOT / "relay" / "sandbox_assets" / "sample.mp4").read_bytes()
# The sandbox pads a video to the length a prompt's [bytes=N] marker names: a length no other video
# has shows the bytes came from this one.
PADDED_BYTES: Final = len(SAMPLE) + 4099
POLL_INTERVAL_MS: Final = 50
# create_and_poll polls until the video is done, with no limit of its own; this bounds each test.
MAX_SDK_REQUESTS: Final = 200


def png_image(width: int = 32, height: int = 32, seed: int = 7) -> bytes:
    """A real RGB PNG of noise: some kilobytes whose bytes include CR, LF and dashes, as a multipart
    boundary parser must carry them."""
    noise = random.Random(seed)
    rows = b"".join(b"\x00" + noise.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b"")


PNG: Final = png_image()
PNG_DATA_URL: Final = "data:image/png;base64," + base64.b64encode(PNG).decode("ascii")


def multipart(fields: dict[str, str], image: bytes | None = None, mime: str = "image/png") -> tuple[bytes, str]:
    """(body, content type) of a create sent as a form, with `image` as the uploaded input_reference."""
    boundary = "b0undary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode() for name, value in fields.items()]
    if image is not None:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="input_reference"; filename="a.png"\r\nContent-Type: {mime}\r\n\r\n'
        parts.append(head.encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------- the operator's side


def add_account(relay: RelayProcess, name: str, account_type: str, base_api: str, credential: str, *options: str) -> None:
    """`relayctl accounts add`, the credential piped in as an operator would."""
    done = relay.relayctl(
        "accounts", "add", name, "--type", account_type, "--token-stdin", "--base-api", base_api, *options, input=f"{credential}\n"
    )
    assert done.returncode == 0, done.stderr


def accounts_by_name(relay: RelayProcess) -> dict[str, dict[str, Any]]:
    listed = relay.relayctl("accounts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {account["name"]: account for account in json.loads(listed.stdout)}


def account_details(relay: RelayProcess, name: str) -> dict[str, Any]:
    shown = relay.relayctl("accounts", "show", name, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def cooldown_of(relay: RelayProcess, name: str) -> dict[str, Any]:
    listed = relay.relayctl("cooldowns", "--json")
    assert listed.returncode == 0, listed.stderr
    return next(row for row in json.loads(listed.stdout) if row["account"] == name)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the client's side


class SdkTraffic:
    """What the SDK sent to the relay, and every video status it was told; refuses to go on forever."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.statuses: list[str] = []

    def on_request(self, request: httpx2.Request) -> None:
        self.requests.append(request)
        if len(self.requests) > MAX_SDK_REQUESTS:
            raise RuntimeError(f"the SDK sent more than {MAX_SDK_REQUESTS} requests: the video never finished")

    def on_response(self, response: httpx2.Response) -> None:
        is_video_resource = response.request.method in ("GET", "POST") and "/content" not in response.request.url.path
        if is_video_resource and response.status_code == 200 and response.headers.get("content-type", "").startswith("application/json"):
            response.read()
            status = response.json().get("status")
            if status is not None:
                self.statuses.append(status)

    def posted(self) -> httpx2.Request:
        """The one POST the SDK sent."""
        [sent] = [request for request in self.requests if request.method == "POST"]
        return sent


@pytest.fixture
def traffic() -> SdkTraffic:
    return SdkTraffic()


@pytest.fixture
def make_sdk(traffic: SdkTraffic) -> Iterator[Any]:
    """The official SDK pointed at a relay, every request and status it saw kept in `traffic`."""
    opened: list[httpx2.Client] = []

    def make(relay: RelayProcess, key: str) -> openai.OpenAI:
        http = httpx2.Client(timeout=20, event_hooks={"request": [traffic.on_request], "response": [traffic.on_response]})
        opened.append(http)
        # No SDK retries: each outcome is the relay's own (its failover, its errors).
        return openai.OpenAI(base_url=f"{relay.url}/openai/v1", api_key=key, max_retries=0, http_client=http)

    yield make
    for http in opened:
        http.close()


# --------------------------------------------------------------------------- the sandbox's records


def recorded_body(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(record["body_b64"]))  # type: ignore[no-any-return]


def header_values(record: dict[str, Any], name: str) -> list[str]:
    return [value for header, value in record["headers"] if header.lower() == name]


def recorded_under(sandbox: Sandbox, prefix: str, method: str | None = None) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith(prefix) and method in (None, r["method"])]


# --------------------------------------------------------------------------- scenarios


def completes(client: openai.OpenAI, traffic: SdkTraffic, **create: Any) -> Any:
    """create_and_poll ends `completed`, and every status the SDK was told is one of OpenAI's."""
    video = client.videos.create_and_poll(**create, poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "completed" and video.error is None, video
    assert video.id.startswith("video_") and video.model == create["model"]
    assert traffic.statuses and set(traffic.statuses) <= OPENAI_STATUSES and traffic.statuses[-1] == "completed"
    return video


def downloads_from_storage(client: openai.OpenAI, video_id: str, sandbox: Sandbox, storage_prefix: str) -> dict[str, Any]:
    """The download is the padded video the provider's storage serves (fetched again here, with no
    key), and the relay sent storage no credential. The storage request's record."""
    downloaded = client.videos.download_content(video_id).read()
    [stored] = recorded_under(sandbox, storage_prefix)
    query = f"?{stored['query']}" if stored.get("query") else ""
    served = httpx.get(f"{sandbox.url}{stored['path']}{query}")
    assert served.status_code == 200
    assert downloaded == served.content
    assert len(downloaded) == PADDED_BYTES and downloaded.startswith(SAMPLE)
    assert stored["token"] is None and header_values(stored, "authorization") == [], stored
    return stored


def fails_with(client: openai.OpenAI, model: str, prompt: str, code: str) -> Any:
    """The job fails: the video ends `failed` with `code`, and has no content."""
    video = client.videos.create_and_poll(model=model, prompt=prompt, poll_interval_ms=POLL_INTERVAL_MS)
    assert video.status == "failed"
    assert video.error is not None and video.error.code == code and video.error.message
    with pytest.raises(openai.ConflictError) as refused:
        client.videos.download_content(video.id)
    assert refused.value.code == "video_failed"
    return video


def fails_over(
    relay: RelayProcess,
    sandbox: Sandbox,
    client: openai.OpenAI,
    *,
    model: str,
    creates: Callable[[Sandbox], list[dict[str, Any]]],
    keys: tuple[str, str],
    first_state: str,
    poll: bool = False,
) -> None:
    """With a fault set for the first account's key, the create goes to the first account, then to
    the second, which then serves the video alone; the first ends in `first_state`."""
    if poll:
        video = client.videos.create_and_poll(model=model, prompt="A lighthouse in a storm", poll_interval_ms=POLL_INTERVAL_MS)
        assert video.status == "completed"
        # The video lives on the account that made it: every later call went there.
        polls = [r for r in sandbox.requests() if r["method"] == "GET" and r["token"] is not None]
        assert polls and {r["token"] for r in polls} == {keys[1]}
    else:
        assert client.videos.create(model=model, prompt="A lighthouse").status == "queued"
    assert [r["token"] for r in creates(sandbox)] == list(keys)
    accounts = accounts_by_name(relay)
    assert (accounts["first"]["state"], accounts["second"]["state"]) == (first_state, "active")


def refuses_remix_and_characters(client: openai.OpenAI, video_id: str, account_type: str) -> None:
    """Remix and character creates are the client's 400 naming the type."""
    with pytest.raises(openai.BadRequestError) as remix:
        client.videos.remix(video_id, prompt="The same fox at night")
    assert remix.value.code == "unsupported_for_account_type"
    assert f"Remix requests are not supported on {account_type} accounts" in remix.value.message
    with pytest.raises(openai.BadRequestError) as character:
        client.videos.create_character(name="Fox", video=("fox.mp4", SAMPLE, "video/mp4"))
    assert character.value.code == "unsupported_for_account_type" and account_type in character.value.message


def retry_after_rests_the_account(
    relay: RelayProcess,
    sandbox: Sandbox,
    client: openai.OpenAI,
    *,
    model: str,
    provider: str,
    first_key: str,
    seconds: int = 42,
    header: str = "retry-after",
) -> None:
    """A Retry-After on the first account's 429 (the provider's own, or a gateway's in front of it)
    is how long that account rests; the create moves on to the second."""
    sandbox.fault(preset="rate_limited", provider=provider, token=first_key, times=1, headers={header: str(seconds)})
    assert client.videos.create(model=model, prompt="A lighthouse").status == "queued"
    rests_for(relay, "first", "retry_after", seconds)


def rests_for(relay: RelayProcess, name: str, source: str, seconds: float) -> None:
    """The account rests after a 429 for `seconds`, as the hint `source` (or `default`) said."""
    cooldown = cooldown_of(relay, name)
    assert cooldown["reason"] == f"upstream 429 (cooldown from {source})"
    assert seconds - 12 < cooldown["seconds_left"] <= seconds


def poll_until_done(relay: Relay, key: str, video_id: str, seconds: float = 10) -> dict[str, Any]:
    """The video object from the in-process relay, once the emulator has finished its job."""
    deadline = time.monotonic() + seconds
    while True:
        seen = relay.client.get(f"/openai/v1/videos/{video_id}", headers=auth(key))
        assert seen.status_code == 200, seen.text
        if seen.json()["status"] in ("completed", "failed"):
            return seen.json()  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the emulator never finished the job"
        time.sleep(0.05)
