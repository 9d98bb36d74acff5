"""Account types and what differs per provider, behind the one OpenAI front door.

Every account type is an `AccountType`: how its credential is sent, its default base_api, the
models it serves without a list, the cooldown hints its 429s carry, and, for providers that do not
speak the OpenAI contract, a `Translation`. A type without one (openai-responses, openai,
azure-openai) gets the client's bytes as they came; a translated one (gemini) gets requests its
translation builds, and its answers are put back into the contract's words.

This package's door is pure data and pure functions (no I/O), so records, limits and the CLI can
ask it about types; relay.providers.operations does the sending, for both kinds alike. A new
provider is one new module here: its AccountType (and Translation, its functions gathered by
relay.providers.jobs.Functions), registered below; relay.providers.inputs reads the client's create.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ..outcomes import COOLDOWN_HINTS

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
    prompt: str | None = None
    # An image the client gave by URL, which the relay fetches (relay.providers.images) before sending.
    image_url: str | None = None


@dataclass(frozen=True)
class Translated:
    """An upstream answer in the OpenAI contract's words. `status` is also what the relay acts on
    for the account: a Gemini 400 API_KEY_INVALID is a 401 (the account's key), not the client's 400."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Translation(Protocol):
    """A provider that does not speak the OpenAI contract, as pure functions of bytes and dicts."""

    def create_request(self, body: bytes, content_type: str | None) -> CreateRequest:
        """The upstream request for an OpenAI create; raises RelayError (400) for input it cannot carry."""

    def with_image(self, request: CreateRequest, data: bytes, mime_type: str) -> CreateRequest:
        """The create with the image its `image_url` named, fetched; raises RelayError (400) for one it cannot take."""

    def extension_request(self, body: bytes, content_type: str | None, source: dict[str, Any], video_uri: str) -> CreateRequest:
        """The upstream request for an OpenAI extension of `source` (its stored video object), whose
        file is at `video_uri`; raises RelayError (400) for one it cannot carry."""

    def created(self, answer: bytes, request: CreateRequest, video_id: str, now: float) -> dict[str, Any] | None:
        """The OpenAI video object (with its JOB_FIELD) for a 2xx create answer; None if it names no job."""

    def poll_call(self, resource: dict[str, Any]) -> UpstreamCall | None:
        """The request that reads the job's state, from the stored video object; None if it has no job."""

    def result_call(self, resource: dict[str, Any], answer: bytes) -> UpstreamCall | None:
        """A second request that a 2xx poll answer calls for before the job's state can be read (fal: a
        finished request's result); None when the poll answer says it all."""

    def job_state(self, resource: dict[str, Any], answer: bytes, now: float) -> dict[str, Any] | None:
        """The stored video object brought up to date by a 2xx poll answer (or by the 2xx answer to
        its result_call, when it named one); None if the answer is unreadable."""

    def content_url(self, answer: bytes) -> str | None:
        """Where a completed job's video is (an absolute URL), from the answer job_state read. A URL
        on the account's own origin is fetched with the account's credential; any other (a storage
        or CDN link) without it."""

    def delete_call(self, resource: dict[str, Any]) -> UpstreamCall | None:
        """The upstream's delete of the job, from the stored video object; None where the provider
        keeps nothing to delete (the relay's record alone goes)."""

    def error(self, status: int, body: bytes, *, creating: bool) -> Translated:
        """An upstream error answer as the OpenAI envelope, and the status the account's state follows."""

    def failed_result(self, resource: dict[str, Any], status: int, body: bytes, now: float) -> dict[str, Any] | None:
        """The stored video object, failed, when the error answer to a result_call is the job's own
        failure (fal: the model's 422); None when it is an error (the account's, a missing job's)."""

    def cancelled(self, status: int, body: bytes) -> bool:
        """Whether an error answer to the delete_call still leaves the job as deleted as the client
        asked (fal: a cancel of a request that already ran)."""


@dataclass(frozen=True)
class AccountType:
    name: str
    # How the credential travels: `authorization: <auth_scheme> <credential>`, or the credential
    # alone in a header of the provider's own.
    auth_header: bytes = b"authorization"
    default_base_api: str | None = None
    # The models an account of this type serves when it lists none: these prefixes, or (None)
    # every model no other type claims by prefix.
    model_prefixes: tuple[str, ...] | None = None
    # What a create that leaves them out renders, when it differs from the contract's defaults.
    default_seconds: float | None = None
    # Which hints of a 429 say how long to rest, in the order they are trusted (relay.outcomes).
    cooldown_hints: tuple[str, ...] = COOLDOWN_HINTS
    translation: Translation | None = None
    # Fixed headers every request a translation builds carries besides the credential (Runway's
    # API version); never sent to storage or CDN links, nor on the OpenAI contract's pass-through.
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    # The operations beyond create, retrieve, content, delete and list that this type carries.
    operations: frozenset[str] = frozenset({"remix", "edit", "extension", "character"})
    # The scheme before the credential in `authorization` (fal's is `Key`).
    auth_scheme: bytes = b"Bearer"

    def carries(self, kind: str) -> bool:
        return kind == "create" or kind in self.operations

    def auth(self, credential: str) -> tuple[bytes, bytes]:
        value = credential.encode("ascii")
        return (self.auth_header, self.auth_scheme + b" " + value) if self.auth_header == b"authorization" else (self.auth_header, value)


_OPERATION_NAMES = {"remix": "Remix", "edit": "Edit", "extension": "Extension", "character": "Character create"}
_ALWAYS_CARRIED = ("create", "retrieve", "content", "delete", "list")


def unsupported_message(kind: str, type_names: Iterable[str]) -> str:
    """Why work of `kind` cannot go to accounts of these types, naming what they do carry."""
    names = sorted(set(type_names))
    carried = [account_type(name) for name in names]
    common = [operation for operation in ("remix", "edit", "extension", "character") if all(t.carries(operation) for t in carried)]
    served = [*_ALWAYS_CARRIED, *(f"{operation}s" for operation in common)]
    return (
        f"{_OPERATION_NAMES[kind]} requests are not supported on {' or '.join(names)} accounts,"
        f" which serve {', '.join(served[:-1])} and {served[-1]} only."
    )


def public(resource: dict[str, Any]) -> dict[str, Any]:
    """The video object as a client sees it: without the relay's private job handle."""
    if JOB_FIELD not in resource:
        return resource
    return {name: value for name, value in resource.items() if name != JOB_FIELD}


def public_json(raw: str) -> Any:
    value = json.loads(raw)
    return public(value) if isinstance(value, dict) else value


def model_name(model: str) -> str:
    """A model as the pool matches it: Google's `models/veo-…` spelling is the same model as `veo-…`."""
    return model.removeprefix("models/")


def account_type(name: str) -> AccountType:
    """The type's facts; an unknown name (a row from a newer release) is treated as the OpenAI contract."""
    return ACCOUNT_TYPES.get(name) or AccountType(name)


def serves_by_default(type_name: str, model: str) -> bool:
    """Whether an account of this type without a model list serves `model`."""
    model = model_name(model)
    prefixes = account_type(type_name).model_prefixes
    if prefixes is not None:
        return model.startswith(prefixes)
    return not model.startswith(_CLAIMED_PREFIXES)


def default_seconds_for(model: str) -> float | None:
    """A create's length when it names none, where the model's provider differs from the contract."""
    model = model_name(model)
    for kind in ACCOUNT_TYPES.values():
        if kind.model_prefixes is not None and model.startswith(kind.model_prefixes):
            return kind.default_seconds
    return None


from .azure import AZURE_OPENAI  # noqa: E402  (the registry needs the types above)
from .byteplus import BYTEPLUS_TYPE  # noqa: E402
from .fal import FAL_TYPE  # noqa: E402
from .gemini import GEMINI_TYPE  # noqa: E402
from .openai import CHATGPT, OPENAI_RESPONSES  # noqa: E402
from .runway import RUNWAY_TYPE  # noqa: E402

ACCOUNT_TYPES: Final[dict[str, AccountType]] = {
    kind.name: kind for kind in (OPENAI_RESPONSES, CHATGPT, AZURE_OPENAI, GEMINI_TYPE, BYTEPLUS_TYPE, FAL_TYPE, RUNWAY_TYPE)
}
_CLAIMED_PREFIXES: Final = tuple(prefix for kind in ACCOUNT_TYPES.values() for prefix in kind.model_prefixes or ())
