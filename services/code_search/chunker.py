"""A file cut into the pieces that are searched and cited.

Code: one chunk per symbol (a class keeps its own lines and the first line of each member; the
members are chunks of their own), long symbols continue in further chunks, and the code between
symbols (imports, module constants, scripts) is cut into windows. Markdown: one chunk per section.
Other text: windows of lines that end at blank lines where possible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.code_search.symbols import Symbol

MAX_SYMBOL_LINES = 150
MAX_WINDOW_LINES = 50
MIN_WINDOW_LINES = 20
MAX_LINE_CHARS = 400
MAX_CHUNK_CHARS = 16_000

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(slots=True)
class Chunk:
    kind: str  # a symbol kind, or "code" (between symbols), "section" (Markdown), "text"
    start: int  # first line (1-based) of the chunk's text
    end: int  # last line
    line: int  # where a citation points: the definition line of a symbol, else ``start``
    text: str
    symbol: str = ""  # qualified name (or a Markdown heading)
    name: str = ""
    is_def: bool = False  # the head chunk of a symbol: what symbol-name ranking looks at


def _join(lines: list[str], numbers: list[int]) -> str:
    if numbers and numbers[-1] - numbers[0] == len(numbers) - 1:  # contiguous: one slice
        text = "\n".join(lines[numbers[0] - 1 : numbers[-1]])
        if len(text) <= MAX_CHUNK_CHARS and max(map(len, lines[numbers[0] - 1 : numbers[-1]])) <= MAX_LINE_CHARS:
            return text
    out = []
    size = 0
    for number in numbers:
        line = lines[number - 1]
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS]
        size += len(line) + 1
        if size > MAX_CHUNK_CHARS:
            break
        out.append(line)
    return "\n".join(out)


def _windows(lines: list[str], first: int, last: int, max_lines: int = MAX_WINDOW_LINES) -> list[tuple[int, int]]:
    """Split lines first..last (1-based, inclusive) into windows, preferring to end at a blank line."""
    windows = []
    start = first
    while start <= last:
        end = min(last, start + max_lines - 1)
        if end < last:
            for candidate in range(end, start + MIN_WINDOW_LINES - 1, -1):
                if not lines[candidate - 1].strip():
                    end = candidate
                    break
        windows.append((start, end))
        start = end + 1
    return windows


def _meaningful(lines: list[str], first: int, last: int) -> bool:
    return sum(len(lines[i - 1].strip()) for i in range(first, last + 1)) >= 3


def _symbol_chunks(lines: list[str], symbols: list[Symbol]) -> list[Chunk]:
    children: dict[int, list[Symbol]] = {}
    for symbol in symbols:
        if symbol.parent >= 0:
            children.setdefault(symbol.parent, []).append(symbol)
    chunks: list[Chunk] = []
    last_line = len(lines)
    for index, symbol in enumerate(symbols):
        first, end = max(1, symbol.start_line), min(symbol.end_line, last_line)
        numbers: list[int] = []
        cursor = first
        # A member stays as its definition line; its body is the member's own chunk.
        for child in children.get(index, ()):
            child_first = max(child.start_line, cursor)
            numbers.extend(range(cursor, min(child_first, end + 1)))
            if child.line >= cursor and child.line <= end:
                numbers.append(child.line)
            cursor = max(cursor, child.end_line + 1)
        numbers.extend(range(cursor, end + 1))
        if not numbers:
            continue
        for part in range(0, len(numbers), MAX_SYMBOL_LINES):
            piece = numbers[part : part + MAX_SYMBOL_LINES]
            head = part == 0
            chunks.append(
                Chunk(
                    kind=symbol.kind,
                    start=piece[0],
                    end=symbol.end_line if head and len(numbers) <= MAX_SYMBOL_LINES else piece[-1],
                    line=symbol.line if head else piece[0],
                    text=_join(lines, piece),
                    symbol=symbol.qualified,
                    name=symbol.name,
                    is_def=head,
                )
            )
    return chunks


def _gap_chunks(lines: list[str], symbols: list[Symbol], kind: str) -> list[Chunk]:
    covered = sorted((s.start_line, s.end_line) for s in symbols if s.parent < 0)
    chunks = []
    cursor = 1
    gaps = []
    for first, last in covered:
        if first > cursor:
            gaps.append((cursor, first - 1))
        cursor = max(cursor, last + 1)
    if cursor <= len(lines):
        gaps.append((cursor, len(lines)))
    for first, last in gaps:
        for start, end in _windows(lines, first, last):
            if _meaningful(lines, start, end):
                numbers = list(range(start, end + 1))
                chunks.append(Chunk(kind=kind, start=start, end=end, line=start, text=_join(lines, numbers)))
    return chunks


def _markdown_chunks(lines: list[str]) -> list[Chunk]:
    sections: list[tuple[int, str]] = [(1, "")]
    fenced = False
    for number, line in enumerate(lines, start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            sections.append((number, match.group(2).strip()))
    chunks = []
    for position, (first, title) in enumerate(sections):
        last = sections[position + 1][0] - 1 if position + 1 < len(sections) else len(lines)
        if last < first:
            continue
        for start, end in _windows(lines, first, last):
            if _meaningful(lines, start, end):
                numbers = list(range(start, end + 1))
                chunks.append(
                    Chunk(kind="section", start=start, end=end, line=start, text=_join(lines, numbers), symbol=title)
                )
    return chunks


def chunk_file(text: str, language: str | None, symbols: list[Symbol]) -> list[Chunk]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return []
    if language == "markdown":
        return _markdown_chunks(lines)
    if symbols:
        return _symbol_chunks(lines, symbols) + _gap_chunks(lines, symbols, "code")
    return _gap_chunks(lines, [], "text" if language is None or language not in _CODE else "code")


# Languages whose files are code even without a grammar here (their windows are "code", not "text").
_CODE = frozenset(
    {
        "python", "javascript", "typescript", "tsx", "go", "java", "c", "cpp", "rust", "ruby", "shell", "sql",
        "kotlin", "swift", "php", "csharp", "scala", "lua", "perl", "r", "dart", "elixir", "erlang", "haskell",
        "ocaml", "clojure", "vue", "svelte", "css", "html", "terraform", "make", "cmake", "dockerfile", "groovy",
        "protobuf", "graphql", "powershell", "starlark", "gradle",
    }
)
