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


def locations(hits: Sequence[Hit]) -> list[str]:
    """Each hit's `repo/path:line`, first occurrence kept."""
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(hit.location, None)
    return list(seen)
