"""Upstreams beyond the OpenAI contract: what differs per provider, behind the OpenAI front door.

An account whose type has a provider here does not receive the client's bytes: its provider
builds the upstream request for each operation, translates the answer back into the OpenAI
contract, reads a job's state, locates its content and words its errors (with the cooldown hint
and the class the relay acts on). Account types without one (the OpenAI contract's) pass through
byte for byte, untouched by anything here: the request path asks `provider_for` once per request.

The translation functions are pure (no I/O); relay.providers.calls does the sending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

# Where a translated video's upstream job handle (Gemini: the operation name) is kept in the
# relay's own record of the video (its `resource` JSON). Never shown to clients: `public` drops it.
JOB_FIELD: Final = "relay_upstream_job"


@dataclass(frozen=True)
class UpstreamCall:
    """One request to the upstream: `path` is appended to the account's base_api; the body is JSON."""

    method: str
    path: str
    body: bytes | None = None


@dataclass(frozen=True)
class CreateRequest:
    """A create translated for the upstream, with what the relay answers the client from."""

    call: UpstreamCall
    model: str
    size: str
    seconds: str


@dataclass(frozen=True)
class Translated:
    """An upstream answer in the OpenAI contract's words. `status` is also what the relay acts on
    for the account: a Gemini 400 API_KEY_INVALID is a 401 (the account's key), not the client's 400."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    account_type: str

    def create_request(self, body: bytes, content_type: str | None) -> CreateRequest:
        """The upstream request for an OpenAI create; raises RelayError (400) for input it cannot carry."""

    def created(self, answer: bytes, request: CreateRequest, video_id: str, now: float) -> dict[str, Any] | None:
        """The OpenAI video object (with its JOB_FIELD) for a 2xx create answer; None if it names no job."""

    def poll_call(self, resource: dict[str, Any]) -> UpstreamCall | None:
        """The request that reads the job's state, from the stored video object; None if it has no job."""

    def job_state(self, resource: dict[str, Any], answer: bytes, now: float) -> dict[str, Any] | None:
        """The stored video object brought up to date by a 2xx poll answer; None if the answer is unreadable."""

    def content_url(self, answer: bytes) -> str | None:
        """Where a completed job's video is (an absolute URL), from a 2xx poll answer."""

    def error(self, status: int, body: bytes, *, creating: bool) -> Translated:
        """An upstream error answer as the OpenAI envelope, and the status the account's state follows."""


def public(resource: dict[str, Any]) -> dict[str, Any]:
    """The video object as a client sees it: without the relay's private job handle."""
    if JOB_FIELD not in resource:
        return resource
    return {name: value for name, value in resource.items() if name != JOB_FIELD}


def public_json(raw: str) -> Any:
    value = json.loads(raw)
    return public(value) if isinstance(value, dict) else value


def provider_for(account_type: str) -> Provider | None:
    return _PROVIDERS.get(account_type)


from .gemini import GEMINI  # noqa: E402  (the registry needs the types above)

_PROVIDERS: Final[dict[str, Provider]] = {GEMINI.account_type: GEMINI}
