"""The offline answerer: a useful answer composed from the search hits alone (no model, no keys).

It is the answerer when no provider is configured and the fallback when every provider fails, so it
must be deterministic and never fail: the best place named in one line, its code, the other places.
"""

from __future__ import annotations

from collections.abc import Sequence

from libs.common.events import Hit
from services.ai_engine.formatting import BULLET, code_block, trim_code, truncate

# Enough code to recognise the place on a phone screen without scrolling past the rest.
CODE_LINES = 12
SHORT_CODE_LINES = 6
MIN_CODE_LINES = 3
MAX_ALSO = 6

NOTE_NO_MODEL = "_Composed from the search results (no AI model configured)._"
NOTE_FALLBACK = "_The AI model is unavailable right now; this answer is composed from the search results._"


def describe(hit: Hit) -> str:
    """`symbol` (kind) for a hit that has one, for the lead sentence and the list."""
    if not hit.symbol:
        return ""
    kind = f" ({hit.kind})" if hit.kind and hit.kind not in ("text", "match", "chunk") else ""
    return f"*{hit.symbol}*{kind}"


def lead(hit: Hit) -> str:
    what = describe(hit)
    if what:
        return f"The best match is {what} in {hit.location}:"
    return f"The best match is in {hit.location}:"


def others(hits: Sequence[Hit]) -> list[Hit]:
    """Every hit after the best one, one per location, in rank order."""
    seen = {hits[0].location} if hits else set()
    rest: list[Hit] = []
    for hit in hits[1:]:
        if hit.location not in seen:
            seen.add(hit.location)
            rest.append(hit)
    return rest


def also_line(hit: Hit) -> str:
    what = describe(hit)
    return f"{BULLET} {hit.location}" + (f" — {what}" if what else "")


def _render(best: Hit, code_lines: int, also: Sequence[Hit], hidden: int, note: str | None) -> str:
    parts = [lead(best)]
    code = trim_code(best.snippet, code_lines) if best.snippet.strip() else ""
    if code:
        parts.append(code_block(code))
    if also:
        lines = ["*Also relevant:*", *(also_line(hit) for hit in also)]
        if hidden:
            lines.append(f"{BULLET} …and {hidden} more")
        parts.append("\n".join(lines))
    elif hidden:
        parts.append(f"_{hidden} more place{'s' if hidden > 1 else ''} matched._")
    if note:
        parts.append(note)
    return "\n\n".join(parts)


def offline_answer(hits: Sequence[Hit], max_chars: int, note: str | None = NOTE_NO_MODEL) -> str:
    """The answer for ``hits`` (best first), within ``max_chars``. ``hits`` must not be empty."""
    if not hits:
        raise ValueError("the offline answerer needs at least one hit")
    best = hits[0]
    rest = others(hits)
    also = rest[:MAX_ALSO]
    hidden = len(rest) - len(also)
    code_lines = CODE_LINES
    # Shrink in order of least loss: some code, the tail of the list, more code, the note.
    while True:
        text = _render(best, code_lines, also, hidden, note)
        if len(text) <= max_chars:
            return text
        if code_lines > SHORT_CODE_LINES:
            code_lines -= 1
        elif also:
            also = also[:-1]
            hidden += 1
        elif code_lines > MIN_CODE_LINES:
            code_lines -= 1
        elif note:
            note = None
        else:
            return truncate(text, max_chars)
