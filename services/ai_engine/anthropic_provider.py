"""Anthropic's Messages API via the official SDK, its own retries off (the chain retries)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import anthropic

from services.ai_engine import pricing
from services.ai_engine.prompting import Prompt
from services.ai_engine.provider import ANTHROPIC, Completion, Failure, Provider, ProviderError, status_failure


@lru_cache(maxsize=8)
def _client(api_key: str, base_url: str, timeout: float) -> anthropic.Anthropic:
    # One client per configuration keeps its connection pool across turns.
    return anthropic.Anthropic(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=0)


def failure(exc: Exception) -> ProviderError:
    """The SDK's exception, classified."""
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError("timeout", Failure.TRANSIENT)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError("connection error", Failure.TRANSIENT)
    if isinstance(exc, anthropic.APIStatusError):
        message = exc.api_message or (exc.message if isinstance(exc.message, str) else "")
        code = exc.error_code if isinstance(exc.error_code, str) else None
        return status_failure(exc.status_code, exc.response.headers, message, code)
    if isinstance(exc, ValueError):  # json.JSONDecodeError, as with OpenAI's SDK
        return ProviderError("malformed response", Failure.BAD_RESPONSE)
    return ProviderError(type(exc).__name__, Failure.BAD_RESPONSE)


def _text(response: Any) -> str:
    blocks = getattr(response, "content", None)
    if blocks is None:
        raise ProviderError("malformed response", Failure.BAD_RESPONSE)
    text = "".join(getattr(block, "text", "") for block in blocks if getattr(block, "type", None) == "text")
    if not text.strip():
        refused = getattr(response, "stop_reason", None) == "refusal"
        raise ProviderError("refused" if refused else "empty content", Failure.BAD_RESPONSE)
    return text


class AnthropicProvider(Provider):
    name = ANTHROPIC

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str = "",
        timeout: float = 30.0,
        max_output_tokens: int = 1024,
        prices: str = "",
    ) -> None:
        self.api_key = api_key
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.max_output_tokens = max_output_tokens
        self.prices = prices

    def complete(self, prompt: Prompt, timeout: float) -> Completion:
        client = _client(self.api_key, self.base_url, self.timeout)
        try:
            response = client.messages.create(
                model=self.model,
                system=prompt.system,
                messages=prompt.as_anthropic(),  # type: ignore[arg-type]
                max_tokens=self.max_output_tokens,
                timeout=timeout,
            )
        except Exception as exc:
            raise failure(exc) from exc
        text = _text(response)
        usage = getattr(response, "usage", None)
        return Completion(
            text=text,
            model=str(getattr(response, "model", None) or self.model),
            input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
        )

    def cost_usd(self, completion: Completion) -> float:
        return pricing.cost_usd(completion.model, completion.input_tokens, completion.output_tokens, self.prices)
