"""The files of a working tree worth indexing, and how many were left out for which reason.

Decided from names and sizes only (no file is opened here except ``.gitignore``s): ignored by a
``.gitignore`` (nested ones too) or ``.git/info/exclude``, vendored or generated directories,
secrets, binary extensions, minified names, lock files, oversized files and symlinks (never
followed: nothing outside the repository is read). Content checks (binary bytes, minified lines)
happen when a file is read (``pipeline``).

A directory left out counts once under its reason; its contents are not walked.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pathspec

from services.code_search import languages

# Never walked, never counted: version control internals.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", ".jj"})
# Third-party code and build output that a team does not ask about.
VENDORED_DIRS = frozenset(
    {
        "node_modules", "bower_components", "jspm_packages", "vendor", "third_party", "third-party", "thirdparty",
        "site-packages", ".venv", "venv", "__pycache__", ".tox", ".nox", ".mypy_cache",
        ".pytest_cache", ".ruff_cache", ".gradle", ".next", ".nuxt", ".svelte-kit", ".terraform", "Pods",
        ".eggs", ".cache", ".parcel-cache", ".yarn", ".pnpm-store",
    }
)
# Credentials and keys: never sent to a chat.
SENSITIVE_PATTERNS = (
    ".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa*", "id_dsa*",
    "id_ecdsa*", "id_ed25519*", ".netrc", ".pypirc", ".npmrc", ".htpasswd", "*.kdbx", "credentials.json",
    "service-account*.json", "*.tfstate", "*.tfstate.*",
)
SENSITIVE_ALLOWED = frozenset({".env.example", ".env.sample", ".env.template", ".env.dist", ".env.defaults"})
MINIFIED_SUFFIXES = (".min.js", ".min.css", ".min.mjs", "-min.js", ".bundle.min.js")
GENERATED_NAMES = frozenset(
    {
        "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "npm-shrinkwrap.json", "poetry.lock", "Pipfile.lock",
        "uv.lock", "pdm.lock", "Cargo.lock", "Gemfile.lock", "composer.lock", "go.sum", "mix.lock",
        "packages.lock.json", "flake.lock", "bun.lockb",
    }
)


@dataclass(frozen=True, slots=True)
class Candidate:
    rel: str  # POSIX path relative to the repository root
    abs: str
    size: int
    mtime_ns: int


@dataclass
class WalkResult:
    files: list[Candidate] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def skip_reason_for_name(name: str, rel: str, size: int, max_bytes: int) -> str | None:
    """Why a file is left out judging by its name and size alone, or None."""
    lowered = name.lower()
    if lowered not in SENSITIVE_ALLOWED and any(fnmatch(lowered, pattern) for pattern in SENSITIVE_PATTERNS):
        return "sensitive"
    if languages.is_binary_name(rel):
        return "binary"
    if lowered.endswith(MINIFIED_SUFFIXES):
        return "minified"
    if name in GENERATED_NAMES:
        return "generated"
    if size > max_bytes:
        return "oversized"
    if size == 0:
        return "empty"
    return None


def _load_ignore(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


# (directory relative to the root, with a trailing slash or "" for the root; its spec)
_Rules = tuple[tuple[str, pathspec.GitIgnoreSpec], ...]


def _ignored(rules: _Rules, rel: str, is_dir: bool) -> bool:
    """Git's rule: the deepest .gitignore with a matching pattern decides; a later pattern beats an earlier."""
    verdict = None
    for base, spec in rules:
        if base and not rel.startswith(base):
            continue
        local = rel[len(base) :] + ("/" if is_dir else "")
        result = spec.check_file(local)
        if result.include is not None:
            verdict = result.include
    return bool(verdict)


def walk(root: Path, max_bytes: int) -> WalkResult:
    result = WalkResult()
    base_rules: list[tuple[str, pathspec.GitIgnoreSpec]] = []
    exclude = _load_ignore(root / ".git" / "info" / "exclude")
    if exclude is not None:
        base_rules.append(("", exclude))
    stack: list[tuple[str, str, _Rules]] = [(str(root), "", tuple(base_rules))]
    while stack:
        directory, rel_dir, rules = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            result.skipped["unreadable"] += 1
            continue
        names = {entry.name for entry in entries}
        if ".gitignore" in names:
            spec = _load_ignore(Path(directory) / ".gitignore")
            if spec is not None:
                rules = (*rules, (rel_dir, spec))
        subdirs = []
        for entry in entries:
            name = entry.name
            rel = rel_dir + name
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                result.skipped["unreadable"] += 1
                continue
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                result.skipped["symlink"] += 1
                continue
            if stat.S_ISDIR(mode):
                if name in VCS_DIRS:
                    continue
                if _ignored(rules, rel, True):
                    result.skipped["gitignored"] += 1
                elif name in VENDORED_DIRS:
                    result.skipped["vendored"] += 1
                else:
                    subdirs.append((entry.path, rel + "/", rules))
                continue
            if not stat.S_ISREG(mode):
                continue
            if _ignored(rules, rel, False):
                result.skipped["gitignored"] += 1
                continue
            reason = skip_reason_for_name(name, rel, info.st_size, max_bytes)
            if reason is not None:
                result.skipped[reason] += 1
                continue
            result.files.append(Candidate(rel, entry.path, info.st_size, info.st_mtime_ns))
        stack.extend(reversed(subdirs))
    return result
