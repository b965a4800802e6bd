"""OpenAI, and any OpenAI-compatible server (Ollama, vLLM, llama.cpp) through ``base_url``, via the
official SDK. The SDK's own retries are off: the chain retries, so it can move on to another provider.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import openai

from services.ai_engine import pricing
from services.ai_engine.prompting import Prompt
from services.ai_engine.provider import OPENAI, Completion, Failure, Provider, ProviderError, status_failure

# The SDK insists on a key; local servers mostly ignore it.
LOCAL_PLACEHOLDER_KEY = "local"


@lru_cache(maxsize=16)
def _client(api_key: str, base_url: str, timeout: float) -> openai.OpenAI:
    # One client per configuration keeps its connection pool across turns.
    return openai.OpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=0)


def failure(exc: Exception) -> ProviderError:
    """The SDK's exception, classified."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("timeout", Failure.TRANSIENT)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("connection error", Failure.TRANSIENT)
    if isinstance(exc, openai.APIStatusError):
        message = exc.message if isinstance(exc.message, str) else ""
        return status_failure(exc.status_code, exc.response.headers, message, exc.code)
    if isinstance(exc, ValueError):  # the SDK lets json.JSONDecodeError through
        return ProviderError("malformed response", Failure.BAD_RESPONSE)
    return ProviderError(type(exc).__name__, Failure.BAD_RESPONSE)


def _content(response: Any) -> str:
    choices = getattr(response, "choices", None)
    if not choices:
        raise ProviderError("malformed response", Failure.BAD_RESPONSE)
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        refusal = getattr(message, "refusal", None)
        raise ProviderError("refused" if refusal else "empty content", Failure.BAD_RESPONSE)
    if not content.strip():
        raise ProviderError("empty content", Failure.BAD_RESPONSE)
    return content


class OpenAIProvider(Provider):
    def __init__(
        self,
        *,
        name: str,
        api_key: str,
        model: str,
        base_url: str = "",
        timeout: float = 30.0,
        max_output_tokens: int = 1024,
        prices: str = "",
    ) -> None:
        self.name = name
        self.api_key = api_key or LOCAL_PLACEHOLDER_KEY
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.max_output_tokens = max_output_tokens
        self.prices = prices

    def complete(self, prompt: Prompt, timeout: float) -> Completion:
        client = _client(self.api_key, self.base_url, self.timeout)
        # OpenAI's reasoning models refuse max_tokens; compatible servers have long known only max_tokens.
        native = self.name == OPENAI and not self.base_url
        try:
            response = client.chat.completions.create(
                model=self.model,
                messages=prompt.as_openai(),  # type: ignore[arg-type]
                max_completion_tokens=self.max_output_tokens if native else openai.omit,
                max_tokens=openai.omit if native else self.max_output_tokens,
                timeout=timeout,
            )
        except Exception as exc:
            raise failure(exc) from exc
        text = _content(response)
        usage = getattr(response, "usage", None)
        return Completion(
            text=text,
            model=str(getattr(response, "model", None) or self.model),
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    def cost_usd(self, completion: Completion) -> float:
        return pricing.cost_usd(
            completion.model, completion.input_tokens, completion.output_tokens, self.prices,
            vendor_prices=self.name == OPENAI,
        )
