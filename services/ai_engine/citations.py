"""Citations (`repo/path:line`) in answers: find them, and drop those that point to no retrieved source.

A model can invent a plausible path or line; a citation the user cannot trust is worse than none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from libs.common.events import Hit
from services.ai_engine.formatting import BULLET, FENCE

# A path with at least one slash, then :line or :start-end. The lookbehind keeps URLs
# (https://host/x:1) and longer paths from matching in their middle.
CITATION = re.compile(r"(?<![\w/.\-])((?:[\w.\-]+/)+[\w.\-]+):(\d+)(?:-(\d+))?(?![\w/])")
_WRAPPED = re.compile(r"(`?)" + CITATION.pattern + r"(`?)")


@dataclass
class CitationCheck:
    text: str
    kept: list[str] = field(default_factory=list)  # canonical repo/path:line, in order of appearance
    removed: list[str] = field(default_factory=list)


def resolve(file: str, line: int, hits: Sequence[Hit]) -> str | None:
    """The canonical `repo/path:line` of a citation backed by a hit (its file and line range), else None.
    A path without its repository counts when it names a hit's path exactly."""
    for exact in (True, False):
        for hit in hits:
            target = f"{hit.repo}/{hit.path}" if exact else hit.path
            if file != target:
                continue
            if hit.line <= line <= max(hit.end_line, hit.line):
                return f"{hit.repo}/{hit.path}:{line}"
    return None


def _tidy(line: str) -> str:
    """Punctuation left behind by a removed citation: empty brackets, doubled separators, spaces."""
    previous = None
    while previous != line:
        previous = line
        line = re.sub(r"\(\s*(?:(?:and|or|also|see|in|at|cf\.|e\.g\.|i\.e\.)[\s,;]*)*[,;]?\s*\)|\[\s*\]", "", line)
        line = re.sub(r"\s+(?:and|or)\s*([,.;:!?)]|$)", r"\1", line)
        # A connector left hanging at the end: "calls it, see also" / "defined in."
        line = re.sub(r"[,;]?\s+(?:see(?:\s+also)?|also|cf\.|in|at)\s*([.!?]?)$", r"\1", line)
        line = re.sub(r"\(\s*[,;]\s*", "(", line)
        line = re.sub(r"\s*[,;]\s*\)", ")", line)
        line = re.sub(r"([,;])\s*[,;]", r"\1", line)
        line = re.sub(r":\s*[,;]\s*", ": ", line)
        line = re.sub(r"(?<=\S) {2,}", " ", line)
        line = re.sub(r"\s+([,.;:!?)])", r"\1", line)
    # A bullet whose citation went first: "• — Foo" -> "• Foo".
    line = re.sub(r"^(\s*(?:" + BULLET + r"|\d+\.)\s)\s*[\u2014\u2013:-]\s*", r"\1", line)
    return line.rstrip(" ,;")


def _is_empty(line: str) -> bool:
    """Nothing left worth reading: only bullets, dashes, punctuation, numbering."""
    return not re.sub(r"[\s" + BULLET + r"\-\u2013\u2014*_:,.;()\[\]`0-9]", "", line)


def check_citations(text: str, hits: Sequence[Hit]) -> CitationCheck:
    """Remove citations outside the retrieved sources (code blocks untouched); canonicalise the rest."""
    result = CitationCheck(text="")
    out: list[str] = []
    in_code = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(FENCE) and not (stripped.endswith(FENCE) and len(stripped) > 6):
            in_code = not in_code
            out.append(line)
            continue
        if in_code:
            out.append(line)
            continue
        removed_here = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal removed_here
            opening, file, start, end, closing = match.groups()
            canonical = resolve(file, int(start), hits)
            if canonical is None:
                removed_here += 1
                result.removed.append(f"{file}:{start}")
                return ""
            if canonical not in result.kept:
                result.kept.append(canonical)
            return f"{opening}{canonical if end is None else f'{canonical}-{end}'}{closing}"

        rewritten = _WRAPPED.sub(replace, line)
        if removed_here:
            rewritten = _tidy(rewritten)
            if _is_empty(rewritten):
                continue  # the line was only the citation (or a bullet holding it)
        out.append(rewritten)
    result.text = "\n".join(out)
    return result


# "[2]" or "[1, 3]" referring to the numbered sources of the prompt; not a link ("[2](url)"), not an
# index ("items[2]").
_SOURCE_NUMBERS = re.compile(r"(?<![\w\[])\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\](?![(\[])")
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")


def expand_source_numbers(text: str, hits: Sequence[Hit]) -> str:
    """Source numbers ("[2]") -> the source's `repo/path:line`: the user never sees the numbered list.
    A number without a source is dropped; one whose location the line already cites is dropped too."""
    out: list[str] = []
    in_code = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(FENCE) and not (stripped.endswith(FENCE) and len(stripped) > 6):
            in_code = not in_code
            out.append(line)
            continue
        if in_code or "[" not in line:
            out.append(line)
            continue
        dropped = False

        def replace(match: re.Match[str], line: str = line) -> str:
            nonlocal dropped
            named = []
            for raw in match.group(1).split(","):
                number = int(raw)
                if 1 <= number <= len(hits) and hits[number - 1].location not in line:
                    location = hits[number - 1].location
                    if location not in named:
                        named.append(location)
            if not named:
                dropped = True
            return ", ".join(named)

        parts = _CODE_SPAN.split(line)
        rewritten = "".join(part if index % 2 else _SOURCE_NUMBERS.sub(replace, part)
                            for index, part in enumerate(parts))
        if dropped:
            rewritten = _tidy(rewritten)
            if _is_empty(rewritten):
                continue
        out.append(rewritten)
    return "\n".join(out)


def locations(hits: Sequence[Hit]) -> list[str]:
    """Each hit's `repo/path:line`, first occurrence kept."""
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(hit.location, None)
    return list(seen)
