"""What to look for in a question: identifiers, qualified names, paths and plain words.

"where is `SessionStore.expire` called?" -> qualified ``SessionStore.expire`` (and its parts as
identifiers), words ``session``, ``store``, ``expire``, ``called``. Identifiers are recognised by
their shape (snake_case, camelCase, dotted, ``name()``, backticks) or by being the only thing asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_QUERY_CHARS = 1000
MAX_LIMIT = 50  # hits per search at most


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

_RECEIVERS = frozenset({"self", "this", "cls", "super", "ctx"})
_BACKTICKED = re.compile(r"`([^`]{1,200})`")
# Dotted or :: qualified names, identifiers, and call shapes like name().
_TOKEN = re.compile(r"[A-Za-z_$][\w$]*(?:(?:\.|::|#|->)[A-Za-z_$][\w$]*)*(?:\(\))?")
_PATH = re.compile(r"(?:[\w.-]+/)+[\w.-]+|[\w-]+\.(?:[a-z]{1,5})\b")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9']*")
_FILE_EXTENSIONS = _wordset(
    "py pyi js jsx mjs cjs ts tsx go java c h cc cpp hpp cxx rs rb md yaml yml toml json ini cfg txt sql sh html css"
)


@dataclass(frozen=True)
class Frame:
    """One stack-trace frame of a bug report: where the code ran (a path tail to match indexed paths)."""

    path: str  # repository-relative guess: after site-packages/, else the last two components
    line: int
    function: str = ""
    innermost: bool = False  # the frame that raised (Python: the last one; JS, Java, Ruby: the first)


_PY_FRAME = re.compile(r'File "([^"\n]+)", line (\d+)(?:, in ([\w<>.]+))?')
# at fn (/app/src/api.js:43:11) | at /app/src/api.js:43:11 | at async Object.run (file:///x/y.mjs:1:2)
_JS_FRAME = re.compile(
    r"\bat (?:(?:async |new )?([\w$.<>\[\] ]+?) \()?(?:file://)?((?:[A-Za-z]:)?[^\s():]+\.[cm]?[jt]sx?):(\d+)(?::\d+)?\)?"
)
# at com.example.relay.WebhookClient.send(WebhookClient.java:42)
_JAVA_FRAME = re.compile(r"\bat ((?:[\w$]+\.)+)([\w$<>]+)\(([\w$.-]+\.(?:java|kt|scala|groovy)):(\d+)\)")
# from /app/scripts/deploy.rb:12:in `deploy'   |   /app/server/main.go:30 +0x1d
_RUBY_FRAME = re.compile(r"([^\s:'\"]+\.rb):(\d+):in [`']([^'`]+)'")
_GO_FRAME = re.compile(r"(?m)^\s+((?:/|[A-Za-z]:)[^\s:]+\.go):(\d+)")
_TRACEBACK_HEAD = re.compile(r"Traceback \(most recent call last\):?")
_VENDOR_ROOT = re.compile(r".*?/(?:site-packages|dist-packages|node_modules|gems/[^/]+/gems/[^/]+)/")


def _frame_path(raw: str) -> str:
    path = raw.replace("\\", "/")
    vendored = _VENDOR_ROOT.match(path)
    if vendored:
        return path[vendored.end() :]
    parts = [p for p in path.split("/") if p and p != "."]
    return "/".join(parts[-2:])


def stack_frames(text: str) -> tuple[list[Frame], str]:
    """The frames of any stack traces in ``text``, and the text without them."""
    found: list[tuple[int, Frame]] = []
    spans: list[tuple[int, int]] = []
    python = list(_PY_FRAME.finditer(text))
    for number, match in enumerate(python):
        raw = match.group(1)
        if raw.startswith("<"):  # <frozen importlib._bootstrap>, <string>
            continue
        innermost = number == len(python) - 1
        found.append((match.start(), Frame(_frame_path(raw), int(match.group(2)), match.group(3) or "", innermost)))
        spans.append(match.span())
    ordered_first = []
    for match in _JS_FRAME.finditer(text):
        function = (match.group(1) or "").split(".")[-1].strip()
        if function.startswith("<") or match.group(2).startswith(("node:", "internal/")):
            function = ""
        ordered_first.append((match.start(), _frame_path(match.group(2)), int(match.group(3)), function, match.span()))
    for match in _JAVA_FRAME.finditer(text):
        owner = match.group(1).rstrip(".").split(".")[-1]
        package = match.group(1).rstrip(".").split(".")[:-1]
        path = "/".join([*package, match.group(3)])
        ordered_first.append((match.start(), path, int(match.group(4)), f"{owner}.{match.group(2)}", match.span()))
    for match in _RUBY_FRAME.finditer(text):
        function = match.group(3).split("#")[-1].split(".")[-1].split(" ")[-1]
        ordered_first.append((match.start(), _frame_path(match.group(1)), int(match.group(2)), function, match.span()))
    for match in _GO_FRAME.finditer(text):
        ordered_first.append((match.start(), _frame_path(match.group(1)), int(match.group(2)), "", match.span()))
    ordered_first.sort()
    for number, (start, path, line, function, span) in enumerate(ordered_first):
        if any(a <= start < b for a, b in spans):
            continue
        found.append((start, Frame(path, line, function, innermost=number == 0)))
        spans.append(span)
    found.sort(key=lambda item: item[0])
    remainder = text
    for a, b in sorted(spans, reverse=True):
        remainder = remainder[:a] + " " + remainder[b:]
    remainder = _TRACEBACK_HEAD.sub(" ", remainder)
    return [frame for _start, frame in found], remainder


@dataclass
class ParsedQuery:
    text: str
    identifiers: list[str] = field(default_factory=list)  # as written: process_webhook, SessionStore
    qualified: list[str] = field(default_factory=list)  # dotted: SessionStore.expire
    paths: list[str] = field(default_factory=list)  # webhooks/security.py, store.py
    words: list[str] = field(default_factory=list)  # lowercased, stopwords out, identifier parts in
    frames: list[Frame] = field(default_factory=list)  # stack-trace frames pasted into the question

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
    parsed.frames, text = stack_frames(text)
    explicit = [m.group(1).strip() for m in _BACKTICKED.finditer(text)]
    remainder = _BACKTICKED.sub(" ", text)
    for frame in parsed.frames:
        _add(parsed.paths, frame.path)
        if frame.function:
            explicit.append(frame.function)

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
        while len(qualified) > 1 and qualified[0] in _RECEIVERS:
            qualified = qualified[1:]
        if len(qualified) == 1 and qualified[0] != token:
            token = qualified[0]
            if not (forced or _looks_like_identifier(token)):
                continue
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
