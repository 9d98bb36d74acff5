"""Idempotency-Key for new work: a repeated request returns the first answer instead of a second render."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from .body import request_fingerprint
from .errors import RelayError, WorkMayExist, envelope
from .records import KeyRecord
from .state import RelayState

HEADER = "idempotency-key"
_MAX_KEY_LENGTH = 255
# A claim this old belongs to a request whose worker died; another request may take it over.
_STALE_CLAIM_SECONDS = 600.0


class Claim:
    """What the caller learns: a stored answer to replay, or the right (and duty) to answer."""

    def __init__(self, replay: Response | None = None) -> None:
        self.replay = replay
        self.answer: tuple[int, str | None, bytes] | None = None

    def keep(self, status: int, content_type: str | None, body: bytes) -> None:
        """Store this answer for repeats (only successes are kept: a failure may be retried)."""
        if 200 <= status < 300:
            self.answer = (status, content_type, body)

    def keep_failure(self, error: WorkMayExist) -> None:
        """Store a failure whose job may exist upstream: a repeat gets it too instead of a second render."""
        self.answer = (error.status, "application/json", envelope(error.message, status=error.status, code=error.code))


@contextlib.asynccontextmanager
async def idempotent(state: RelayState, request: Request, key: KeyRecord, route: str, body: bytes) -> AsyncIterator[Claim]:
    idempotency_key = request.headers.get(HEADER)
    if idempotency_key is None:
        yield Claim()
        return
    if not 0 < len(idempotency_key) <= _MAX_KEY_LENGTH:
        raise RelayError(400, f"Idempotency-Key must be 1 to {_MAX_KEY_LENGTH} characters.", code="invalid_idempotency_key")
    digest = hashlib.sha256(route.encode() + b"\0" + request_fingerprint(body, request.headers.get("content-type"))).hexdigest()
    outcome, stored = await state.db_now(
        state.store.claim_idempotency,
        key.name,
        idempotency_key,
        digest,
        now=time.time(),
        ttl=state.settings.idempotency_ttl_seconds,
        stale_after=_STALE_CLAIM_SECONDS,
    )
    if outcome == "mismatch":
        raise RelayError(
            422,
            "This Idempotency-Key was already used with a different request; use a new key for new work.",
            code="idempotency_key_reused",
        )
    if outcome == "in_progress":
        raise RelayError(
            409,
            "A request with this Idempotency-Key is still in progress; retry after it has finished.",
            code="idempotency_key_in_progress",
            headers={"retry-after": "1"},
        )
    if outcome == "replay" and stored is not None:
        headers = {"idempotent-replayed": "true"}
        if stored["status"] >= 400:
            headers["x-should-retry"] = "false"  # the same answer will come back every time
        if stored["content_type"]:
            headers["content-type"] = stored["content_type"]
        yield Claim(Response(stored["body"], status_code=stored["status"], headers=headers))
        return
    claim = Claim()
    try:
        yield claim
    finally:
        if claim.answer is not None:
            status, content_type, answer_body = claim.answer
            await state.db_now(
                state.store.finish_idempotency, key.name, idempotency_key, status=status, content_type=content_type, body=answer_body
            )
        else:
            await state.db_now(state.store.release_idempotency, key.name, idempotency_key)
