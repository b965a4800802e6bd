"""What every model provider offers the chain: one call that returns a completion or raises a
classified ``ProviderError``. The chain decides from the class what happens next (retry, trim, fall back).
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum

from services.ai_engine.prompting import Prompt

# Provider names (AI_PROVIDERS); "local" is any OpenAI-compatible server (Ollama, vLLM, llama.cpp).
OPENAI = "openai"
ANTHROPIC = "anthropic"
LOCAL = "local"


class Failure(StrEnum):
    TRANSIENT = "transient"  # timeout, connection error, 408, 409, 429, 5xx: retried with backoff
    CONTEXT = "context"  # the prompt is too long for the model: retried once, trimmed
    BAD_RESPONSE = "bad_response"  # malformed JSON, no content, a refusal: next provider
    REJECTED = "rejected"  # any other 4xx (key, model name, parameters): next provider


class ProviderError(Exception):
    """A call gave no usable answer; ``reason`` is short and safe to record (no prompt, no content)."""

    def __init__(self, reason: str, kind: Failure, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True)
class Completion:
    text: str  # as the model wrote it (Markdown-ish); the composer converts and checks it
    model: str  # as the provider reports it (a dated snapshot, for instance)
    input_tokens: int
    output_tokens: int


class Provider(ABC):
    """One configured model behind one API."""

    name: str  # openai, anthropic, local
    model: str
    base_url: str
    timeout: float

    @property
    def key(self) -> str:
        """Identity for the cooldown: the same provider name may point somewhere else after a change."""
        return f"{self.name}|{self.base_url}|{self.model}"

    @abstractmethod
    def complete(self, prompt: Prompt, timeout: float) -> Completion:
        """One call without the SDK's own retries. Raises ProviderError."""

    @abstractmethod
    def cost_usd(self, completion: Completion) -> float:
        """What the call cost, from the price table."""


# How vendors and local servers word "your prompt is longer than the model's context":
# OpenAI (code context_length_exceeded), Anthropic ("prompt is too long"), vLLM ("maximum context
# length"), llama.cpp ("exceeds the available context size"), Ollama ("context window").
_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_CONTEXT_WORDS = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|prompt is too long|too many (input )?tokens|"
    r"reduce the length of the messages|input is too long",
    re.I,
)


def is_context_too_long(status: int, message: str, code: str | None) -> bool:
    if status == 413:
        return True
    if status not in (400, 422):
        return False
    return (code or "") in _CONTEXT_CODES or bool(_CONTEXT_WORDS.search(message or ""))


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The server's requested wait: ``retry-after-ms`` (OpenAI), then ``retry-after`` in seconds or as
    an HTTP date. None when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def status_failure(status: int, headers: Mapping[str, str], message: str, code: str | None) -> ProviderError:
    """The ProviderError for an HTTP error status."""
    if is_context_too_long(status, message, code):
        return ProviderError("context too long", Failure.CONTEXT)
    if status in (408, 409, 429) or status >= 500:
        return ProviderError(f"HTTP {status}", Failure.TRANSIENT, retry_after_seconds(headers))
    return ProviderError(f"HTTP {status}", Failure.REJECTED)
