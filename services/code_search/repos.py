"""Adding and re-indexing repositories: local working trees, or git remotes cloned into the index dir.

A remote is cloned with the ``git`` binary (shallow, one branch) into ``<index dir>/checkouts/<name>``
and fetched again on every re-index (a push webhook, the admin API). Only ordinary transports are
allowed (no ``ext::``), git never prompts for credentials, and a URL can never be read as an option.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from libs.common.settings import get_settings
from services.code_search.catalog import redact_url
from services.code_search.index import get_index
from services.code_search.indexer import IndexSummary, index_repository, validate_name

log = logging.getLogger(__name__)

GIT_TIMEOUT = 600.0
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class RepoError(ValueError):
    """The request cannot be served as asked; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Source:
    url: str | None  # a git remote, or None for a local working tree
    path: Path | None


def checkouts_dir() -> Path:
    return get_settings().index_dir / "checkouts"


def is_git_url(source: str) -> bool:
    if re.match(r"^(https?|ssh|git|file)://", source) or _SCP_LIKE.match(source):
        return True
    path = Path(source).expanduser()
    # A bare repository on this machine (HEAD, objects/ and refs/ at its top).
    return path.is_dir() and (path / "HEAD").is_file() and (path / "objects").is_dir() and not (path / ".git").exists()


def name_from_url(url: str) -> str:
    tail = re.split(r"[/:]", url.rstrip("/"))[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "-", tail.removesuffix(".git")) or "repo"


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise RepoError(503, "git is not installed on this server") from exc
    except subprocess.TimeoutExpired as exc:
        raise RepoError(504, f"git {args[0]} took longer than {GIT_TIMEOUT:g}s") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise RepoError(422, f"git {args[0]} failed: {redact_url(detail) if '://' in detail else detail}")
    return done.stdout


def _lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def sync_checkout(name: str, url: str, branch: str | None) -> Path:
    """Clone ``url`` (``branch``, default: the remote's default) into the checkouts dir, or fetch it."""
    if url.startswith("-"):
        raise RepoError(400, "a git URL cannot start with '-'")
    if branch is not None and (not _BRANCH.fullmatch(branch) or branch.startswith("-") or ".." in branch):
        raise RepoError(400, f"invalid branch name {branch!r}")
    target = checkouts_dir() / name
    if (target / ".git").is_dir():
        current = _git("remote", "get-url", "origin", cwd=target).strip()
        if current != url:
            raise RepoError(409, f"repository {name} is already cloned from another remote")
        wanted = branch or _git("rev-parse", "--abbrev-ref", "HEAD", cwd=target).strip()
        _git("fetch", "--depth", "1", "origin", "--", f"+refs/heads/{wanted}:refs/remotes/origin/{wanted}", cwd=target)
        _git("checkout", "-q", "-B", wanted, f"refs/remotes/origin/{wanted}", cwd=target)
        _git("reset", "-q", "--hard", f"refs/remotes/origin/{wanted}", cwd=target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{name}.cloning")
    shutil.rmtree(staging, ignore_errors=True)
    args = ["clone", "-q", "--depth", "1", "--single-branch", "--no-tags"]
    if branch:
        args += ["--branch", branch]
    try:
        _git(*args, "--", url, str(staging))
    except RepoError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def add_repository(source: str, name: str | None = None, branch: str | None = None) -> IndexSummary:
    """Index a local working tree, or clone a git remote and index it. Raises RepoError."""
    source = source.strip()
    if not source:
        raise RepoError(400, "give a local path or a git URL")
    try:
        if is_git_url(source):
            repo_name = validate_name(name or name_from_url(source))
            with _lock(repo_name):
                checkout = sync_checkout(repo_name, source, branch)
                return index_repository(checkout, name=repo_name)
        path = Path(source).expanduser()
        if not path.is_dir():
            raise RepoError(400, f"not a directory on this server, nor a git URL: {source}")
        if branch:
            raise RepoError(400, "a branch applies to git URLs only; check it out in the working tree instead")
        repo_name = validate_name(name or path.resolve().name)
        with _lock(repo_name):
            return index_repository(path, name=repo_name)
    except ValueError as exc:
        if isinstance(exc, RepoError):
            raise
        raise RepoError(400, str(exc)) from exc


def reindex(name: str) -> IndexSummary:
    """Index ``name`` again; a managed checkout is fetched first (the remote's branch, newest commit)."""
    entry = get_index().repositories().get(name)
    if entry is None:
        raise RepoError(404, f"no indexed repository named {name}")
    root = Path(entry.root)
    with _lock(name):
        if root.parent == checkouts_dir().resolve() or root.parent == checkouts_dir():
            url = _git("remote", "get-url", "origin", cwd=root).strip()
            sync_checkout(name, url, entry.branch or None)
        elif not root.is_dir():
            raise RepoError(409, f"the working tree of {name} is gone from this server ({root})")
        return index_repository(root, name=name)


def normalise_remote(url: str) -> str:
    """host/owner/repo, lowercased, for comparing the remotes of a push and of an index."""
    url = url.strip()
    scp = _SCP_LIKE.match(url)
    if scp:
        host = url[url.index("@") + 1 : scp.end() - 1]
        path = url[scp.end() :]
    else:
        parts = urlsplit(url)
        host, path = parts.hostname or "", parts.path
    return f"{host}/{path.strip('/').removesuffix('.git')}".lower()


def repositories_for_push(remotes: list[str], names: list[str]) -> list[str]:
    """Indexed repositories that a push to one of ``remotes`` (or named ``names``) concerns."""
    wanted = {normalise_remote(u) for u in remotes if u}
    found = []
    for entry in get_index().repositories().values():
        if entry.url and normalise_remote(entry.url) in wanted:
            found.append(entry.name)
    if not found:
        found = [n for n in names if n in get_index().repositories()]
    return found
