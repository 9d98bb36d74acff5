"""The one way the relay's own errors leave: the OpenAI error envelope."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response

# OpenAI's `type` for each status the relay itself answers with.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


class RelayError(Exception):
    """An error the relay answers itself (as opposed to an upstream answer it passes on)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


class WorkMayExist(RelayError):
    """A failure after an upstream may have started the work: a repeat must not start it again."""


class ClientGone(Exception):
    """The client went away before the relay could answer: nobody is left to tell (logged as 499)."""


class AnswerCutShort(Exception):
    """The upstream broke off a body the relay had begun to stream: the client's connection is closed
    mid-answer, which is how HTTP says "incomplete" once the status line has gone out."""


def shown(value: object, limit: int = 64) -> str:
    """A client-sent value as an error message may quote it: cut short, so a megabyte of input is
    not echoed back (nor written to logs) whole."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def envelope(message: str, *, status: int, code: str | None, param: str | None = None) -> bytes:
    body = {
        "error": {
            "message": message,
            "type": _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }
    return json.dumps(body).encode()


def error_response(error: RelayError) -> Response:
    return Response(
        envelope(error.message, status=error.status, code=error.code, param=error.param),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )
