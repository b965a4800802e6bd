"""What to look for in a question: identifiers, qualified names, paths and plain words.

"where is `SessionStore.expire` called?" -> qualified ``SessionStore.expire`` (and its parts as
identifiers), words ``session``, ``store``, ``expire``, ``called``. Identifiers are recognised by
their shape (snake_case, camelCase, dotted, ``name()``, backticks) or by being the only thing asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_QUERY_CHARS = 1000


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = _wordset(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves us let lets let's i'm we're it's there's what's where's
    how's does doesn't don't isn't aren't can't cannot won't shall may might must also else ever
    code codebase repo repository repositories function functions method methods class classes file
    files find show tell explain please look looking see implemented implement implementation
    defined define definition happen happens happening work works working handled handle logic
    thing things something somewhere anything way ways part parts place places get gets got use used
    using uses want need needs know like exactly actually really basically
    """
)

_BACKTICKED = re.compile(r"`([^`]{1,200})`")
# Dotted or :: qualified names, identifiers, and call shapes like name().
_TOKEN = re.compile(r"[A-Za-z_$][\w$]*(?:(?:\.|::|#|->)[A-Za-z_$][\w$]*)*(?:\(\))?")
_PATH = re.compile(r"(?:[\w.-]+/)+[\w.-]+|[\w-]+\.(?:[a-z]{1,5})\b")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9']*")
_FILE_EXTENSIONS = _wordset(
    "py pyi js jsx mjs cjs ts tsx go java c h cc cpp hpp cxx rs rb md yaml yml toml json ini cfg txt sql sh html css"
)


@dataclass
class ParsedQuery:
    text: str
    identifiers: list[str] = field(default_factory=list)  # as written: process_webhook, SessionStore
    qualified: list[str] = field(default_factory=list)  # dotted: SessionStore.expire
    paths: list[str] = field(default_factory=list)  # webhooks/security.py, store.py
    words: list[str] = field(default_factory=list)  # lowercased, stopwords out, identifier parts in

    @property
    def empty(self) -> bool:
        return not (self.identifiers or self.qualified or self.paths or self.words)


def split_identifier(name: str) -> list[str]:
    """process_webhook -> [process, webhook]; SessionStore -> [session, store]; HTTPServer2 -> [http, server, 2]."""
    parts: list[str] = []
    for piece in re.split(r"[^A-Za-z0-9]+", name):
        parts.extend(m.group(0).lower() for m in _CAMEL.finditer(piece))
    return [p for p in parts if p]


def _looks_like_identifier(token: str) -> bool:
    if "_" in token.strip("_") or token.endswith("()") or "$" in token:
        return True
    inner = token[1:]
    return any(c.isupper() for c in inner) and any(c.islower() for c in token)


def _add(target: list[str], value: str) -> None:
    if value and value not in target:
        target.append(value)


def parse(text: str) -> ParsedQuery:
    text = text.strip()
    parsed = ParsedQuery(text=text)
    explicit = [m.group(1).strip() for m in _BACKTICKED.finditer(text)]
    remainder = _BACKTICKED.sub(" ", text)

    for match in _PATH.finditer(remainder):
        candidate = match.group(0).strip("./")
        extension = candidate.rsplit(".", 1)[-1].lower() if "." in candidate else ""
        if "/" in candidate or extension in _FILE_EXTENSIONS:
            _add(parsed.paths, candidate)
    path_text = " ".join(parsed.paths)

    tokens = [(token, True) for chunk in explicit for token in _TOKEN.findall(chunk)]
    tokens += [(token, False) for token in _TOKEN.findall(remainder)]
    for raw, forced in tokens:
        token = raw.removesuffix("()")
        if not token:
            continue
        if token in path_text and not forced:
            continue
        qualified = re.split(r"\.|::|#|->", token)
        if len(qualified) > 1:
            _add(parsed.qualified, ".".join(qualified))
            for part in qualified:
                _add(parsed.identifiers, part)
        elif forced or raw.endswith("()") or _looks_like_identifier(token):
            _add(parsed.identifiers, token)

    for identifier in parsed.identifiers:
        for part in split_identifier(identifier):
            if part not in STOPWORDS or len(parsed.identifiers) == 1:
                _add(parsed.words, part)
    for path in parsed.paths:
        for part in split_identifier(path.rsplit(".", 1)[0]):
            _add(parsed.words, part)
    for match in _WORD.finditer(remainder):
        word = match.group(0).lower().strip("'")
        if len(word) < 2 or word in STOPWORDS or (word in _FILE_EXTENSIONS and word in path_text):
            continue
        _add(parsed.words, word)

    # A lone word ("tokenize") may well be a name: let symbol matching try it as one.
    if not parsed.identifiers and not parsed.qualified and len(parsed.words) == 1:
        _add(parsed.identifiers, parsed.words[0])
    return parsed
