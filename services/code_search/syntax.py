"""The search language shared by WhatsApp (``search.requested``), the CLI and the HTTP API.

Free text plus filters, in any order::

    how are sessions expired repo:backend path:src/**/*.py lang:python
    sym:SessionStore.expire
    re:"def \\w+_signature" path:webhooks/ case:yes
    /verify_\\w+/ lang:go

- ``repo:NAME`` — only this repository (repeat for several);
- ``path:GLOB`` — only files whose repository-relative path matches: ``*`` stays within a folder,
  ``**`` crosses folders, ``{a,b}`` alternates; a leading ``/`` anchors at the repository root,
  otherwise the glob may start at any folder; a value without wildcards matches anywhere in the path
  (``path:orm`` finds ``lib/sqlalchemy/orm/session.py``). A filter never leaves the repository:
  ``..``, ``~`` and drive letters are refused;
- ``lang:NAME`` — python, go, ts, js, java, c, cpp, rust, ruby, markdown, ... (aliases accepted);
- ``sym:NAME`` — only definitions with this name (``Class.method`` qualified, ``*`` wildcards);
- ``re:PATTERN`` or ``/PATTERN/`` — a regular expression (ripgrep syntax, linear time) instead of
  free text; in pattern mode the whole text is the pattern already;
- ``case:yes`` / ``case:no`` — case-sensitive or not (default: sensitive only when the pattern or
  identifier has an uppercase letter).

A value with spaces goes in double quotes: ``path:"my docs/*.md"``. Unknown ``word:`` prefixes are
plain text (URLs, ``std::vector``, ``key: value``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.code_search.languages import EXTENSIONS, FILENAMES, GRAMMARS

MAX_QUERY_CHARS = 1000
MAX_FILTERS = 20
MAX_GLOB_CHARS = 300

SYNTAX_HELP = (
    "filters: repo:NAME path:GLOB lang:NAME sym:NAME re:PATTERN (or /PATTERN/) case:yes — "
    'e.g. "session expiry lang:python path:src/**" or "sym:SessionStore.expire"'
)

LANGUAGE_ALIASES = {
    "py": "python", "python3": "python", "js": "javascript", "node": "javascript", "jsx": "javascript",
    "ts": "typescript", "golang": "go", "c++": "cpp", "cxx": "cpp", "cc": "cpp", "hpp": "cpp", "rs": "rust",
    "rb": "ruby", "md": "markdown", "yml": "yaml", "sh": "shell", "bash": "shell", "kt": "kotlin",
    "cs": "csharp", "c#": "csharp", "h": "c",
}
LANGUAGES = frozenset({*GRAMMARS, *EXTENSIONS.values(), *FILENAMES.values()})

_FILTER = re.compile(r'(?<!\S)(-?)(repo|path|file|lang|language|sym|symbol|re|regex|case):("(?:[^"\\]|\\.)*"|\S*)')
_SLASHED = re.compile(r"(?<!\S)/((?:[^/\\\s]|\\.)(?:[^/\\]|\\.)*)/(?!\S)")
_KEYS = {"file": "path", "language": "lang", "symbol": "sym", "regex": "re"}


class QueryError(ValueError):
    """A search the user must rephrase; ``code`` is one of the engine's client error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class SearchQuery:
    text: str  # the free text (or the pattern, in pattern mode) without the filters
    repos: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # globs as written
    path_regexes: list[str] = field(default_factory=list)  # each glob as a full-match regex over the path
    excluded_paths: list[str] = field(default_factory=list)  # -path: full-match regexes
    languages: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    pattern: str | None = None  # a regular expression to run instead of the free text
    case: bool | None = None  # None: smart (sensitive when there is an uppercase letter)

    @property
    def has_filters(self) -> bool:
        return bool(self.repos or self.paths or self.excluded_paths or self.languages or self.symbols)

    def path_allowed(self, path: str) -> bool:
        if self.path_regexes and not any(re.fullmatch(rx, path) for rx in self.path_regexes):
            return False
        return not any(re.fullmatch(rx, path) for rx in self.excluded_paths)

    def case_sensitive(self, text: str) -> bool:
        return self.case if self.case is not None else any(c.isupper() for c in text)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1].replace('\\"', '"')  # only \" is an escape: regexes keep their backslashes
    return value


def _literal(char: str) -> str:
    """One character as a regex both Python's re and tantivy's (Rust) regex read literally."""
    if char in "\\]^":
        return "\\" + char
    if char.isalnum() or char in "_/ ":
        return char
    return f"[{char}]"


