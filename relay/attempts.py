"""Upstream attempts: the one API handlers and providers send through.

An `Attempts` belongs to one caller (a client's request, or the job watcher), its key and route. Every attempt it makes
is recorded the same way, whatever the provider: the access log's facts, the metrics, an outcome
row, and what the answer means for the account's state (relay.account_health). Handlers never
do that bookkeeping themselves: they send, settle (once they know the job status to record),
fail over, or stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from . import upstream as upstream_http
from .account_health import note_server_health, note_upstream_error
from .caller import Caller
from .errors import AnswerCutShort, RelayError, WorkMayExist, error_response
from .logs import SHUTDOWN, fields
from .outcomes import answer_class, is_redirect, status_class, upstream_error
from .pool import Upstream
from .quota import note_upstream_quota
from .records import Outcome
from .scheduling import Admit, admit_any, follow_failover, mark_chosen, pick_admitted
from .state import RelayState

log = logging.getLogger("relay.attempts")

_DO_NOT_RETRY = {"x-should-retry": "false"}
# Classes of answer after which new work may move to the next account: nothing was rendered.
FAILOVER_CLASSES = frozenset({"rate_limited", "unauthorized", "payment_required"})


@dataclass(frozen=True)
class Outgoing:
    """One request to an upstream, as it will be sent: an absolute URL and raw headers."""

    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes | None = None


class UpstreamUnavailable(RelayError):
    """502/504 for a transport failure; remembers whether the request never left (safe to retry)."""

    def __init__(self, failure: upstream_http.UpstreamFailure) -> None:
        if failure.error_class == "timeout":
            super().__init__(504, "The upstream did not answer in time.", code="upstream_timeout")
        elif failure.error_class == "config_error":
            super().__init__(
                503,
                "The upstream account serving this request is misconfigured (its base_api or proxy): an operator must fix"
                " it. Nothing was sent upstream. Your relay key is fine.",
                code="upstream_account_misconfigured",
                headers=_DO_NOT_RETRY,
            )
        elif failure.error_class == "server_error":
            super().__init__(502, "The upstream's answer was larger than this relay accepts.", code="upstream_answer_too_large")
        else:
            super().__init__(502, "The upstream could not be reached or broke off the answer.", code="upstream_unreachable")
        self.error_class = failure.error_class
        self.before_send = failure.before_send


class OutcomeUnknown(WorkMayExist):
    """New work whose request reached an upstream that then failed to answer: it may be rendering."""

    def __init__(self, unavailable: UpstreamUnavailable) -> None:
        super().__init__(
            unavailable.status,
            unavailable.message + " The request had already been sent, so the upstream may have started the job; it was not sent again,"
            " to avoid paying for a second render. List your videos before retrying.",
            code=unavailable.code,
            # SDKs retry 502/504 by themselves, which would start the second render the relay avoided.
            headers=_DO_NOT_RETRY,
        )


@dataclass(frozen=True)
class Attempts:
    state: RelayState
    caller: Caller
    # The relay key the work is for; None for the relay's own (the job watcher's polls).
    key_name: str | None
    route: str

    # -- sending -------------------------------------------------------------------------------------

    async def open(self, upstream: Upstream, outgoing: Outgoing) -> upstream_http.Opened:
        """Send and wait for the answer's head; transport failures are recorded and become 502/504.

        An account no request can be built for (a bad base_api or proxy) is the account's fault,
        recorded like a connection that could not be made: never a 400 blaming the client.
        """
        try:
            if upstream.problem is not None:
                raise upstream_http.UpstreamFailure("config_error", upstream.problem, 0.0, before_send=True)
            return await upstream_http.open_response(
                self.state.client_for(upstream),
                outgoing.method,
                outgoing.url,
                headers=outgoing.headers,
                body=outgoing.body,
                head_timeout=self.state.settings.read_timeout_seconds,
                credential=upstream.credential,
            )
        except upstream_http.UpstreamFailure as failure:
            raise await self.failed(upstream, failure) from None
        except upstream_http.RequestNotSendable:
            raise RelayError(
                400,
                "A forwarded request header has a value that cannot be sent upstream (a line break, or bytes that are not UTF-8).",
                code="invalid_request_headers",
            ) from None

    async def read(self, upstream: Upstream, opened: upstream_http.Opened) -> upstream_http.Answer:
        """The whole (bounded) answer of an opened attempt; a failure while reading is recorded."""
        try:
            return await upstream_http.read_answer(
                opened,
                max_bytes=self.state.settings.max_upstream_response_bytes,
                body_timeout=self.state.settings.read_timeout_seconds,
                credential=upstream.credential,
            )
        except upstream_http.UpstreamFailure as failure:
            raise await self.failed(upstream, failure) from None

    async def fetch(self, upstream: Upstream, outgoing: Outgoing) -> upstream_http.Answer:
        """Send and read the whole answer, not yet settled: the caller settles it with what it learnt."""
        return await self.read(upstream, await self.open(upstream, outgoing))

    async def send(self, upstream: Upstream, outgoing: Outgoing) -> upstream_http.Answer:
        """One attempt, settled: send, record it, let it change the account's state."""
        answer = await self.fetch(upstream, outgoing)
        await self.settle(upstream, answer)
        return answer

    # -- bookkeeping ---------------------------------------------------------------------------------

    async def settle(self, upstream: Upstream, answer: upstream_http.Answer, *, job_status: str | None = None) -> None:
        """Record an HTTP answer and apply what it means for the account."""
        kind = answer_class(answer.status, answer.body)
        self._note(upstream, kind, answer.latency_seconds)
        self._count(upstream, answer.status, kind, answer.latency_seconds, job_status)
        note_upstream_quota(self.state, upstream, answer.headers, self.state.clock())
        if kind != "none":
            await note_upstream_error(self.state, upstream, answer, kind, request_id=self.caller.request_id, route=self.route)
        await note_server_health(self.state, upstream, kind)

    async def failed(self, upstream: Upstream, failure: upstream_http.UpstreamFailure) -> UpstreamUnavailable:
        """Record a transport failure; the error to raise for it."""
        self._note(upstream, failure.error_class, failure.latency_seconds)
        self._count(upstream, None, failure.error_class, failure.latency_seconds)
        self._log_failure("upstream failure", upstream, failure)
        await note_server_health(self.state, upstream, failure.error_class)
        return UpstreamUnavailable(failure)

    def _note(self, upstream: Upstream, kind: str, latency_seconds: float) -> None:
        """What the access log and `x-relay-overhead-ms` learn of an upstream attempt."""
        facts = self.caller.facts
        facts.account, facts.error_class = upstream.account.name, kind
        facts.upstream_seconds += latency_seconds

    def _count(self, upstream: Upstream, status: int | None, kind: str, latency_seconds: float, job_status: str | None = None) -> None:
        """An attempt's metrics and outcome row."""
        account, state = upstream.account, self.state
        state.metrics.upstream_requests_by(account.name, account.type, self.route, status_class(status), kind).inc()
        state.metrics.upstream_duration_by(account.name, self.route).observe(latency_seconds)
        state.recorder.put(
            Outcome(
                ts=state.clock(),
                request_id=self.caller.request_id,
                key_name=self.key_name,
                account=account.name,
                account_type=account.type,
                route=self.route,
                upstream_status=status,
                error_class=kind,
                latency_ms=round(latency_seconds * 1000, 3),
                job_status=job_status,
            )
        )

    # -- new work --------------------------------------------------------------------------------------

    async def with_failover(
        self,
        upstream: Upstream,
        send: Callable[[Upstream], Awaitable[upstream_http.Answer]],
        *,
        may_fail_over: bool,
        admit: Admit = admit_any,
        sticky: str | None = None,
    ) -> tuple[Upstream, upstream_http.Answer]:
        """New work: on 429/401/402, or a failure before anything was sent, try the next account `admit` accepts.

        Never after the request may have reached an upstream (read timeout, reset, 5xx): a
        duplicate render costs money. At most RELAY_MAX_FAILOVER extra attempts. `send` makes one
        settled attempt on the account it is given. A `sticky` session served by another account
        than the first moves to it.
        """
        state = self.state
        tried = [upstream.name]
        while True:
            unavailable: UpstreamUnavailable | None = None
            try:
                answer = await send(upstream)
            except UpstreamUnavailable as error:
                if not error.before_send:
                    raise OutcomeUnknown(error) from None
                unavailable, reason = error, error.error_class
            else:
                reason = answer_class(answer.status, answer.body)
                if reason not in FAILOVER_CLASSES:
                    if sticky is not None and upstream.name != tried[0] and answer.status < 300:
                        await follow_failover(state, sticky, upstream.name, first=tried[0])
                    return upstream, answer
            now = state.clock()
            following = (
                await pick_admitted(state, now, admit, exclude=tried)
                if may_fail_over and len(tried) <= state.settings.max_failover
                else None
            )
            if following is None:
                if unavailable is not None:
                    raise unavailable
                return upstream, answer
            state.metrics.failovers.labels(reason).inc()
            log.info(
                "failover",
                extra=fields(request_id=self.caller.request_id, route=self.route, account=upstream.name, to=following.name, reason=reason),
            )
            mark_chosen(state, following, now)
            tried.append(following.name)
            upstream = following

    # -- downloads -------------------------------------------------------------------------------------

    async def stream(self, upstream: Upstream, opened: upstream_http.Opened) -> Response:
        """The opened answer to the client: errors read whole and settled like any answer; a body
        streamed in constant memory, at the client's pace, and recorded when it ends."""
        if opened.status >= 400 or is_redirect(opened.status) or is_text(opened.headers.get("content-type")):
            # Errors are small and carry cooldown hints: read them whole and treat them like any other.
            # So is text where bytes of a video or an image belong: read whole, a credential an
            # upstream echoes in it is masked as in every other answer (a download is not looked into).
            answer = await self.read(upstream, opened)
            await self.settle(upstream, answer)
            return passthrough(answer)
        headers = upstream_http.response_headers(opened.headers, content=True)
        if self.caller.method == "HEAD":
            # The head is the whole answer: drop the upstream body instead of copying it nowhere.
            await opened.close()
            await self.settle(upstream, upstream_http.Answer(opened.status, opened.headers, b"", time.perf_counter() - opened.started))
            return Response(status_code=opened.status, headers=headers)
        latency = time.perf_counter() - opened.started
        self._note(upstream, "none", latency)
        note_upstream_quota(self.state, upstream, opened.headers, self.state.clock())
        return DownloadResponse(
            self._relay_bytes(upstream, opened, latency),
            status_code=opened.status,
            headers=headers,
            background=BackgroundTask(opened.close),
        )

    async def _relay_bytes(self, upstream: Upstream, opened: upstream_http.Opened, latency: float) -> AsyncIterator[bytes | memoryview]:
        """The body as it comes. The attempt is recorded when it ends: a download the upstream breaks
        off is a failure of that account, though its status line said 200."""
        kind = "none"
        try:
            # Chunks pass on as they were read: re-slicing them would copy every byte again.
            async for chunk in opened.chunks():
                yield chunk
        except upstream_http.UpstreamFailure as failure:
            kind = failure.error_class
            self._broken_off(upstream, failure)
            raise AnswerCutShort() from None
        except (asyncio.CancelledError, GeneratorExit):
            # Cut while waiting on the upstream (cancelled) or on the client (closed at its yield).
            if self.caller.facts.cut_by_shutdown():
                kind = SHUTDOWN
            raise
        finally:
            # Also runs when the client went away and the response task was cancelled; a client leaving
            # is no failure of the upstream's, and for "none" the health note never waits.
            self._count(upstream, opened.status, kind, latency)
            await note_server_health(self.state, upstream, kind)
            await opened.close()

    def _broken_off(self, upstream: Upstream, failure: upstream_http.UpstreamFailure) -> None:
        """An answer the upstream broke off after its head had been passed on: logged, and in the access log."""
        self.caller.facts.error_class = failure.error_class
        self._log_failure("upstream broke off an answer", upstream, failure)

    def _log_failure(self, message: str, upstream: Upstream, failure: upstream_http.UpstreamFailure) -> None:
        log.warning(
            message,
            extra=fields(
                request_id=self.caller.request_id,
                account=upstream.name,
                route=self.route,
                error_class=failure.error_class,
                detail=failure.message,
            ),
        )


