"""Answers that need no answerer: pattern search listings, empty results and search errors."""

from __future__ import annotations

from libs.common.events import SearchCompleted
from services.ai_engine.formatting import BULLET, mono, truncate

MATCH_LINE_CHARS = 120


def _first_line(snippet: str) -> str:
    for line in snippet.split("\n"):
        if line.strip():
            text = line.strip()
            return text if len(text) <= MATCH_LINE_CHARS else text[: MATCH_LINE_CHARS - 1] + "…"
    return ""


def pattern_answer(completed: SearchCompleted, max_chars: int) -> str:
    """Matches of a /search pattern: `repo/path:line` and the matching line, as many as fit."""
    hits = completed.hits
    count = len(hits)
    noun = "match" if count == 1 else "matches"
    header = f"*{count} {noun}* for {mono(completed.request.query)}"
    # The engine stops at the request's limit, so a full page means there may be more.
    truncated = count >= completed.request.limit
    if truncated:
        header += f" (showing the first {count}; there may be more — add a path or a longer pattern to narrow it)"
    header += ":"
    entries = []
    for hit in hits:
        line = _first_line(hit.snippet)
        entries.append(f"{BULLET} {hit.location}" + (f"\n{mono(line)}" if line else ""))
    shown = len(entries)
    while True:
        body = "\n".join([header, "", *entries[:shown]])
        if shown < len(entries):
            body += f"\n{BULLET} …and {len(entries) - shown} more not shown"
        if len(body) <= max_chars or shown == 0:
            return truncate(body, max_chars)
        shown -= 1


def _scope(completed: SearchCompleted) -> str:
    repos = completed.request.repos
    if not repos:
        return "the indexed repositories"
    if len(repos) == 1:
        return f"*{repos[0]}*"
    return ", ".join(f"*{repo}*" for repo in repos[:-1]) + f" and *{repos[-1]}*"


def no_hits_answer(completed: SearchCompleted, max_chars: int) -> str:
    if completed.request.mode == "pattern":
        lead = f"I couldn't find any match for {mono(completed.request.query)} in {_scope(completed)}."
        tips = [
            f"{BULLET} check the spelling, or try a shorter or simpler pattern",
            f"{BULLET} send /repos to see which repositories are indexed",
            f"{BULLET} ask a question in plain words instead",
        ]
    else:
        lead = f"I couldn't find that in {_scope(completed)}."
        tips = [
            f"{BULLET} name an identifier — a function, class or file name (e.g. _where is parse_config defined?_)",
            f"{BULLET} send /search <text or regex> for an exact search",
            f"{BULLET} send /repos to see which repositories are indexed",
        ]
    return truncate("\n".join([lead, "", "You could try:", *tips]), max_chars)


def _hint(reason: str) -> str:
    lowered = reason.lower()
    if any(word in lowered for word in ("regex", "regular expression", "pattern", "parse")):
        return ("Check the pattern: escape special characters such as ( ) [ ] { } . * + ? with a backslash, "
                "or search for plain text.")
    if any(word in lowered for word in ("no repositor", "not indexed", "unknown repositor", "index")):
        return "Send /repos to see which repositories are indexed."
    if any(word in lowered for word in ("timeout", "timed out", "too long", "too slow")):
        return "Try a more specific pattern, or limit it to one repository."
    return "Try rephrasing it, or send /help to see what I can do."


def search_error_answer(completed: SearchCompleted, max_chars: int) -> str:
    reason = (completed.error or "unknown error").strip()
    return truncate(f"I couldn't run that search: {reason}\n\n{_hint(reason)}", max_chars)
