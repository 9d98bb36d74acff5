"""Azure OpenAI: the OpenAI Videos contract under ``/openai/v1``, authenticated by the ``api-key`` header only.

An account's base_api is ``http://HOST:PORT/openai/v1``. Jobs are Azure's own (not the ``/v1``
mount's), scoped per api-key, which the request log records as ``token``. A request without an
``api-key`` gets Azure's 401, even with an ``Authorization`` header (Entra ID tokens are not
emulated). Azure words its own refusals (401, 429, unknown paths); everything the contract itself
answers (validation, 404 for a video) keeps OpenAI's envelope, as Azure's v1 API passes them on.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from . import openai_contract
from .errors import ProviderError
from .openai_contract import ContractMount
from .provider import Provider, header
from .state import SandboxState

PREFIX: Final = "/openai/v1"
ACCESS_DENIED: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active "
    "subscription and use a correct regional API endpoint for your resource."
)
# Azure reports an exhausted daily quota as a rate limit that lifts in a day.
QUOTA_RESETS_IN_SECONDS: Final = 86400


def azure_credential(scope: Scope) -> str | None:
    key = (header(scope, "api-key") or "").strip()
    return key or None


def access_denied() -> ProviderError:
    return ProviderError(401, {"error": {"code": "401", "message": ACCESS_DENIED}})


def request_ids() -> dict[str, str]:
    request_id = str(uuid.uuid4())
    return {"x-request-id": request_id, "apim-request-id": request_id}


def route_error(request: Request, exc: HTTPException) -> Response:
    message = "Resource not found" if exc.status_code == 404 else exc.detail
    return JSONResponse({"error": {"code": str(exc.status_code), "message": message}}, status_code=exc.status_code, headers=exc.headers)


def throttled(resets_in_seconds: float) -> dict[str, Any]:
    seconds = max(1, math.ceil(resets_in_seconds))
    message = (
        "Requests to the Videos_Create Operation under Azure OpenAI API version v1 have exceeded call rate limit of your "
        f"current AIServices S0 pricing tier. Please retry after {seconds} seconds. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )
    headers = {
        "retry-after": str(seconds),
        "retry-after-ms": str(round(resets_in_seconds * 1000)),
        "x-ratelimit-remaining-requests": "0",
    }
    return {"status": 429, "body": {"error": {"code": "429", "message": message}}, "headers": headers}


def preset_reply(name: str, resets_in_seconds: float) -> dict[str, Any]:
    """Azure's wording where it has its own; OpenAI's (passed through by Azure) for the rest."""
    match name:
        case "rate_limited":
            return throttled(resets_in_seconds)
        case "insufficient_quota":
            return throttled(QUOTA_RESETS_IN_SECONDS)
        case "unauthorized":
            return {"status": 401, "body": access_denied().body}
    return openai_contract.preset_reply(name, resets_in_seconds)


AZURE: Final = Provider("azure", azure_credential, request_ids)


def azure_mount(state: SandboxState) -> ContractMount:
    return ContractMount(AZURE, state.azure, access_denied, route_error)
