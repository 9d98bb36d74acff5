"""Azure OpenAI's v1 API: the OpenAI contract byte for byte, authenticated with an `api-key` header.

Every Azure resource has a base of its own (https://RESOURCE.openai.azure.com/openai/v1), so
there is no default. Its 429s say how long to wait in `retry-after-ms`, the finer of its two hints.
"""

from __future__ import annotations

from typing import Final

from . import AccountType

AZURE_OPENAI: Final = AccountType(
    "azure-openai",
    auth_header=b"api-key",
    cooldown_hints=("retry_after_ms", "retry_after", "x_ratelimit_reset_requests"),
)
