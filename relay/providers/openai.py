"""OpenAI's own account types: the contract the relay's clients speak, passed through byte for byte."""

from __future__ import annotations

from typing import Final

from . import AccountType

# OpenAI's SDKs and API give a 429's rest in the body, in milliseconds and seconds, and as the
# request window's reset.
_HINTS: Final = ("resets_in_seconds", "retry_after_ms", "retry_after", "x_ratelimit_reset_requests")

# An API key (the recommended path).
OPENAI_RESPONSES: Final = AccountType("openai-responses", default_base_api="https://api.openai.com/v1", cooldown_hints=_HINTS)
# A ChatGPT access token against ChatGPT's private backend: may breach that provider's terms
# (relay.accounts.CONSUMER_BACKEND_WARNING says so wherever such an account is added).
CHATGPT: Final = AccountType("openai", default_base_api="https://chatgpt.com/backend-api", cooldown_hints=_HINTS)
