"""Splitting a reply into WhatsApp-sized messages (Twilio refuses bodies over 1600 characters: 21617).

Boundaries, in order of preference: paragraph, line, word; a word is cut only when it alone is
longer than a message. Fenced code blocks (```) stay whole when they fit in one message;
otherwise they are split by lines, each part closed and reopened with the same fence so every
message renders on its own. When a reply needs several messages, each starts with a "(i/n)"
line, counted within the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WHATSAPP_LIMIT = 1600
MIN_LIMIT = 16
FENCE = "```"


def is_fence_opener(line: str) -> bool:
    stripped = line.strip()
    # An info string may not contain backticks: "```x```" on one line is inline code, not a fence.
    return stripped.startswith(FENCE) and "`" not in stripped[len(FENCE):]


def is_fence_closer(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(FENCE) and set(stripped) == {"`"}


@dataclass
class _Block:
    kind: Literal["text", "code"]
    lines: list[str]
    sep: str  # what separated it from the previous block: "", "\n" or "\n\n"
    closed: bool = True

    def render(self) -> str:
        body = "\n".join(self.lines)
        # A code block the author left open is closed so a split part never leaves one dangling.
        return body if self.closed else body + "\n" + FENCE


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    paragraph: list[str] = []
    code: list[str] | None = None
    gap = 0  # blank lines since the last block ended

    def separator() -> str:
        if not blocks and not paragraph:
            return ""
        return "\n\n" if gap else "\n"

    def flush_paragraph() -> None:
        nonlocal paragraph
        if paragraph:
            blocks.append(_Block("text", paragraph, paragraph_sep))
            paragraph = []

    paragraph_sep = ""
    code_sep = ""
    for line in text.split("\n"):
        if code is not None:
            code.append(line)
            if is_fence_closer(line):
                blocks.append(_Block("code", code, code_sep))
                code = None
                gap = 0
            continue
        if is_fence_opener(line):
            code_sep = separator()
            flush_paragraph()
            code = [line]
            gap = 0
        elif not line.strip():
            flush_paragraph()
            gap += 1
        else:
            if not paragraph:
                paragraph_sep = separator()
                gap = 0
            paragraph.append(line)
    flush_paragraph()
    if code is not None:
        blocks.append(_Block("code", code, code_sep, closed=False))
    return blocks


def _split_words(line: str, limit: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for word in line.split():
        while len(word) > limit:  # the one case where a word is cut: it cannot fit anywhere
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:limit])
            word = word[limit:]
        if not word:
            continue
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= limit:
            current += " " + word
        else:
            pieces.append(current)
            current = word
    pieces.append(current)
    return pieces


def _split_lines(lines: list[str], limit: int) -> list[str]:
    pieces: list[str] = []
    current: str | None = None
    for line in lines:
        if len(line) > limit:
            if current is not None:
                pieces.append(current)
            *done, current = _split_words(line, limit)
            pieces.extend(done)
        elif current is None:
            current = line
        elif len(current) + 1 + len(line) <= limit:
            current += "\n" + line
        else:
            pieces.append(current)
            current = line
    if current is not None:
        pieces.append(current)
    return pieces


def _split_code(block: _Block, limit: int) -> list[str]:
    opener = block.lines[0]
    closer = block.lines[-1] if block.closed else FENCE
    body = block.lines[1:-1] if block.closed else block.lines[1:]
    capacity = limit - len(opener) - len(closer) - 2
    if capacity < 1 or not body:
        # An opener as long as a whole message: nothing sensible fits inside it; split as text.
        return _split_lines([*block.lines, *([] if block.closed else [FENCE])], limit)
    return [f"{opener}\n{part}\n{closer}" for part in _split_lines(body, capacity)]


def _split(text: str, limit: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for block in _blocks(text):
        rendered = block.render()
        if current and len(current) + len(block.sep) + len(rendered) <= limit:
            current += block.sep + rendered
            continue
        if len(rendered) <= limit:
            if current:
                pieces.append(current)
            current = rendered
            continue
        parts = _split_code(block, limit) if block.kind == "code" else _split_lines(block.lines, limit)
        if current:
            pieces.append(current)
        *done, current = parts
        pieces.extend(done)
    if current:
        pieces.append(current)
    return [piece for piece in pieces if piece.strip()]


def _label(index: int, count: int) -> str:
    return f"({index}/{count})\n"


def split_message(text: str, limit: int = WHATSAPP_LIMIT) -> list[str]:
    """``text`` as messages of at most ``limit`` characters each (labels included); [] when blank."""
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT} characters")
    text = text.rstrip().lstrip("\n")
    if not text.strip():
        return []
    if len(text) <= limit:
        return [text]
    digits = 1
    while True:
        # Reserve room for the widest label at this many digits: "(99/99)\n".
        pieces = _split(text, limit - len(_label(10**digits - 1, 10**digits - 1)))
        if len(str(len(pieces))) <= digits:
            break
        digits += 1
    if len(pieces) == 1:
        return pieces
    return [_label(i, len(pieces)) + piece for i, piece in enumerate(pieces, start=1)]


def truncate_words(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: max(1, limit - 1)]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"