def glob_regex(glob: str) -> str:
    """A path glob as a regex that must match a whole repository-relative path (see the module doc)."""
    value = glob.strip()
    if not value:
        raise QueryError("invalid_filter", "path: needs a value, e.g. path:src/**/*.py")
    if len(value) > MAX_GLOB_CHARS:
        raise QueryError("invalid_filter", f"path: is longer than {MAX_GLOB_CHARS} characters")
    if "\x00" in value or "\\" in value:
        raise QueryError("invalid_filter", "path: uses / between folders and no backslashes")
    parts = value.split("/")
    if ".." in parts or value.startswith("~") or re.match(r"^[A-Za-z]:", value):
        raise QueryError("invalid_filter", f"path:{value} leaves the repository: paths are relative to its root")
    anchored = value.startswith("/")
    value = value.lstrip("/")
    while value.startswith("./"):
        value = value[2:]
    wildcard = any(c in value for c in "*?[{")
    if not wildcard:
        body = "".join(_literal(c) for c in value.rstrip("/"))
        if anchored:
            return body + "(/.*)?"
        return ".*" + body + ".*"
    out: list[str] = []
    i = 0
    depth = 0
    while i < len(value):
        char = value[i]
        if value.startswith("**/", i):
            out.append("(.*/)?")
            i += 3
            continue
        if value.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = value.find("]", i + 2)
            if end < 0:
                raise QueryError("invalid_filter", f"path:{glob} has an unclosed [")
            inner = value[i + 1 : end]
            negate = inner.startswith(("!", "^"))
            inner = inner[1:] if negate else inner
            if not inner or "/" in inner:
                raise QueryError("invalid_filter", f"path:{glob} has an empty or invalid [...] class")
            escaped = "".join("\\" + c if c in "\\]^[" else c for c in inner)
            out.append(f"[{'^/' if negate else ''}{escaped}]")
            i = end + 1
            continue
        elif char == "{":
            depth += 1
            out.append("(")
        elif char == "}" and depth:
            depth -= 1
            out.append(")")
        elif char == "," and depth:
            out.append("|")
        else:
            out.append(_literal(char))
        i += 1
    if depth:
        raise QueryError("invalid_filter", f"path:{glob} has an unclosed {{")
    body = "".join(out)
    prefix = "" if anchored else "(.*/)?"
    return prefix + body + (".*" if value.endswith("/") else "(/.*)?")


def normalise_language(value: str) -> str:
    lowered = value.strip().lower()
    lowered = LANGUAGE_ALIASES.get(lowered, lowered)
    if lowered not in LANGUAGES:
        known = ", ".join(sorted(GRAMMARS))
        raise QueryError("invalid_filter", f"unknown language {value!r} (e.g. {known})")
    return lowered


def _symbol(value: str) -> str:
    cleaned = value.strip().removesuffix("()")
    cleaned = re.sub(r"::|#|->", ".", cleaned)
    if not re.fullmatch(r"[A-Za-z_$*][\w$*]*(?:\.[A-Za-z_$*][\w$*]*)*", cleaned):
        raise QueryError("invalid_filter", f"sym:{value} is not a name (letters, digits, _, . and * only)")
    return cleaned


def parse_search(text: str, mode: str = "question") -> SearchQuery:
    """Split a search into filters and text. Raises QueryError with a sentence for the user."""
    raw = text or ""
    if len(raw) > MAX_QUERY_CHARS:
        raise QueryError("query_too_long", f"the search is too long (at most {MAX_QUERY_CHARS} characters)")
    if "\x00" in raw:
        raise QueryError("empty_query", "the search contains a NUL character")
    query = SearchQuery(text="")
    filters = list(_FILTER.finditer(raw))
    if len(filters) > MAX_FILTERS:
        raise QueryError("invalid_filter", f"too many filters (at most {MAX_FILTERS})")
    remainder = _FILTER.sub(" ", raw)
    for match in filters:
        negated, key, value = match.group(1) == "-", _KEYS.get(match.group(2), match.group(2)), _unquote(match.group(3))
        if negated and key != "path":
            raise QueryError("invalid_filter", f"-{key}: is not supported (only -path: excludes)")
        if key == "re":
            if mode == "pattern":
                raise QueryError("invalid_filter", "re: is for questions; a pattern search is a pattern already")
            if not value:
                raise QueryError("invalid_pattern", "invalid pattern: re: needs a pattern")
            if query.pattern is not None:
                raise QueryError("invalid_pattern", "invalid pattern: give one re: pattern per search")
            query.pattern = value
        elif key == "case":
            if value.lower() not in ("yes", "no", "y", "n", "true", "false", "on", "off"):
                raise QueryError("invalid_filter", f"case:{value}: use case:yes or case:no")
            query.case = value.lower() in ("yes", "y", "true", "on")
        elif not value:
            raise QueryError("invalid_filter", f"{key}: needs a value")
        elif key == "repo":
            if value not in query.repos:
                query.repos.append(value)
        elif key == "path":
            regex = glob_regex(value)
            if negated:
                query.excluded_paths.append(regex)
            else:
                query.paths.append(value)
                query.path_regexes.append(regex)
        elif key == "lang":
            language = normalise_language(value)
            if language not in query.languages:
                query.languages.append(language)
        elif key == "sym":
            query.symbols.append(_symbol(value))
    remainder = remainder.strip()
    if mode != "pattern":
        slashed = _SLASHED.search(remainder)
        # "/…/" as a pattern only when it is the only thing besides the filters (not "a/b/c" paths).
        if slashed and query.pattern is None and slashed.group(0).strip() == remainder:
            query.pattern = slashed.group(1)
            remainder = ""
        if query.pattern is not None and remainder:
            raise QueryError(
                "invalid_pattern", "invalid pattern: a pattern search takes filters but no other words"
            )
    query.text = " ".join(remainder.split()) if mode != "pattern" else remainder
    if not query.text and query.pattern is None and not query.symbols:
        if query.has_filters or query.case is not None:
            raise QueryError("empty_query", "nothing to search for: add words, sym:NAME or re:PATTERN to the filters")
        raise QueryError("empty_query", "the search is empty: ask a question or give a pattern")
    return query
