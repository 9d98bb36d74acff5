"""Errors as each provider words them: the OpenAI envelope, and a ready-made body for the others."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

RouteError = Callable[[Request, HTTPException], Response]


class ApiError(Exception):
    """An error answered with the OpenAI error envelope (the contract's mounts and the control API)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type


class ProviderError(Exception):
    """An error answered with a body already in its provider's shape (Azure's, Google's)."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def error_envelope(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


async def api_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):
        raise exc
    body = error_envelope(exc.message, exc.error_type, exc.param, exc.code)
    return JSONResponse(body, status_code=exc.status)


async def provider_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ProviderError):
        raise exc
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


def openai_route_error(request: Request, exc: HTTPException) -> Response:
    label = "Invalid URL" if exc.status_code == 404 else exc.detail
    message = f"{label} ({request.method} {request.url.path})"
    body = error_envelope(message, "invalid_request_error")
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def exception_handlers(route_error: RouteError = openai_route_error) -> dict[type[Exception], ExceptionHandler]:
    """Handlers for a provider's app; ``route_error`` answers unknown paths and methods."""

    async def http_error_handler(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):
            raise exc
        return route_error(request, exc)

    return {ApiError: api_error_handler, ProviderError: provider_error_handler, HTTPException: http_error_handler}