class DownloadResponse(StreamingResponse):
    """Closes its body however the stream ends: a download cut while it waits on a slow client
    records its outcome there and then, not whenever the abandoned generator is collected."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


def is_text(content_type: str | None) -> bool:
    """JSON, XML or text/*: an answer to read, not a download's bytes to pass on."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media.startswith("text/") or media in ("application/json", "application/xml") or media.endswith(("+json", "+xml"))


def passthrough(answer: upstream_http.Answer, extra_headers: dict[str, str] | None = None) -> Response:
    """The upstream's status, body and content type, unchanged, with the headers clients rely on.

    Except what would mislead a client: an upstream 401/402 (or a 403 refusing the account) is about
    the relay's account, not the caller's key, and a redirect would point the client at the upstream.
    """
    if answer_class(answer.status, answer.body) in ("unauthorized", "payment_required"):
        return error_response(
            RelayError(
                503,
                f"The upstream account serving this request was refused (HTTP {answer.status}): its credential, billing or"
                " standing needs an operator. Your relay key is fine.",
                code="upstream_account_unauthorized",
                headers=_DO_NOT_RETRY,
            )
        )
    if is_redirect(answer.status):
        return error_response(
            RelayError(
                502,
                f"The upstream answered with a redirect (HTTP {answer.status}), which the relay does not follow.",
                code="upstream_redirect",
                # The request did reach an upstream: for new work, a retry could be a second render.
                headers=_DO_NOT_RETRY,
            )
        )
    headers = upstream_http.response_headers(answer.headers)
    if answer.status == 429 and upstream_error(answer.body)[0] == "insufficient_quota":
        # Quota exhaustion does not pass with a retry; tell SDKs not to burn attempts on it.
        headers["x-should-retry"] = "false"
    headers.update(extra_headers or {})
    return Response(answer.body, status_code=answer.status, headers=headers)
