"""Regular-expression search with ripgrep (the ``rg`` binary from the ``ripgrep`` wheel).

ripgrep's default engine runs in linear time (finite automata, no backtracking), so a pattern
from a chat such as ``(a+)+$`` cannot hang the service; a wall-clock timeout and an output cap
bound the rest (huge repositories, patterns that match every line). Only the indexed
repositories' roots are searched, with the indexer's own exclusions.
"""

from __future__ import annotations

import json
import os
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
        rg_binary(), "--json", "--no-config", "--no-require-git", "--hidden", "--no-messages", case,
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
) -> RgOutcome:
    """Matching lines under ``roots``. ``case_sensitive`` None: smart case (sensitive when the pattern
    has an uppercase letter); ``include``: only files matching one of these globs."""
    outcome = RgOutcome()
    if not roots:
        return outcome
    root_texts = [str(root) for root in roots]
    process = subprocess.Popen(
        [*_arguments(pattern, max_filesize, per_file, context, case_sensitive, include), *root_texts],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None and process.stderr is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    stderr = b""
    pending_context: dict[tuple[int, str], dict[int, str]] = {}
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
                    _consume(raw, root_texts, outcome, pending_context)
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
        _consume(buffer, root_texts, outcome, pending_context)
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


def _consume(
    raw: bytes,
    roots: list[str],
    outcome: RgOutcome,
    pending_context: dict[tuple[int, str], dict[int, str]],
) -> None:
    if not raw.strip():
        return
    try:
        message = json.loads(raw)
    except ValueError:
        return
    kind = message.get("type")
    if kind not in ("match", "context"):
        return
    data = message.get("data", {})
    path_text = data.get("path", {}).get("text")
    line_number = data.get("line_number")
    line_text = data.get("lines", {}).get("text")
    if path_text is None or line_number is None or line_text is None:
        return  # a non-UTF-8 path or line: not citable
    located = _locate(path_text, roots)
    if located is None:
        return
    root, rel = located
    text = line_text.rstrip("\r\n")[:MAX_LINE_CHARS]
    context = pending_context.setdefault((root, rel), {})
    context[line_number] = text
    if kind == "match":
        outcome.matches.append(Match(root=root, path=rel, line=line_number, text=text, context=context))
