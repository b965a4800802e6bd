"""The prompt of a turn: a system prompt for a phone-sized code assistant, the conversation so far
(trimmed to a token budget), and the search hits as numbered sources with `repo/path:line` headers.

Providers differ only in how they send it (OpenAI puts the system prompt first among the messages,
Anthropic takes it apart), so the prompt is built once per turn, provider-neutral.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from libs.common.events import HistoryItem, Hit, SearchCompleted
from libs.common.settings import AISettings
from services.ai_engine.formatting import ELLIPSIS, FENCE, trim_code

# Tokenizers differ per vendor and cannot be downloaded here; code averages about 3 characters a
# token with the common BPE vocabularies, prose about 4. Over-counting keeps prompts inside budgets.
CHARS_PER_TOKEN = 3

SOURCE_LINES = 60
SOURCE_CHARS = 3000
# A context-too-long error is retried once with this much less: fewer lines per source, a quarter of
# the sources budget, no history.
TRIMMED_SOURCE_LINES = 20
TRIMMED_SOURCES_SHARE = 4
MIN_SOURCE_LINES = 3

SYSTEM_PROMPT = """\
You are repotalk, a code assistant. Developers ask about their team's codebase over WhatsApp and \
read your answer on a phone.

Answer from the numbered sources (code retrieved from the team's repositories) and the conversation so far.
- Cite each place you rely on as repo/path:line, written exactly as in the source headers \
(for example `{example}`). Never cite a file or line that is not in the sources.
- If the sources do not answer the question, say so plainly in one sentence, then point to the closest \
source if one helps. Never guess at code you were not shown.
- Be brief: the answer first in one or two sentences, then at most one short code excerpt \
(under 15 lines) and a few bullet points if needed.
- Format for WhatsApp: *bold*, _italic_, ```code blocks```. No headings, no tables, no links.
- Keep the whole answer under {max_chars} characters."""

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    system: str
    messages: tuple[Message, ...]  # alternating, starting and ending with the user
    trimmed: bool = False  # built smaller after a context-too-long error

    def as_openai(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}] + [
            {"role": m.role, "content": m.content} for m in self.messages
        ]

    def as_anthropic(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.system) + sum(estimate_tokens(m.content) for m in self.messages)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _cut(text: str, max_tokens: int) -> str:
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + ELLIPSIS


def trim_history(history: Sequence[HistoryItem], max_tokens: int) -> list[Message]:
    """The most recent history that fits ``max_tokens``, oldest first, alternating and starting with the
    user (Anthropic refuses anything else). Older items are dropped whole; the last exchange (what a
    follow-up question refers to) is shortened instead, its question keeping up to a third of the room."""
    items = [(item.role, item.text.strip()) for item in history if item.text.strip()]
    kept: list[Message] = []
    used = 0
    for position, (role, text) in enumerate(reversed(items)):
        room = max_tokens - used
        if estimate_tokens(text) > room:
            if position >= 2 or room < 50:
                break
            if position == 0 and len(items) > 1:
                room -= min(estimate_tokens(items[-2][1]), room // 3)
            text = _cut(text, room)
        kept.append(Message(role, text))
        used += estimate_tokens(text)
    kept.reverse()
    merged: list[Message] = []
    for message in kept:
        if merged and merged[-1].role == message.role:
            merged[-1] = Message(message.role, f"{merged[-1].content}\n\n{message.content}")
        else:
            merged.append(message)
    while merged and merged[0].role != "user":
        merged.pop(0)
    return merged


def source_header(index: int, hit: Hit) -> str:
    lines = f"{hit.line}-{hit.end_line}" if hit.end_line > hit.line else f"{hit.line}"
    header = f"[{index}] {hit.repo}/{hit.path}:{lines}"
    details = [part for part in (hit.kind, hit.symbol, hit.language) if part]
    if details:
        header += " (" + ", ".join(details) + ")"
    return header


def _source(index: int, hit: Hit, max_lines: int) -> str:
    header = source_header(index, hit)
    if max_lines <= 0 or not hit.snippet.strip():
        return header
    code = trim_code(hit.snippet, max_lines, max_width=400)[:SOURCE_CHARS]
    return f"{header}\n{FENCE}\n{code}\n{FENCE}"


def format_sources(hits: Sequence[Hit], max_tokens: int, max_lines: int = SOURCE_LINES) -> str:
    """Every hit in rank order, numbered; code is shortened (then left out) as the budget runs out,
    so the best sources keep their code and the others are still known by their location."""
    blocks: list[str] = []
    used = 0
    for index, hit in enumerate(hits, start=1):
        lines = max_lines
        block = _source(index, hit, lines)
        while estimate_tokens(block) > max_tokens - used and lines > MIN_SOURCE_LINES:
            lines = max(MIN_SOURCE_LINES, lines // 2)
            block = _source(index, hit, lines)
        if estimate_tokens(block) > max_tokens - used:
            block = _source(index, hit, 0)
            if estimate_tokens(block) > max_tokens - used:
                break
        blocks.append(block)
        used += estimate_tokens(block) + 1
    return "\n\n".join(blocks)


def build_prompt(completed: SearchCompleted, ai: AISettings, trimmed: bool = False) -> Prompt:
    """System prompt, the conversation so far, then the sources and the question."""
    hits = completed.hits
    example = hits[0].location if hits else "repo/path/to/file.py:42"
    system = SYSTEM_PROMPT.format(example=example, max_chars=ai.max_answer_chars)
    if trimmed:
        history: list[Message] = []
        sources = format_sources(hits, ai.sources_tokens // TRIMMED_SOURCES_SHARE, TRIMMED_SOURCE_LINES)
    else:
        history = trim_history(completed.request.history, ai.history_tokens)
        sources = format_sources(hits, ai.sources_tokens)
    question = f"Sources:\n\n{sources or '(no sources were found)'}\n\nQuestion: {completed.request.query}"
    if history and history[-1].role == "user":
        # A previous message left unanswered: it joins this one, the roles must alternate.
        question = f"{history.pop().content}\n\n{question}"
    return Prompt(system=system, messages=(*history, Message("user", question)), trimmed=trimmed)
