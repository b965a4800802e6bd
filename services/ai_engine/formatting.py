"""WhatsApp formatting: *bold*, _italic_, ~strike~, ```monospace```, and nothing else renders.

Models write Markdown (headings, **bold**, tables, links); WhatsApp shows those as raw symbols, so
answers are rewritten before they are sent. Code blocks are left exactly as they are.
"""

from __future__ import annotations

import re
import textwrap

FENCE = "```"
BULLET = "•"
ELLIPSIS = "…"
# Three backticks inside code would end the block early; a zero-width space keeps them apart.
BROKEN_FENCE = "``\u200b`"

_FENCE_LINE = re.compile(r"^\s*```")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s*([*_-])(\s*\1){2,}\s*$")
_BULLET_LINE = re.compile(r"^(\s*)[*+-]\s+(.*)$")
_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"!?\[([^\]\n]+)\]\((\S+?)\)")
_BOLD_STARS = re.compile(r"\*\*(?!\s)(.+?)(?<!\s)\*\*")
_BOLD_UNDERSCORES = re.compile(r"(?<!\w)__(?!\s)(.+?)(?<!\s)__(?!\w)")
_STRIKE = re.compile(r"~~(?!\s)(.+?)(?<!\s)~~")
_PLACEHOLDER = "\x00{}\x00"


def mono(text: str) -> str:
    """Inline monospace."""
    return f"{FENCE}{text.replace(FENCE, BROKEN_FENCE)}{FENCE}"


def _inline(text: str) -> str:
    """Rewrite the inline Markdown of one line, leaving `code spans` untouched."""
    spans: list[str] = []

    def keep(match: re.Match[str]) -> str:
        spans.append(match.group(0))
        return _PLACEHOLDER.format(len(spans) - 1)

    text = _INLINE_CODE.sub(keep, text)
    text = _LINK.sub(lambda m: m.group(1) if m.group(1) == m.group(2) else f"{m.group(1)} ({m.group(2)})", text)
    # A single *x* stays: the model is asked for WhatsApp formatting, where it is bold.
    text = _BOLD_STARS.sub(r"*\1*", text)
    text = _BOLD_UNDERSCORES.sub(r"*\1*", text)
    text = _STRIKE.sub(r"~\1~", text)
    for index, span in enumerate(spans):
        text = text.replace(_PLACEHOLDER.format(index), span)
    return text


def _plain(text: str) -> str:
    """Inline text with emphasis markers removed (for headings and table headers set in bold)."""
    text = _inline(text)
    return text.replace("*", "").strip()


def _cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|"):
        row = row[:-1]
    return [cell.strip() for cell in row.split("|")]


def _table(rows: list[str]) -> list[str]:
    """A Markdown table as lines: the header in bold, each row a bullet of its cells."""
    out: list[str] = []
    body = rows
    if len(rows) >= 2 and _TABLE_SEPARATOR.match(rows[1]):
        header = [_plain(cell) for cell in _cells(rows[0]) if cell]
        if header:
            out.append("*" + " · ".join(header) + "*")
        body = rows[2:]
    for row in body:
        if _TABLE_SEPARATOR.match(row):
            continue
        cells = [_inline(cell) for cell in _cells(row) if cell]
        if cells:
            out.append(f"{BULLET} " + " — ".join(cells))
    return out


def to_whatsapp(markdown: str) -> str:
    """Markdown (as models write it) -> WhatsApp formatting; WhatsApp formatting passes unchanged."""
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    in_code = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if _FENCE_LINE.match(line):
            stripped = line.strip()
            if not in_code:
                # The language tag would show up as text in WhatsApp's block.
                rest = stripped[3:]
                if rest.endswith(FENCE) and len(rest) > 3:  # a one-line ```code```
                    out.append(line.rstrip())
                else:
                    out.append(FENCE)
                    in_code = True
            else:
                out.append(FENCE)
                in_code = False
            index += 1
            continue
        if in_code:
            out.append(line.rstrip())
            index += 1
            continue
        if _TABLE_LINE.match(line):
            rows = []
            while index < len(lines) and _TABLE_LINE.match(lines[index]):
                rows.append(lines[index])
                index += 1
            out.extend(_table(rows))
            continue
        index += 1
        if _RULE.match(line):
            continue
        heading = _HEADING.match(line)
        if heading:
            title = _plain(heading.group(1))
            if title:
                out.append(f"*{title}*")
            continue
        bullet = _BULLET_LINE.match(line)
        if bullet:
            out.append(f"{bullet.group(1)}{BULLET} {_inline(bullet.group(2)).rstrip()}")
            continue
        out.append(_inline(line).rstrip())
    if in_code:
        out.append(FENCE)
    return squeeze_blank_lines("\n".join(out)).strip()


def squeeze_blank_lines(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text)


def trim_code(snippet: str, max_lines: int, max_width: int = 100) -> str:
    """A phone-sized excerpt: dedented, blank edges removed, at most ``max_lines`` lines."""
    lines = snippet.split("\n")
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    end = len(lines)
    while end > start and not lines[end - 1].strip():
        end -= 1
    cut = end - start > max_lines
    # Only the lines shown are dedented (by their own common indent): a long snippet costs no more.
    lines = textwrap.dedent("\n".join(lines[start:min(end, start + max_lines)]).expandtabs(4)).split("\n")
    shown = [line.rstrip() if len(line) <= max_width else line[: max_width - 1].rstrip() + ELLIPSIS for line in lines]
    if cut:
        shown.append(ELLIPSIS)
    return "\n".join(shown).replace(FENCE, BROKEN_FENCE)


def code_block(code: str) -> str:
    return f"{FENCE}\n{code}\n{FENCE}"


def truncate(text: str, max_chars: int) -> str:
    """Cut at a line boundary so the text fits, closing an open code block and marking the cut."""
    if len(text) <= max_chars:
        return text
    suffix_room = len(f"\n{FENCE}\n{ELLIPSIS}")
    budget = max(0, max_chars - suffix_room)
    head = text[:budget]
    newline = head.rfind("\n")
    if newline > budget // 2:
        head = head[:newline]
    head = head.rstrip()
    open_fence = sum(1 for line in head.split("\n") if _FENCE_LINE.match(line) and line.strip() == FENCE) % 2 == 1
    if open_fence:
        head += f"\n{FENCE}"
    result = f"{head}\n{ELLIPSIS}"
    return result[:max_chars]
