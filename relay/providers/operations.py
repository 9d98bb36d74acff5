"""What the Videos routes ask of an account, the same way whatever its provider.

`operations_for(account)` gives the account's `Operations`: the OpenAI contract's pass-through
(relay.providers.passthrough) or a translation's (relay.providers.translating). Both send through
the request's `Attempts`, so recording, cooldowns and failover treat every provider alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .. import upstream as upstream_http
from ..attempts import Attempts
from ..pool import Upstream
from ..records import Video
from . import account_type


@dataclass(frozen=True)
class Result:
    """An upstream answer as the client gets it, and the video object the relay records from it
    (None when the answer holds none: an error, or a body it cannot read)."""

    answer: upstream_http.Answer
    resource: dict[str, Any] | None


@dataclass(frozen=True)
class Polled(Result):
    """A retrieve, not yet settled: `for_account` is what the account's state follows."""

    for_account: upstream_http.Answer


class Operations(Protocol):
    async def create(self, attempts: Attempts, upstream: Upstream, *, kind: str, path: str, body: bytes, source: Video | None) -> Result:
        """New work (create, remix, edit, extension of `source`) at `path` of the contract; settled attempts."""

    async def retrieve(self, attempts: Attempts, upstream: Upstream, video: Video) -> Polled:
        """The job's state, read from the upstream; the caller settles it with the status it records."""

    async def open_content(
        self, attempts: Attempts, upstream: Upstream, video: Video, variant: str | None
    ) -> upstream_http.Opened | upstream_http.Answer:
        """The video's bytes opened for streaming (attempts.stream), or a settled answer to give instead."""

    async def delete(self, attempts: Attempts, upstream: Upstream, video: Video) -> upstream_http.Answer | None:
        """The upstream's delete, settled; None where the provider keeps nothing to delete."""


def operations_for(upstream: Upstream) -> Operations:
    translation = account_type(upstream.account.type).translation
    return PASS_THROUGH if translation is None else Translating(translation)


from .passthrough import PASS_THROUGH  # noqa: E402  (they implement the protocol above)
from .translating import Translating  # noqa: E402
