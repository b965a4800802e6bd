"""A file cut into the pieces that are searched and cited.

Code: one chunk per symbol (a class keeps its own lines and the first line of each member; the
members are chunks of their own), long symbols continue in further chunks, and the code between
symbols (imports, module constants, scripts) is cut into windows. Markdown: one chunk per section.
Other text: windows of lines that end at blank lines where possible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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


class _Lines:
    """A file's lines, split once (``numbers`` are 1-based line numbers), and which of them some chunk
    holds whole (what the pipeline's completeness check needs, without splitting every chunk again)."""

    __slots__ = ("lines", "long", "whole")

    def __init__(self, lines: list[str], whole: bytearray) -> None:
        self.lines = lines
        self.whole = whole  # whole[number - 1]: 1 when a chunk has the line as it is (not cut)
        # Most files have no line to cut: one scan here spares a per-chunk check.
        self.long = bool(lines) and max(map(len, lines)) > MAX_LINE_CHARS

    def run(self, first: int, last: int) -> str:
        """Lines first..last (inclusive) as one text; cut line by line (``_cut``) when too long."""
        part = self.lines[first - 1 : last]
        text = "\n".join(part)
        if len(text) <= MAX_CHUNK_CHARS and not (self.long and max(map(len, part)) > MAX_LINE_CHARS):
            self.whole[first - 1 : last] = b"\x01" * len(part)
            return text
        return self._cut(range(first, last + 1))

    def join(self, numbers: list[int]) -> str:
        if numbers and numbers[-1] - numbers[0] == len(numbers) - 1:  # contiguous: one slice
            return self.run(numbers[0], numbers[-1])
        if not self.long:
            lines, whole = self.lines, self.whole
            text = "\n".join([lines[number - 1] for number in numbers])
            if len(text) <= MAX_CHUNK_CHARS:
                for number in numbers:
                    whole[number - 1] = 1
                return text
        return self._cut(numbers)

    def _cut(self, numbers: Iterable[int]) -> str:
        lines, whole = self.lines, self.whole
        out = []
        size = 0
        for number in numbers:
            line = lines[number - 1]
            cut = len(line) > MAX_LINE_CHARS
            if cut:
                line = line[:MAX_LINE_CHARS]
            size += len(line) + 1
            if size > MAX_CHUNK_CHARS:
                break
            out.append(line)
            if not cut:
                whole[number - 1] = 1
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
    """At least three non-blank characters in lines first..last (stops as soon as there are)."""
    needed = 3
    for index in range(first - 1, last):
        needed -= len(lines[index].strip())
        if needed <= 0:
            return True
    return False


def _symbol_chunks(text: _Lines, symbols: list[Symbol]) -> list[Chunk]:
    children: dict[int, list[Symbol]] = {}
    for symbol in symbols:
        if symbol.parent >= 0:
            children.setdefault(symbol.parent, []).append(symbol)
    chunks: list[Chunk] = []
    last_line = len(text.lines)
    for index, symbol in enumerate(symbols):
        first, end = max(1, symbol.start_line), min(symbol.end_line, last_line)
        members = children.get(index)
        if not members:
            # No member to elide: the pieces are plain runs of lines, joined without a list of numbers.
            for piece_first in range(first, end + 1, MAX_SYMBOL_LINES):
                piece_last = min(end, piece_first + MAX_SYMBOL_LINES - 1)
                head = piece_first == first
                chunks.append(
                    Chunk(
                        kind=symbol.kind,
                        start=piece_first,
                        end=symbol.end_line if head and end - first < MAX_SYMBOL_LINES else piece_last,
                        line=symbol.line if head else piece_first,
                        text=text.run(piece_first, piece_last),
                        symbol=symbol.qualified,
                        name=symbol.name,
                        is_def=head,
                    )
                )
            continue
        numbers: list[int] = []
        cursor = first
        # A member stays as its definition line; its body is the member's own chunk.
        for child in members:
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
                    text=text.join(piece),
                    symbol=symbol.qualified,
                    name=symbol.name,
                    is_def=head,
                )
            )
    return chunks


def _gap_chunks(text: _Lines, symbols: list[Symbol], kind: str) -> list[Chunk]:
    lines = text.lines
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
                chunks.append(Chunk(kind=kind, start=start, end=end, line=start, text=text.run(start, end)))
    return chunks


def _markdown_chunks(text: _Lines) -> list[Chunk]:
    lines = text.lines
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
                chunks.append(
                    Chunk(kind="section", start=start, end=end, line=start, text=text.run(start, end), symbol=title)
                )
    return chunks


def chunk_file(text: str, language: str | None, symbols: list[Symbol]) -> list[Chunk]:
    return chunk_lines(text.split("\n"), language, symbols)[0]


def chunk_lines(lines: list[str], language: str | None, symbols: list[Symbol]) -> tuple[list[Chunk], bytearray]:
    """``chunk_file`` over a text already split at "\\n", and which of those lines (by index) some
    chunk holds whole: the caller that split the text once need not split the chunks again."""
    whole = bytearray(len(lines))
    body = lines[:-1] if lines and lines[-1] == "" else lines
    if not body:
        return [], whole
    text = _Lines(body, whole)
    if language == "markdown":
        return _markdown_chunks(text), whole
    if symbols:
        return _symbol_chunks(text, symbols) + _gap_chunks(text, symbols, "code"), whole
    return _gap_chunks(text, [], "text" if language is None or language not in _CODE else "code"), whole


# Languages whose files are code even without a grammar here (their windows are "code", not "text").
_CODE = frozenset(
    {
        "python", "javascript", "typescript", "tsx", "go", "java", "c", "cpp", "rust", "ruby", "shell", "sql",
        "kotlin", "swift", "php", "csharp", "scala", "lua", "perl", "r", "dart", "elixir", "erlang", "haskell",
        "ocaml", "clojure", "vue", "svelte", "css", "html", "terraform", "make", "cmake", "dockerfile", "groovy",
        "protobuf", "graphql", "powershell", "starlark", "gradle",
    }
)
