"""Regular-expression search with ripgrep (the ``rg`` binary from the ``ripgrep`` wheel).

ripgrep's default engine runs in linear time (finite automata, no backtracking), so a pattern
from a chat such as ``(a+)+$`` cannot hang the service; a wall-clock timeout and an output cap
bound the rest (huge repositories, patterns that match every line). Only the indexed
repositories' roots are searched, with the indexer's own exclusions.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from services.code_search.walker import MINIFIED_SUFFIXES, SENSITIVE_PATTERNS, VENDORED_DIRS

MAX_PATTERN_CHARS = 1000
MAX_LINE_CHARS = 400
READ_BYTES = 65536


@dataclass(slots=True)
class Match:
    root: int  # index into the roots searched
    path: str  # relative to that root, POSIX
    line: int
    text: str
    context: dict[int, str] = field(default_factory=dict)


@dataclass
class RgOutcome:
    matches: list[Match] = field(default_factory=list)
    error: str | None = None  # the pattern is invalid (ripgrep's own explanation)
    truncated: bool = False  # stopped at the match cap
    timed_out: bool = False


class RipgrepMissing(RuntimeError):
    pass


@lru_cache(maxsize=1)
def rg_binary() -> str:
    """The rg next to this interpreter (the wheel installs it in the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / ("rg.exe" if os.name == "nt" else "rg")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rg")
    if found:
        return found
    raise RipgrepMissing("ripgrep (rg) is not installed: pip install ripgrep")


def _arguments(
    pattern: str,
    max_filesize: int,
    per_file: int,
    context: int,
    case_sensitive: bool | None = None,
    include: list[str] | None = None,
) -> list[str]:
    case = {None: "--smart-case", True: "--case-sensitive", False: "--ignore-case"}[case_sensitive]
    args = [
        # Ignore files above a repository's root or in the user's git config are not the repository's.
        # Plain lines ("path NUL number:text", "-" after the number on context lines): a tenth of the
        # JSON output's parsing time, which dominated a pattern matching hundreds of lines.
        rg_binary(), "--no-heading", "--with-filename", "--line-number", "--null", "--color", "never",
        "--no-config", "--no-require-git", "--no-ignore-parent", "--no-ignore-global",
        "--hidden", "--no-messages", case,
        "--max-filesize", str(max_filesize), "--max-count", str(per_file), "--context", str(context),
        "--glob", "!.git/",
    ]
    if include is not None:
        # A file type, not globs: types and globs are both required to match (globs would be OR-ed).
        for glob in include or ["!*"]:
            args += ["--type-add", f"wanted:{glob}"]
        args += ["--type", "wanted"]
    for name in sorted(VENDORED_DIRS):
        args += ["--glob", f"!{name}/"]
    for suffix in MINIFIED_SUFFIXES:
        args += ["--glob", f"!*{suffix}"]
    for sensitive in SENSITIVE_PATTERNS:
        args += ["--glob", f"!{sensitive}"]
    return [*args, "--regexp", pattern, "--"]


# -- literal prefilter ------------------------------------------------------------------------------
#
# A pattern such as ``raise exc\.InvalidRequestError\(`` can only match a line holding the whole
# words ``exc`` and ``InvalidRequestError``: the index knows which files have a chunk with both, and
# ripgrep reads only those. Only words whose both ends are fixed by the pattern count (``exc`` above,
# not ``raise``, which could end ``xraise``); anything the reader below does not understand gives no
# words, and the whole tree is searched as before.

_BOUNDARY = object()  # ^, $, \b: the text has no letter or digit there
_BREAK = object()  # anything that is not one fixed character


def _skip_class(pattern: str, i: int) -> int | None:
    """Index just past the character class opening at ``pattern[i]`` (nested classes included)."""
    depth = 0
    j = i
    while j < len(pattern):
        char = pattern[j]
        if char == "\\":
            j += 2
            continue
        if char == "[":
            depth += 1
            j += 1
            if j < len(pattern) and pattern[j] == "^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1  # a ] first in a class is literal
            continue
        if char == "]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


def _skip_group(pattern: str, i: int) -> int | None:
    depth = 0
    j = i
    while j < len(pattern):
        char = pattern[j]
        if char == "\\":
            j += 2
            continue
        if char == "[":
            end = _skip_class(pattern, j)
            if end is None:
                return None
            j = end
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


def _split_alternatives(pattern: str) -> list[str] | None:
    out, start, j = [], 0, 0
    while j < len(pattern):
        char = pattern[j]
        if char == "\\":
            j += 2
        elif char == "[":
            end = _skip_class(pattern, j)
            if end is None:
                return None
            j = end
        elif char == "(":
            end = _skip_group(pattern, j)
            if end is None:
                return None
            j = end
        elif char == "|":
            out.append(pattern[start:j])
            j += 1
            start = j
        else:
            j += 1
    out.append(pattern[start:])
    return out


def _items(branch: str) -> list[object] | None:
    items: list[object] = []
    j = 0
    while j < len(branch):
        char = branch[j]
        if char == "\\":
            if j + 1 >= len(branch):
                return None
            escaped = branch[j + 1]
            if escaped == "b":
                items.append(_BOUNDARY)
            elif escaped.isascii() and not escaped.isalnum() and escaped not in " \t":
                items.append(escaped)
            elif escaped in "wWdDsSB":
                items.append(_BREAK)
            else:
                return None  # \p{..}, \x.., \n, \A, ...: not worth reading
            j += 2
        elif char in "^$":
            items.append(_BOUNDARY)
            j += 1
        elif char == ".":
            items.append(_BREAK)
            j += 1
        elif char == "[":
            end = _skip_class(branch, j)
            if end is None:
                return None
            items.append(_BREAK)
            j = end
        elif char == "(":
            if branch.startswith("(?", j):
                return None  # flags (x ignores whitespace), look-arounds: read nothing
            end = _skip_group(branch, j)
            if end is None:
                return None
            items.append(_BREAK)
            j = end
        elif char in "?*{":
            # The atom before is optional (or its count unknown): it fixes nothing.
            if items:
                items[-1] = _BREAK
            if char == "{":
                end = branch.find("}", j)
                if end < 0:
                    return None
                j = end
            j += 1
        elif char == "+":
            items.append(_BREAK)  # more of the atom may follow it
            j += 1
        elif char in ")]":
            return None
        else:
            items.append(char)
            j += 1
    return items


def _is_word_char(item: object) -> bool:
    return isinstance(item, str) and item.isascii() and item.isalnum()


def _is_edge(item: object) -> bool:
    return item is _BOUNDARY or (isinstance(item, str) and not item.isalnum())


def literal_words(pattern: str) -> list[list[str]] | None:
    """For each alternative of the pattern, words (as written) that any matching line holds as
    whole words; None when some alternative fixes no word."""
    branches = _split_alternatives(pattern)
    if branches is None:
        return None
    groups = []
    for branch in branches:
        items = _items(branch)
        if items is None:
            return None
        words = []
        j = 0
        while j < len(items):
            if _is_word_char(items[j]):
                end = j
                while end < len(items) and _is_word_char(items[end]):
                    end += 1
                if j > 0 and end < len(items) and _is_edge(items[j - 1]) and _is_edge(items[end]):
                    words.append("".join(str(item) for item in items[j:end]))
                j = end
            else:
                j += 1
        if not words:
            return None
        groups.append(words)
    return groups


def _case_insensitive(pattern: str, case_sensitive: bool | None) -> bool:
    """How ripgrep will match: smart case is insensitive unless some literal is uppercase (escapes
    such as ``\\S`` or ``\\p{Lu}`` are not literals)."""
    if case_sensitive is not None:
        return not case_sensitive
    j = 0
    while j < len(pattern):
        char = pattern[j]
        if char == "\\":
            if pattern[j + 1 : j + 2] in ("p", "P") and pattern[j + 2 : j + 3] == "{":
                end = pattern.find("}", j)
                j = len(pattern) if end < 0 else end + 1
            else:
                j += 2
            continue
        if char.isupper():
            return False
        j += 1
    return True


# Case-insensitive matching folds the Kelvin sign into k and the long s into s: a file may hold
# neither ASCII letter where the pattern names it.
_FOLDED_FROM_NON_ASCII = frozenset("kKsS")


def literal_runs(pattern: str, case_sensitive: bool | None = None) -> list[list[str]] | None:
    """For each alternative of the pattern, runs of at least three ASCII characters that any match
    holds as written (up to ASCII case); None when some alternative fixes no such run."""
    branches = _split_alternatives(pattern)
    if branches is None:
        return None
    insensitive = _case_insensitive(pattern, case_sensitive)
    groups = []
    for branch in branches:
        items = _items(branch)
        if items is None:
            return None
        runs, current = [], ""
        for item in [*items, _BREAK]:
            fixed = isinstance(item, str) and item.isascii() and not (insensitive and item in _FOLDED_FROM_NON_ASCII)
            if fixed:
                current += str(item)
                continue
            if len(current) >= 3:
                runs.append(current)
            current = ""
        if not runs:
            return None
        groups.append(runs)
    return groups


def _explain(stderr: str) -> str:
    """ripgrep's regex error, reduced to its last meaningful line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("error:"):
            return line[len("error:") :].strip()
    return lines[-1] if lines else "the pattern could not be compiled"


def search(
    pattern: str,
    roots: list[Path],
    *,
    max_matches: int,
    timeout: float,
    max_filesize: int,
    per_file: int = 20,
    context: int = 1,
    case_sensitive: bool | None = None,
    include: list[str] | None = None,
    files: list[Path] | list[str] | None = None,
) -> RgOutcome:
    """Matching lines under ``roots``. ``case_sensitive`` None: smart case (sensitive when the pattern
    has an uppercase letter); ``include``: only files matching one of these globs; ``files``: search
    only these files (under ``roots``) instead of walking the roots."""
    outcome = RgOutcome()
    if not roots:
        return outcome
    root_texts = [str(root) for root in roots]
    # No candidate file: ripgrep still compiles the pattern (an invalid one must be explained).
    targets = root_texts if files is None else ([str(path) for path in files] or [os.devnull])
    process = subprocess.Popen(
        [*_arguments(pattern, max_filesize, per_file, context, case_sensitive, include), *targets],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None and process.stderr is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    stderr = b""
    pending_context: dict[tuple[int, str], dict[int, str]] = {}
    located: dict[bytes, tuple[int, str] | None] = {}
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    selector.register(process.stderr, selectors.EVENT_READ)
    open_streams = 2
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome.timed_out = True
                break
            for key, _events in selector.select(timeout=min(remaining, 0.5)):
                chunk = os.read(key.fd, READ_BYTES)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.fileobj is process.stderr:
                    stderr = (stderr + chunk)[-8192:]
                    continue
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    _consume(raw, root_texts, outcome, pending_context, located)
                if len(outcome.matches) >= max_matches:
                    outcome.truncated = True
                    open_streams = 0
                    break
    finally:
        selector.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    if buffer and not outcome.truncated and not outcome.timed_out:
        _consume(buffer, root_texts, outcome, pending_context, located)
    # ripgrep exits 2 on an invalid pattern before searching anything.
    if process.returncode == 2 and not outcome.matches and not outcome.timed_out:
        outcome.error = _explain(stderr.decode("utf-8", "replace"))
    return outcome


def _locate(path: str, roots: list[str]) -> tuple[int, str] | None:
    for index, root in enumerate(roots):
        prefix = root.rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            return index, path[len(prefix) :].replace(os.sep, "/")
    return None


_NUMBER = re.compile(rb"(\d+)([:-])")


def _consume(
    raw: bytes,
    roots: list[str],
    outcome: RgOutcome,
    pending_context: dict[tuple[int, str], dict[int, str]],
    located: dict[bytes, tuple[int, str] | None],
) -> None:
    path_bytes, nul, rest = raw.partition(b"\x00")
    if not nul:
        return  # a group separator ("--")
    number = _NUMBER.match(rest)
    if number is None:
        return  # "binary file matches ...": nothing to cite
    if path_bytes not in located:
        try:
            located[path_bytes] = _locate(path_bytes.decode("utf-8"), roots)
        except UnicodeDecodeError:
            located[path_bytes] = None  # a non-UTF-8 path: not citable
    where = located[path_bytes]
    if where is None:
        return
    try:
        line_text = rest[number.end() :].decode("utf-8")
    except UnicodeDecodeError:
        return  # a non-UTF-8 line: not citable
    root, rel = where
    line_number = int(number.group(1))
    text = line_text.rstrip("\r\n")[:MAX_LINE_CHARS]
    context = pending_context.setdefault((root, rel), {})
    context[line_number] = text
    if number.group(2) == b":":
        outcome.matches.append(Match(root=root, path=rel, line=line_number, text=text, context=context))
