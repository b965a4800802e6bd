"""OpenAI (and OpenAI-compatible servers through ``base_url``) via the official SDK.

Retries of 408/409/429/5xx happen inside the SDK (``max_retries``, exponential backoff); every
failure that is left surfaces as ``ProviderError`` so the composer can fall back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import openai

from libs.common.events import Hit, SearchCompleted
from libs.common.settings import AISettings
from services.ai_engine.formatting import FENCE, trim_code

NAME = "openai"

# USD per million (input, output) tokens. A model matches its longest prefix here (dated snapshots
# such as gpt-4o-mini-2024-07-18 share their family's price); unknown models cost 0.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}

SOURCE_LINES = 60
SOURCE_CHARS = 3000

SYSTEM_PROMPT = """\
You are repotalk, a code assistant. Developers ask about their team's codebase over WhatsApp and \
read your answer on a phone.

Answer from the numbered sources (code retrieved from the team's repositories) and the conversation so far.
- Cite each place you rely on as repo/path:line, written exactly as in the source headers \
(for example `{example}`). Never cite a file or line that is not in the sources.
- If the sources do not answer the question, say so plainly in one sentence, then point to the closest \
source if one helps.
- Be brief: the answer first in one or two sentences, then at most one short code excerpt \
(under 15 lines) and a few bullet points if needed.
- Format for WhatsApp: *bold*, _italic_, ```code blocks```. No headings, no tables, no links.
- Keep the whole answer under {max_chars} characters."""


class ProviderError(Exception):
    """The provider gave no usable answer; ``reason`` is short and safe to record (no content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProviderAnswer:
    text: str  # as the model wrote it (Markdown-ish); the composer converts and checks it
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float


def price_for(model: str) -> tuple[float, float]:
    matches = [prefix for prefix in PRICES_PER_MILLION if model.startswith(prefix)]
    if not matches:
        return (0.0, 0.0)
    return PRICES_PER_MILLION[max(matches, key=len)]


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    input_price, output_price = price_for(model)
    return round((input_tokens * input_price + output_tokens * output_price) / 1_000_000, 8)


def source_header(index: int, hit: Hit) -> str:
    lines = f"{hit.line}-{hit.end_line}" if hit.end_line > hit.line else f"{hit.line}"
    header = f"[{index}] {hit.repo}/{hit.path}:{lines}"
    details = [part for part in (hit.kind, hit.symbol, hit.language) if part]
    if details:
        header += " (" + ", ".join(details) + ")"
    return header


def format_sources(hits: Sequence[Hit]) -> str:
    blocks = []
    for index, hit in enumerate(hits, start=1):
        code = trim_code(hit.snippet, SOURCE_LINES, max_width=400)[:SOURCE_CHARS]
        blocks.append(f"{source_header(index, hit)}\n{FENCE}\n{code}\n{FENCE}")
    return "\n\n".join(blocks)


def build_messages(completed: SearchCompleted, max_chars: int) -> list[dict[str, str]]:
    """System prompt, the conversation so far, then the sources and the question."""
    example = completed.hits[0].location if completed.hits else "repo/path/to/file.py:42"
    messages = [{"role": "system", "content": SYSTEM_PROMPT.format(example=example, max_chars=max_chars)}]
    for item in completed.request.history:
        messages.append({"role": item.role, "content": item.text})
    sources = format_sources(completed.hits) if completed.hits else "(no sources were found)"
    messages.append({
        "role": "user",
        "content": f"Sources:\n\n{sources}\n\nQuestion: {completed.request.query}",
    })
    return messages


@lru_cache(maxsize=8)
def _client(api_key: str, base_url: str, timeout: float, max_retries: int) -> openai.OpenAI:
    # One client per configuration keeps its connection pool across messages.
    return openai.OpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout, max_retries=max_retries)


def client_for(ai: AISettings) -> openai.OpenAI:
    return _client(ai.openai_api_key, ai.openai_base_url, ai.timeout, ai.openai_max_retries)


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, ValueError):  # the SDK lets json.JSONDecodeError through
        return "malformed response"
    return type(exc).__name__


def _content(response: Any) -> str:
    choices = getattr(response, "choices", None)
    if not choices:
        raise ProviderError("malformed response")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        refusal = getattr(message, "refusal", None)
        raise ProviderError("refused" if refusal else "empty content")
    if not content.strip():
        raise ProviderError("empty content")
    return content


def ask(completed: SearchCompleted, ai: AISettings) -> ProviderAnswer:
    """One chat completion for the turn. Raises ProviderError on any failure."""
    started = time.perf_counter()
    try:
        response = client_for(ai).chat.completions.create(
            model=ai.openai_model, messages=build_messages(completed, ai.max_answer_chars),  # type: ignore[arg-type]
        )
    except Exception as exc:
        raise ProviderError(_failure_reason(exc)) from exc
    content = _content(response)
    usage = getattr(response, "usage", None)
    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    model = str(getattr(response, "model", None) or ai.openai_model)
    return ProviderAnswer(
        text=content,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd(model, input_tokens, output_tokens),
        latency_ms=(time.perf_counter() - started) * 1000,
    )
